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

/// Prints a model's answer as it streams: a harmony model's final channel (and tool calls, with their recipient)
/// to `out`, its analysis channel to `err` when asked and dimmed, or nowhere; any other model's text as it comes.
pub struct AnswerPrinter {
    reader: Option<HarmonyReader>,
    show_analysis: bool,
    /// The answer so far: the final channel's text, or all text.
    pub answer: String,
}

impl AnswerPrinter {
    pub fn new(harmony: bool, show_analysis: bool) -> AnswerPrinter {
        AnswerPrinter { reader: harmony.then(HarmonyReader::new), show_analysis, answer: String::new() }
    }

    /// Prints one piece of generated text (write errors, such as a closed pipe, are ignored: generation goes on).
    pub fn push(&mut self, piece: &str, out: &mut impl Write, err: &mut impl Write) {
        let Some(reader) = &mut self.reader else {
            self.answer.push_str(piece);
            let _ = write!(out, "{piece}");
            let _ = out.flush();
            return;
        };
        for part in reader.push(piece) {
            match part.channel.as_str() {
                "analysis" if self.show_analysis => {
                    let _ = write!(err, "\x1b[2m{}\x1b[0m", part.text);
                }
                "analysis" => {}
                "commentary" if !part.recipient.is_empty() => {
                    let _ = write!(out, "[{}] {}", part.recipient, part.text);
                }
                _ => {
                    self.answer.push_str(&part.text);
                    let _ = write!(out, "{}", part.text);
                }
            }
            let _ = out.flush();
        }
    }
}

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
        let mut printer = AnswerPrinter::new(harmony, args.show_analysis);
        let out =
            generate(&loaded.model, tok, &prompt, &opts, &mut |piece| printer.push(piece, &mut stdout, &mut stderr))?;
        let answer = printer.answer;
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

#[cfg(test)]
mod tests {
    use super::AnswerPrinter;

    fn print(harmony: bool, show_analysis: bool, pieces: &[&str]) -> (String, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = AnswerPrinter::new(harmony, show_analysis);
        for piece in pieces {
            p.push(piece, &mut out, &mut err);
        }
        (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), p.answer)
    }

    const HARMONY: [&str; 8] = [
        "<|channel|>analysis<|message|>",
        "User greets.",
        "<|end|>",
        "<|start|>assistant",
        "<|channel|>final",
        "<|message|>Hel",
        "lo!",
        "<|return|>",
    ];

    #[test]
    fn a_harmony_answer_is_its_final_channel() {
        assert_eq!(print(true, false, &HARMONY), ("Hello!".into(), String::new(), "Hello!".into()));
        let (out, err, _) = print(true, true, &HARMONY);
        assert_eq!((out.as_str(), err.as_str()), ("Hello!", "\x1b[2mUser greets.\x1b[0m"));
    }

    #[test]
    fn other_models_print_their_text() {
        assert_eq!(print(false, true, &["Hi", " there"]), ("Hi there".into(), String::new(), "Hi there".into()));
    }
}
