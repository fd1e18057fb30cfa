//! `lowbit serve MODEL`: the model behind an OpenAI-compatible HTTP API (`lowbit_serve`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use lowbit_serve::ServeOptions;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face directory or lowbit output directory.
    model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port; the address is printed on the first line of stdout either way.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model's name in requests and /v1/models (default: the file or directory name).
    #[arg(long)]
    name: Option<String>,
    /// Sequences generated together.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Requests that may wait for a place; one more is answered 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// The most tokens a request may ask for.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// KV-cache positions per sequence (prompt and answer).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = crate::load::load(&args.model, args.runtime.runtime)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let file = args.model.file_name().map(|f| f.to_string_lossy().into_owned());
        file.map_or_else(|| "model".into(), |f| f.trim_end_matches(".gguf").to_string())
    });
    let opts = ServeOptions {
        model_name: name,
        max_batch: args.max_batch,
        queue: args.queue,
        max_tokens: args.max_tokens,
        ctx: args.ctx,
        max_body: args.max_body,
    };
    anyhow::ensure!(
        opts.max_batch > 0 && opts.queue > 0 && opts.max_tokens > 0,
        "--max-batch, --queue and --max-tokens must be at least 1"
    );
    let listener = std::net::TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let model_name = opts.model_name.clone();
    lowbit_serve::serve(loaded.model, loaded.tokenizer, opts, listener, |addr| {
        println!("http://{addr}");
        let _ = std::io::stdout().flush();
        eprintln!("serving {model_name} on http://{addr} (POST /v1/chat/completions, /v1/completions, /generate)");
    })?;
    Ok(())
}
