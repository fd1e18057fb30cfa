//! The generation loop: prefill the prompt, then sample one token at a time, streaming text as
//! it completes and stopping at end-of-sequence, a stop string, the token budget or the context.

use std::time::Instant;

use lowbit_model::{KvCache, Logits, Model, ModelError};
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
struct StopFilter {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopFilter {
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

/// What one step of a [`Sequence`] produced: the text now final (possibly empty) and, on its last step, why it
/// ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub text: String,
    pub finish: Option<FinishReason>,
}

/// One generation, a token at a time: sampling ([`Sequence::sample`]) and running the model on the sampled token
/// ([`Sequence::advance`]) are separate steps, so a server can interleave many sequences, each with its own KV
/// cache. [`generate`] is the loop of one.
pub struct Sequence {
    max_tokens: usize,
    cache: KvCache,
    sampler: Sampler,
    decoder: StreamDecoder,
    filter: StopFilter,
    history: Vec<u32>,
    generated: Vec<u32>,
    prompt_tokens: usize,
    logits: Vec<f32>,
    start: Instant,
    prefill_seconds: f64,
    first_token_at: Option<Instant>,
    finish: Option<FinishReason>,
}

impl Sequence {
    /// Checks the prompt (token ids, BOS already applied) and the options, and runs the prompt through the model.
    pub fn new(
        model: &Model,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Sequence, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        opts.sampling.validate().map_err(GenerateError::Sampling)?;
        let ctx = opts.ctx.min(model.config.context_length);
        if prompt.len() >= ctx {
            return Err(GenerateError::PromptTooLong { prompt: prompt.len(), ctx });
        }
        // Room for the prompt and the answer, not the whole context: a server holds one cache per sequence.
        let mut cache = model.new_cache(ctx.min(prompt.len().saturating_add(opts.max_tokens).saturating_add(1)))?;
        let start = Instant::now();
        let logits = model.forward(prompt, &mut cache, Logits::Last)?;
        Ok(Sequence {
            max_tokens: opts.max_tokens,
            cache,
            sampler: Sampler::new(opts.sampling.clone()),
            decoder: StreamDecoder::with_context(tokenizer, prompt)?,
            filter: StopFilter { stops: opts.stop.clone(), text: String::new(), emitted: 0 },
            history: prompt.to_vec(),
            generated: Vec::new(),
            prompt_tokens: prompt.len(),
            logits,
            start,
            prefill_seconds: start.elapsed().as_secs_f64(),
            first_token_at: None,
            finish: None,
        })
    }

    /// Samples the next token from the model's last logits and returns the text it makes final; on the step that
    /// ends the sequence, also whatever was held back, and the reason.
    pub fn sample(&mut self, tokenizer: &Tokenizer) -> Result<Step, GenerateError> {
        if let Some(finish) = self.finish {
            return Ok(Step { text: String::new(), finish: Some(finish) });
        }
        let (mut text, finish) = self.next_piece(tokenizer)?;
        if let Some(finish) = finish {
            self.finish = Some(finish);
            if finish != FinishReason::Stop {
                let rest = self.decoder.flush(tokenizer)?.map(|p| self.filter.push(&p).0).unwrap_or_default();
                text.push_str(&rest);
                text.push_str(&self.filter.flush());
            }
        }
        Ok(Step { text, finish })
    }

    fn next_piece(&mut self, tokenizer: &Tokenizer) -> Result<(String, Option<FinishReason>), GenerateError> {
        if self.generated.len() >= self.max_tokens {
            return Ok((String::new(), Some(FinishReason::Length)));
        }
        let next = self.sampler.sample(&self.logits, &self.history);
        if self.first_token_at.is_none() {
            self.first_token_at = Some(Instant::now());
        }
        if tokenizer.eos_ids().contains(&next) {
            return Ok((String::new(), Some(FinishReason::Eos)));
        }
        self.generated.push(next);
        self.history.push(next);
        let mut shown = String::new();
        if let Some(piece) = self.decoder.push(tokenizer, next)? {
            let (text, stopped) = self.filter.push(&piece);
            if stopped {
                return Ok((text, Some(FinishReason::Stop)));
            }
            shown = text;
        }
        if self.generated.len() >= self.max_tokens {
            return Ok((shown, Some(FinishReason::Length)));
        }
        if self.cache.len() + 1 > self.cache.capacity() {
            return Ok((shown, Some(FinishReason::ContextFull)));
        }
        Ok((shown, None))
    }

    /// Runs the model on the token the last [`Sequence::sample`] chose, for the next one's logits.
    pub fn advance(&mut self, model: &Model) -> Result<(), GenerateError> {
        advance_together(model, &mut [self])
    }

    /// The token the last [`Sequence::sample`] chose, which the model has not seen yet.
    fn pending(&self) -> Result<u32, GenerateError> {
        match (self.generated.last(), self.finish) {
            (Some(&last), None) => Ok(last),
            _ => Err(GenerateError::Sampling("advance after the sequence ended or before it sampled".into())),
        }
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.generated
    }

    /// The record of the generation (its figures so far, if it has not ended).
    pub fn into_generation(self) -> Generation {
        let first_token_at = self.first_token_at.unwrap_or(self.start);
        let decode_seconds = first_token_at.elapsed().as_secs_f64();
        let decoded_after_first = self.generated.len().saturating_sub(1);
        Generation {
            tokens: self.generated,
            text: self.filter.text,
            finish: self.finish.unwrap_or(FinishReason::Length),
            prompt_tokens: self.prompt_tokens,
            time_to_first_token: (first_token_at - self.start).as_secs_f64(),
            prefill_tokens_per_second: self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9),
            decode_tokens_per_second: if decoded_after_first > 0 {
                decoded_after_first as f64 / decode_seconds.max(1e-9)
            } else {
                0.0
            },
        }
    }
}

/// [`Sequence::advance`] for several sequences in one decode step ([`Model::decode_batch`]): the weights are
/// read once for all of them.
pub fn advance_together(model: &Model, seqs: &mut [&mut Sequence]) -> Result<(), GenerateError> {
    let tokens = seqs.iter().map(|s| s.pending()).collect::<Result<Vec<u32>, _>>()?;
    let mut caches: Vec<&mut KvCache> = seqs.iter_mut().map(|s| &mut s.cache).collect();
    let logits = model.decode_batch(&tokens, &mut caches)?;
    let vocab = model.config.vocab_size;
    for (s, l) in seqs.iter_mut().zip(logits.chunks_exact(vocab)) {
        s.logits = l.to_vec();
    }
    Ok(())
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
    let mut seq = Sequence::new(model, tokenizer, prompt, opts)?;
    loop {
        let step = seq.sample(tokenizer)?;
        if !step.text.is_empty() {
            on_text(&step.text);
        }
        if step.finish.is_some() {
            return Ok(seq.into_generation());
        }
        seq.advance(model)?;
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter { stops, text: String::new(), emitted: 0 };
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
