//! The engine thread: owns the model, takes jobs from a bounded queue and generates up to `max_batch` sequences
//! at once, one token of each per round in one batched decode step (each with its own KV cache), sending each
//! job's text back as it is final. A job whose receiver is gone (its client disconnected) is dropped at its next
//! token.

use std::sync::Arc;

use lowbit_model::Model;
use lowbit_runtime::generate::{advance_together, FinishReason, GenerateOptions, Sequence};
use lowbit_runtime::harmony::HarmonyReader;
use lowbit_runtime::tokenizer::Tokenizer;
use tokio::sync::mpsc;

/// One request as the engine runs it.
pub struct Job {
    /// Token ids, BOS and chat template already applied.
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// Pass only a harmony reply's answer (its final channel) back, not its analysis or headers.
    pub harmony: bool,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a job hears back.
#[derive(Debug)]
pub enum Event {
    /// Text now final.
    Text(String),
    /// The end: why, and the token counts.
    Done { finish: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    /// The model or tokenizer failed on this job (the server goes on).
    Failed(String),
}

struct Running {
    seq: Sequence,
    reader: Option<HarmonyReader>,
    events: mpsc::UnboundedSender<Event>,
}

impl Running {
    /// The part of `text` the client sees: all of it, or a harmony reply's answer.
    fn visible(&mut self, text: &str, last: bool) -> String {
        match &mut self.reader {
            Some(reader) => answer_text(reader, text, last),
            None => text.to_string(),
        }
    }

    /// Samples a token and sends its text. Returns whether the job goes on.
    fn sample(&mut self, tokenizer: &Tokenizer) -> bool {
        // A client gone shows here even while its tokens show nothing (a harmony model's analysis).
        if self.events.is_closed() {
            return false;
        }
        let step = match self.seq.sample(tokenizer) {
            Ok(step) => step,
            Err(e) => return self.fail(e.to_string()),
        };
        let text = self.visible(&step.text, step.finish.is_some());
        if !text.is_empty() && self.events.send(Event::Text(text)).is_err() {
            return false;
        }
        if let Some(finish) = step.finish {
            let (prompt_tokens, completion_tokens) = (self.seq.prompt_tokens(), self.seq.tokens().len());
            let _ = self.events.send(Event::Done { finish, prompt_tokens, completion_tokens });
            return false;
        }
        true
    }

    fn fail(&self, why: String) -> bool {
        let _ = self.events.send(Event::Failed(why));
        false
    }
}

/// The answer's share of a piece of a harmony reply: its final channel's text (not the analysis, not tool calls);
/// `last` flushes what the reader held back.
fn answer_text(reader: &mut HarmonyReader, text: &str, last: bool) -> String {
    let mut parts = reader.push(text);
    if last {
        parts.extend(reader.finish());
    }
    parts.into_iter().filter(|p| p.channel != "analysis" && p.channel != "commentary").map(|p| p.text).collect()
}

/// Starts the engine thread; returns the queue's sending end (`try_send` failing with `Full` means: answer 429).
pub fn start(
    model: Model,
    tokenizer: Arc<Tokenizer>,
    max_batch: usize,
    queue: usize,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (send, receive) = mpsc::channel(queue.max(1));
    std::thread::Builder::new()
        .name("lowbit-engine".into())
        .spawn(move || run(&model, &tokenizer, receive, max_batch.max(1)))?;
    Ok(send)
}

fn run(model: &Model, tokenizer: &Tokenizer, mut jobs: mpsc::Receiver<Job>, max_batch: usize) {
    let mut running: Vec<Running> = Vec::new();
    loop {
        while running.len() < max_batch {
            // Idle: wait for work; busy: take only what is already queued.
            let job = match running.is_empty() {
                true => match jobs.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
                false => match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            if job.events.is_closed() {
                continue;
            }
            match Sequence::new(model, tokenizer, &job.prompt, &job.opts) {
                Ok(seq) => {
                    running.push(Running { seq, reader: job.harmony.then(HarmonyReader::new), events: job.events })
                }
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e.to_string()));
                }
            }
        }
        running.retain_mut(|r| r.sample(tokenizer));
        // One decode step for every sequence still going: the weights are read once for the batch.
        let mut seqs: Vec<&mut Sequence> = running.iter_mut().map(|r| &mut r.seq).collect();
        if seqs.is_empty() {
            continue;
        }
        if let Err(e) = advance_together(model, &mut seqs) {
            running.drain(..).for_each(|r| {
                r.fail(e.to_string());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply streamed in pieces that split its markers: the client sees the final channel's text only.
    #[test]
    fn a_harmony_reply_gives_its_final_channel() {
        let reply = "<|channel|>analysis<|message|>The user greets.<|end|><|start|>assistant<|channel|>commentary \
                     to=functions.f<|message|>{}<|call|>";
        let final_reply = "<|channel|>analysis<|message|>Greet back.<|end|><|start|>assistant<|channel|>final<|message|>Hello there!<|return|>";
        let stream = |text: &str| -> String {
            let mut reader = HarmonyReader::new();
            let pieces: Vec<String> =
                text.as_bytes().chunks(5).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            let n = pieces.len();
            pieces.iter().enumerate().map(|(i, p)| answer_text(&mut reader, p, i + 1 == n)).collect()
        };
        assert_eq!(stream(final_reply), "Hello there!");
        assert_eq!(stream(reply), "", "analysis and a tool call are not the answer");
    }
}
