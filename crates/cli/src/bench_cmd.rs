//! `lowbit bench`: prefill and decode tokens/s (llama-bench's pp/tg tests), time to first token,
//! load time and peak resident memory of one model.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::{bench, BenchOptions, BenchReport};
use serde::Serialize;

use crate::load::Runtime;
use crate::table::{thousands, Table};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face directory or lowbit output directory.
    model: PathBuf,
    /// Prompt tokens of the prefill test (0 skips it).
    #[arg(long, short = 'p', default_value_t = 512)]
    prompt: usize,
    /// Decode steps of the generation test (0 skips it).
    #[arg(long, short = 'n', default_value_t = 128)]
    gen: usize,
    /// Timed repetitions of each test, after one warm-up run.
    #[arg(long, short = 'r', default_value_t = 3)]
    repetitions: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

#[derive(Serialize)]
struct Output {
    model: String,
    file_bytes: u64,
    runtime: Runtime,
    threads: usize,
    weight_bytes: usize,
    /// Weights one decode step reads (the selected experts' share of a mixture of experts).
    decode_bytes_per_token: usize,
    /// Measured memory read bandwidth (all threads), bytes/s, when the decode test ran.
    read_bandwidth: Option<f64>,
    /// read_bandwidth / decode_bytes_per_token: the decode tokens/s that reading the weights allows.
    decode_bound: Option<f64>,
    load_seconds: f64,
    #[serde(flatten)]
    report: BenchReport,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = crate::load::load(&args.model, args.runtime.runtime)?;
    let opts = BenchOptions { prompt: args.prompt, gen: args.gen, repetitions: args.repetitions, ..Default::default() };
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = bench(&loaded.model, &opts, &mut |test, run, of| {
        bar.set_message(if run == 0 { format!("{test} warm-up") } else { format!("{test} run {run}/{of}") })
    })?;
    bar.set_message("memory bandwidth");
    let read_bandwidth = (args.gen > 0).then(lowbit_eval::bench::memory_read_bandwidth);
    bar.finish_and_clear();
    let decode_bytes_per_token = loaded.model.decode_bytes_per_token();
    let out = Output {
        decode_bytes_per_token,
        read_bandwidth,
        decode_bound: read_bandwidth.map(|b| b / decode_bytes_per_token.max(1) as f64),
        model: args.model.display().to_string(),
        file_bytes: crate::load::bytes_on_disk(&args.model),
        runtime: args.runtime.runtime,
        threads: lowbit_kernels::threads(),
        weight_bytes: loaded.model.weight_bytes(),
        load_seconds: loaded.load_seconds,
        report,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut t = Table::new(&["test", "tokens/s", "± sd", "runs"], &[false, true, true, true]);
    for (test, tp) in [("pp", &out.report.pp), ("tg", &out.report.tg)] {
        if let Some(tp) = tp {
            let row = [format!("{test}{}", tp.tokens), format!("{:.1}", tp.median), format!("{:.1}", tp.stddev)];
            t.row([row.to_vec(), vec![tp.runs.len().to_string()]].concat());
        }
    }
    println!("{} ({:?} runtime, {} threads)", out.model, out.runtime, out.threads);
    print!("{}", t.render());
    let mut t = Table::new(&["file bytes", "weights in memory", "load s", "first token ms", "peak RSS"], &[true; 5]);
    t.row(vec![
        thousands(out.file_bytes),
        thousands(out.weight_bytes as u64),
        format!("{:.2}", out.load_seconds),
        out.report.ttft_seconds.map_or("-".into(), |s| format!("{:.1}", s * 1e3)),
        out.report.peak_rss_bytes.map_or("-".into(), |b| format!("{} MB", thousands(b >> 20))),
    ]);
    print!("{}", t.render());
    if let (Some(bw), Some(bound), Some(tg)) = (out.read_bandwidth, out.decode_bound, &out.report.tg) {
        println!(
            "decode bound: {:.1} GB/s read ÷ {} MB per token = {:.2} tokens/s; tg reaches {:.0}% of it",
            bw / 1e9,
            thousands((out.decode_bytes_per_token >> 20) as u64),
            bound,
            100.0 * tg.median / bound
        );
    }
    Ok(())
}
