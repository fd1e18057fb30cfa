//! The `lowbit` command line: one verb per job, a table for people, `--json` for programs.

mod accept;
mod bench_cmd;
mod calibration;
mod chat_cmd;
mod compare_cmd;
mod eval_cmd;
mod generate_cmd;
mod gguf_calibrated;
mod importance;
mod inspect_cmd;
mod load;
mod native_quantize;
mod quantize_cmd;
mod report_cmd;
mod report_page;
mod serve_cmd;
mod synth_cmd;
mod table;
mod validate_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lowbit", version, about = "Make large language models small and run them fast on CPUs")]
struct Cli {
    /// Worker threads for the kernels (default: all cores).
    #[arg(long, short = 't', global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Structure, parameter counts and bytes per storage format (a bare config.json is enough).
    Inspect(inspect_cmd::Args),
    /// Generate text from a prompt, streamed as it is produced.
    Generate(generate_cmd::Args),
    /// A conversation on stdin, one user message per line (GPT-OSS: the final channel; --show-analysis for its
    /// reasoning).
    Chat(chat_cmd::Args),
    /// Perplexity on a text corpus, by llama.cpp's method (KL-divergence with --reference).
    Eval(eval_cmd::Args),
    /// Write a model in another storage format.
    Quantize(Box<quantize_cmd::Args>),
    /// Prefill and decode tokens/s, time to first token, load time and peak memory.
    Bench(bench_cmd::Args),
    /// A quantized build against its original under the acceptance rule (perplexity, speed against FP16,
    /// size, generation sanity), written to validation_report.json.
    Validate(validate_cmd::Args),
    /// The greedy answers of an original and its quantized build, side by side.
    Compare(compare_cmd::Args),
    /// One HTML page for the validated builds in a directory: size against KLD and perplexity, speed,
    /// part sensitivity, the acceptance table.
    Report(report_cmd::Args),
    /// A synthetic checkpoint with a release's exact tensor names, shapes and dtypes and random weights
    /// (GPT-OSS-20B from its config.json), for measuring memory and speed without the weights.
    Synth(synth_cmd::Args),
    /// An OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions (streaming too), /v1/models,
    /// /health, /generate.
    Serve(serve_cmd::Args),
}

fn main() {
    restore_sigpipe();
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    lowbit_kernels::set_threads(threads);
    let result = match cli.command {
        Command::Inspect(a) => inspect_cmd::run(a),
        Command::Generate(a) => generate_cmd::run(a),
        Command::Chat(a) => chat_cmd::run(a),
        Command::Eval(a) => eval_cmd::run(a),
        Command::Quantize(a) => quantize_cmd::run(*a),
        Command::Bench(a) => bench_cmd::run(a),
        Command::Validate(a) => validate_cmd::run(a),
        Command::Compare(a) => compare_cmd::run(a),
        Command::Report(a) => report_cmd::run(a),
        Command::Synth(a) => synth_cmd::run(a),
        Command::Serve(a) => serve_cmd::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`lowbit inspect … | head`) would panic; a command-line
/// tool should end quietly there, as the shell's own tools do.
#[cfg(unix)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}

/// The error and its causes on one line, leaving out a cause whose text the message before it
/// already includes (many errors print their source as part of their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
