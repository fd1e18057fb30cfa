//! Perplexity by llama.cpp's method, so figures compare with `llama-perplexity`: the token
//! stream is cut into chunks of `ctx` tokens, each evaluated from an empty cache; with a
//! model that adds BOS, BOS replaces the first token of each chunk; only the second half of
//! each chunk is scored (every scored token sees at least ctx/2 tokens of context).

use std::time::Instant;

use lowbit_model::{Logits, Model, ModelError};
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    pub ctx: usize,
    /// Evaluate at most this many chunks (all that fit when `None`).
    pub max_chunks: Option<usize>,
    /// Replaces the first token of each chunk, when the tokenizer adds BOS.
    pub bos: Option<u32>,
}

/// Progress after each chunk, for a running display.
#[derive(Clone, Debug)]
pub struct ChunkProgress {
    pub done: usize,
    pub total: usize,
    pub ppl: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PerplexityReport {
    pub ppl: f64,
    /// Standard error of the estimate, propagated from the per-token negative log-likelihoods.
    pub ppl_stderr: f64,
    pub ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Chunk-by-chunk running perplexity, as llama-perplexity prints it.
    pub running_ppl: Vec<f64>,
    pub seconds: f64,
    /// Tokens pushed through the model (all of every chunk) per second.
    pub tokens_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the corpus has {tokens} tokens, fewer than one chunk of {ctx}")]
    CorpusTooShort { tokens: usize, ctx: usize },
    #[error("context {0} is too small to score (needs at least 4 tokens)")]
    ContextTooSmall(usize),
}

/// Negative log-likelihood of `target` under `logits`, in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    opts: &PerplexityOptions,
    mut on_chunk: impl FnMut(&ChunkProgress),
) -> Result<PerplexityReport, EvalError> {
    let ctx = opts.ctx;
    if ctx < 4 {
        return Err(EvalError::ContextTooSmall(ctx));
    }
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(EvalError::CorpusTooShort { tokens: tokens.len(), ctx });
    }
    let chunks = opts.max_chunks.map_or(available, |m| m.min(available));
    let first = ctx / 2;
    let vocab = model.config.vocab_size;
    let mut cache = model.new_cache(ctx)?;
    let (mut sum, mut sum_sq, mut count) = (0f64, 0f64, 0usize);
    let mut running_ppl = Vec::with_capacity(chunks);
    let start = Instant::now();
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = opts.bos {
            chunk[0] = bos;
        }
        cache.truncate(0);
        let logits = model.forward(&chunk, &mut cache, Logits::From(first))?;
        // Row r holds the prediction for position first + r + 1.
        for (r, row) in logits.chunks_exact(vocab).take(ctx - 1 - first).enumerate() {
            let v = nll(row, chunk[first + r + 1]);
            sum += v;
            sum_sq += v * v;
            count += 1;
        }
        let ppl = (sum / count as f64).exp();
        running_ppl.push(ppl);
        on_chunk(&ChunkProgress { done: c + 1, total: chunks, ppl });
    }
    let seconds = start.elapsed().as_secs_f64();
    let mean = sum / count as f64;
    let var = (sum_sq / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    Ok(PerplexityReport {
        ppl,
        ppl_stderr: ppl * (var / (count.max(2) - 1) as f64).sqrt(),
        ctx,
        chunks,
        tokens_scored: count,
        running_ppl,
        seconds,
        tokens_per_second: (chunks * ctx) as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::nll;

    #[test]
    fn nll_matches_a_hand_computed_log_softmax() {
        // log-softmax of [1, 2, 3] at index 0 = 1 - ln(e + e² + e³) = -2.40760596...
        let v = nll(&[1.0, 2.0, 3.0], 0);
        assert!((v - 2.407_605_964_444_38).abs() < 1e-9, "{v}");
    }
}
