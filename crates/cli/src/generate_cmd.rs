//! `lowbit generate`: one prompt, text streamed to stdout as it is produced.

use std::path::{Path, PathBuf};

use lowbit_runtime::chat_template::{ChatMessage, ChatTemplate};
use lowbit_runtime::generate::{generate, GenerateOptions};
use lowbit_runtime::sampler::SamplingParams;
use lowbit_runtime::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face directory or lowbit output directory.
    model: PathBuf,
    /// The prompt.
    #[arg(long, short = 'p')]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template (a harmony model's answer is then its final
    /// channel, as `lowbit chat` shows it).
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print the token ids and timings as JSON after the text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

/// How tokens are picked and when generation stops (`generate`, `chat`).
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 128)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// Stop where this string appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// KV-cache size in tokens (prompt + generation).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
}

impl SamplingArgs {
    /// Generation options for a model with `context_length` positions.
    pub fn options(&self, context_length: usize) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                penalty_last_n: self.repeat_last_n,
                seed: self.seed,
                ..SamplingParams::default()
            },
            stop: self.stop.clone(),
            ctx: self.ctx.min(context_length),
        }
    }
}

/// The token ids of `prompt`: plain text, or with `chat` (the system message, if any) a user message in the
/// model's chat template.
pub fn encode_prompt(
    tok: &Tokenizer,
    model: &Path,
    prompt: &str,
    chat: Option<Option<&str>>,
) -> anyhow::Result<Vec<u32>> {
    let Some(system) = chat else {
        return Ok(tok.encode(prompt, tok.adds_bos())?);
    };
    let template = ChatTemplate::from_tokenizer(tok)?.ok_or_else(|| {
        anyhow::anyhow!("{} has no chat template; drop --chat to use a plain prompt", model.display())
    })?;
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", prompt));
    let text = template.render(&messages, true, &Default::default())?;
    // A chat template writes BOS itself where the model wants one.
    Ok(tok.encode(&text, false)?)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = crate::load::load(&args.model, args.runtime.runtime)?;
    let tok = &loaded.tokenizer;
    let prompt = encode_prompt(tok, &args.model, &args.prompt, args.chat.then_some(args.system.as_deref()))?;
    let opts = args.sampling.options(loaded.model.config.context_length);
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    if !args.chat && !args.json {
        print!("{}", args.prompt);
    }
    let harmony = args.chat && tok.token_id("<|channel|>").is_some();
    let mut printer = crate::chat_cmd::AnswerPrinter::new(harmony, false);
    let out = generate(&loaded.model, tok, &prompt, &opts, &mut |piece| printer.push(piece, &mut stdout, &mut stderr))?;
    println!();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "prompt_tokens": prompt,
                "generation": out,
                "load_seconds": loaded.load_seconds,
                "threads": lowbit_kernels::threads(),
            }))?
        );
    } else {
        eprintln!(
            "[{} prompt tokens, {} generated, finish: {:?} | TTFT {:.3}s, prefill {:.1} tok/s, decode {:.1} tok/s, {} threads]",
            out.prompt_tokens,
            out.tokens.len(),
            out.finish,
            out.time_to_first_token,
            out.prefill_tokens_per_second,
            out.decode_tokens_per_second,
            lowbit_kernels::threads()
        );
    }
    Ok(())
}
