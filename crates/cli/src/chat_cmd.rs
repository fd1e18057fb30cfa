//! `lowbit chat`: a conversation on stdin, one user message per line, each answer streamed as it is made.
//!
//! GPT-OSS answers in harmony channels (`lowbit_runtime::harmony`): the final channel is the answer; the
//! analysis channel (its reasoning) is shown on stderr only with --show-analysis; a tool call (commentary to a
//! recipient) is shown with its recipient and ends the turn, as `<|call|>` does. Other models' answers are
//! their text.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use lowbit_runtime::chat_template::{ChatMessage, ChatTemplate};
use lowbit_runtime::generate::generate;
use lowbit_runtime::harmony::HarmonyReader;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face directory or lowbit output directory (with a chat template).
    model: PathBuf,
    /// System message.
    #[arg(long)]
    system: Option<String>,
    /// Show a harmony model's analysis channel (its reasoning), on stderr.
    #[arg(long)]
    show_analysis: bool,
    #[command(flatten)]
    sampling: crate::generate_cmd::SamplingArgs,
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = crate::load::load(&args.model, args.runtime.runtime)?;
    let tok = &loaded.tokenizer;
    let template = ChatTemplate::from_tokenizer(tok)?
        .ok_or_else(|| anyhow::anyhow!("{} has no chat template: use `lowbit generate`", args.model.display()))?;
    let harmony = tok.token_id("<|channel|>").is_some();
    let opts = args.sampling.options(loaded.model.config.context_length);
    let mut messages: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let interactive = std::io::stdin().is_terminal();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next().transpose()? else { break };
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", &line));
        let text = template.render(&messages, true, &Default::default())?;
        let prompt = tok.encode(&text, false)?;
        let mut reader = HarmonyReader::new();
        let mut answer = String::new();
        let mut show = |piece: &str| {
            if !harmony {
                answer.push_str(piece);
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
                return;
            }
            for part in reader.push(piece) {
                match part.channel.as_str() {
                    "analysis" if args.show_analysis => {
                        let _ = write!(stderr, "\x1b[2m{}\x1b[0m", part.text);
                    }
                    "analysis" => {}
                    "commentary" if !part.recipient.is_empty() => {
                        let _ = write!(stdout, "[{}] {}", part.recipient, part.text);
                    }
                    _ => {
                        answer.push_str(&part.text);
                        let _ = write!(stdout, "{}", part.text);
                    }
                }
                let _ = stdout.flush();
            }
        };
        let out = generate(&loaded.model, tok, &prompt, &opts, &mut show)?;
        println!();
        if interactive {
            eprintln!(
                "[{} tokens, {:.1} tok/s, finish: {:?}]",
                out.tokens.len(),
                out.decode_tokens_per_second,
                out.finish
            );
        }
        messages.push(ChatMessage::new("assistant", answer.trim()));
    }
    Ok(())
}
