//! `lowbit eval`: perplexity on a corpus.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::{perplexity, PerplexityOptions};
use serde::Serialize;

use crate::table::Table;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face directory or lowbit output directory.
    model: PathBuf,
    /// Text file to score (e.g. WikiText-2's wiki.test.raw).
    #[arg(long)]
    corpus: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Score only the first N chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    model: String,
    corpus: String,
    corpus_tokens: usize,
    load_seconds: f64,
    threads: usize,
    #[serde(flatten)]
    report: &'a lowbit_eval::PerplexityReport,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading the corpus {}", args.corpus.display()))?;
    let loaded = crate::load::load(&args.model)?;
    let tok = &loaded.tokenizer;
    let tokens = tok.encode(&text, tok.adds_bos())?;
    let opts = PerplexityOptions {
        ctx: args.ctx,
        max_chunks: args.chunks,
        bos: if tok.adds_bos() { tok.bos_id() } else { None },
    };
    let total = opts.max_chunks.map_or(tokens.len() / args.ctx, |m| m.min(tokens.len() / args.ctx));
    let bar = ProgressBar::new(total as u64)
        .with_style(ProgressStyle::with_template("{bar:30} chunk {pos}/{len} {msg}  [{elapsed} < {eta}]")?);
    let report = perplexity(&loaded.model, &tokens, &opts, |p| {
        bar.set_position(p.done as u64);
        bar.set_message(format!("PPL {:.4}", p.ppl));
    })?;
    bar.finish_and_clear();

    let out = Output {
        model: args.model.display().to_string(),
        corpus: args.corpus.display().to_string(),
        corpus_tokens: tokens.len(),
        load_seconds: loaded.load_seconds,
        threads: lowbit_kernels::threads(),
        report: &report,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut t = Table::new(
        &["model", "ctx", "chunks", "scored", "PPL", "± stderr", "tokens/s", "threads"],
        &[false, true, true, true, true, true, true, true],
    );
    t.row(vec![
        out.model.clone(),
        report.ctx.to_string(),
        report.chunks.to_string(),
        report.tokens_scored.to_string(),
        format!("{:.4}", report.ppl),
        format!("{:.4}", report.ppl_stderr),
        format!("{:.1}", report.tokens_per_second),
        out.threads.to_string(),
    ]);
    print!("{}", t.render());
    let running: Vec<String> =
        report.running_ppl.iter().enumerate().map(|(i, p)| format!("[{}]{:.4}", i + 1, p)).collect();
    println!("running PPL: {}", running.join(","));
    Ok(())
}
