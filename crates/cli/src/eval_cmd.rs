//! `lowbit eval`: perplexity on a corpus.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::perplexity;
use serde::Serialize;

use crate::load::Runtime;
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
    /// Reference model (e.g. the original): adds its PPL, the KL-divergence from it and top-1
    /// agreement with it on the same tokens.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// How the model runs (the reference always runs in f32).
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

#[derive(Serialize)]
struct Output<'a> {
    model: String,
    reference: Option<String>,
    corpus: String,
    corpus_tokens: usize,
    load_seconds: f64,
    threads: usize,
    runtime: Runtime,
    #[serde(flatten)]
    report: &'a lowbit_eval::PerplexityReport,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading the corpus {}", args.corpus.display()))?;
    let loaded = crate::load::load(&args.model, args.runtime.runtime)?;
    let reference = args.reference.as_deref().map(|r| crate::load::load(r, Runtime::F32)).transpose()?;
    let tok = &loaded.tokenizer;
    if let Some(r) = &reference {
        crate::load::ensure_same_tokenizer(tok, &r.tokenizer, "the model and its reference")?;
    }
    let tokens = tok.encode(&text, tok.adds_bos())?;
    let opts = crate::load::chunking(tok, args.ctx, args.chunks);
    let total = opts.max_chunks.map_or(tokens.len() / args.ctx, |m| m.min(tokens.len() / args.ctx));
    let bar = ProgressBar::new(total as u64)
        .with_style(ProgressStyle::with_template("{bar:30} chunk {pos}/{len} {msg}  [{elapsed} < {eta}]")?);
    let report = perplexity(&loaded.model, reference.as_ref().map(|r| &r.model), &tokens, &opts, |p| {
        bar.set_position(p.done as u64);
        match p.mean_kld {
            Some(k) => bar.set_message(format!("PPL {:.4}  KLD {:.5}", p.ppl, k)),
            None => bar.set_message(format!("PPL {:.4}", p.ppl)),
        }
    })?;
    bar.finish_and_clear();

    let out = Output {
        model: args.model.display().to_string(),
        reference: args.reference.as_ref().map(|r| r.display().to_string()),
        corpus: args.corpus.display().to_string(),
        corpus_tokens: tokens.len(),
        load_seconds: loaded.load_seconds,
        threads: lowbit_kernels::threads(),
        runtime: args.runtime.runtime,
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
    if let Some(c) = &report.reference {
        println!();
        let mut t = Table::new(
            &["reference PPL", "PPL ratio", "mean KLD", "median KLD", "p99 KLD", "max KLD", "same top-1"],
            &[true; 7],
        );
        t.row(vec![
            format!("{:.4}", c.reference_ppl),
            format!("{:.4}", c.ppl_ratio),
            format!("{:.5}", c.mean_kld),
            format!("{:.5}", c.median_kld),
            format!("{:.5}", c.p99_kld),
            format!("{:.4}", c.max_kld),
            format!("{:.1}%", 100.0 * c.same_top1),
        ]);
        print!("{}", t.render());
    }
    let running: Vec<String> =
        report.running_ppl.iter().enumerate().map(|(i, p)| format!("[{}]{:.4}", i + 1, p)).collect();
    println!("running PPL: {}", running.join(","));
    Ok(())
}
