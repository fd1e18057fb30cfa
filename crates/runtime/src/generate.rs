//! The generation loop: prefill the prompt, then sample one token at a time, streaming text as
//! it completes and stopping at end-of-sequence, a stop string, the token budget or the context.

use std::time::Instant;

use lowbit_model::{Logits, Model, ModelError};
use serde::Serialize;

use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends where any of these appears; it is not part of the output.
    pub stop: Vec<String>,
    /// KV-cache capacity: prompt plus generated tokens must fit.
    pub ctx: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared.
    Stop,
    /// The context filled up.
    ContextFull,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt processing plus sampling the first token.
    pub time_to_first_token: f64,
    pub prefill_tokens_per_second: f64,
    /// Tokens after the first, per second.
    pub decode_tokens_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt} tokens; the context holds {ctx}")]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error("{0}")]
    Sampling(String),
}

/// Text held back from the stream because it might be the start of a stop string.
struct StopFilter<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
}

impl<'a> StopFilter<'a> {
    /// Adds `piece`; returns the text now safe to show and whether a stop string was hit.
    fn push(&mut self, piece: &str) -> (String, bool) {
        let search_from = self.emitted.saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        let search_from = floor_char_boundary(&self.text, search_from);
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[search_from..].find(s.as_str()).map(|i| search_from + i))
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            let out = self.text[self.emitted.min(at)..].to_string();
            self.emitted = at;
            return (out, true);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let held = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|p| self.text.ends_with(p))
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        let safe = (self.text.len() - held).max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// Whatever was held back, once generation ends without a stop string.
    fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Generates from `prompt` (token ids, BOS already applied), calling `on_text` with each piece
/// of text as soon as it is final.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    opts.sampling.validate().map_err(GenerateError::Sampling)?;
    let ctx = opts.ctx.min(model.config.context_length);
    if prompt.len() >= ctx {
        return Err(GenerateError::PromptTooLong { prompt: prompt.len(), ctx });
    }
    let mut cache = model.new_cache(ctx)?;
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut decoder = StreamDecoder::with_context(tokenizer, prompt)?;
    let mut filter = StopFilter { stops: &opts.stop, text: String::new(), emitted: 0 };
    let mut history = prompt.to_vec();
    let mut generated = Vec::new();

    let start = Instant::now();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    let mut ttft = 0.0;
    let mut first_token_at = start;
    let finish = loop {
        if generated.len() >= opts.max_tokens {
            break FinishReason::Length;
        }
        let next = sampler.sample(&logits, &history);
        if generated.is_empty() {
            first_token_at = Instant::now();
            ttft = (first_token_at - start).as_secs_f64();
        }
        if tokenizer.eos_ids().contains(&next) {
            break FinishReason::Eos;
        }
        generated.push(next);
        history.push(next);
        if let Some(piece) = decoder.push(tokenizer, next)? {
            let (shown, stopped) = filter.push(&piece);
            if !shown.is_empty() {
                on_text(&shown);
            }
            if stopped {
                break FinishReason::Stop;
            }
        }
        if generated.len() >= opts.max_tokens {
            break FinishReason::Length;
        }
        if cache.len() + 1 > cache.capacity() {
            break FinishReason::ContextFull;
        }
        logits = model.forward(&[next], &mut cache, Logits::Last)?;
    };
    if finish != FinishReason::Stop {
        let mut rest = decoder.flush(tokenizer)?.map(|p| filter.push(&p).0).unwrap_or_default();
        rest.push_str(&filter.flush());
        if !rest.is_empty() {
            on_text(&rest);
        }
    }
    let decode_seconds = first_token_at.elapsed().as_secs_f64();
    let decoded_after_first = generated.len().saturating_sub(1);
    Ok(Generation {
        tokens: generated,
        text: filter.text,
        finish,
        prompt_tokens: prompt.len(),
        time_to_first_token: ttft,
        prefill_tokens_per_second: prompt.len() as f64 / prefill_seconds.max(1e-9),
        decode_tokens_per_second: if decoded_after_first > 0 {
            decoded_after_first as f64 / decode_seconds.max(1e-9)
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter { stops: &stops, text: String::new(), emitted: 0 };
        let mut shown = Vec::new();
        for p in pieces {
            let (s, hit) = f.push(p);
            shown.push(s);
            if hit {
                return (shown, true, f.text);
            }
        }
        shown.push(f.flush());
        (shown, false, f.text)
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_shown() {
        let (shown, hit, text) = run(&["\nUser:"], &["Hello", " there\n", "Us", "er: more"]);
        assert!(hit);
        assert_eq!(text, "Hello there");
        assert_eq!(shown.concat(), "Hello there");
        // "\n" was held back while it could start the stop string.
        assert_eq!(shown[1], " there");
    }

    #[test]
    fn held_text_is_released_when_it_turns_out_harmless() {
        let (shown, hit, text) = run(&["STOP"], &["a ST", "ill going"]);
        assert!(!hit);
        assert_eq!(shown[0], "a ");
        assert_eq!(shown.concat(), "a STill going");
        assert_eq!(text, "a STill going");
    }

    #[test]
    fn no_stop_strings_streams_everything() {
        let (shown, hit, _) = run(&[], &["é", "日本"]);
        assert!(!hit);
        assert_eq!(shown, vec!["é", "日本", ""]);
    }
}
