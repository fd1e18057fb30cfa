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
    /// Running mean KL-divergence from the reference, when there is one.
    pub mean_kld: Option<f64>,
}

/// How far a model's next-token distributions are from a reference model's on the same tokens
/// (llama.cpp's `--kl-divergence` figures).
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceComparison {
    pub reference_ppl: f64,
    pub ppl_ratio: f64,
    /// KL(reference ‖ model) per scored token, in nats.
    pub mean_kld: f64,
    pub median_kld: f64,
    pub p99_kld: f64,
    pub max_kld: f64,
    /// Fraction of scored tokens where both models rank the same token first.
    pub same_top1: f64,
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
    /// Tokens pushed through the model under test (all of every chunk) per second; the
    /// reference's time is excluded.
    pub tokens_per_second: f64,
    pub reference: Option<ReferenceComparison>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the corpus has {tokens} tokens, fewer than one chunk of {ctx}")]
    CorpusTooShort { tokens: usize, ctx: usize },
    #[error("context {0} is too small to score (needs at least 4 tokens)")]
    ContextTooSmall(usize),
    #[error("the reference has a vocabulary of {reference} tokens, the model {model}: they cannot be compared")]
    VocabMismatch { model: usize, reference: usize },
}

/// Log-probabilities of a row of logits, in f64.
pub(crate) fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// Negative log-likelihood of `target` under `logits`, in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    -log_softmax(logits)[target as usize]
}

/// KL(p ‖ q) from log-probabilities.
pub(crate) fn kld(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p.iter().zip(log_q).map(|(&lp, &lq)| lp.exp() * (lp - lq)).sum::<f64>().max(0.0)
}

fn argmax(x: &[f64]) -> usize {
    x.iter().enumerate().fold(0, |best, (i, &v)| if v > x[best] { i } else { best })
}

/// Sums of per-token negative log-likelihoods.
#[derive(Default)]
struct NllStats {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl NllStats {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.sum_sq += v * v;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    fn ppl_stderr(&self) -> f64 {
        let mean = self.sum / self.count as f64;
        let var = (self.sum_sq / self.count as f64 - mean * mean).max(0.0);
        self.ppl() * (var / (self.count.max(2) - 1) as f64).sqrt()
    }
}

/// Value at quantile `q` of sorted `v` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Perplexity of `model` on `tokens`; with a `reference`, also the KL-divergence and top-1
/// agreement of `model` against it on the same scored tokens.
pub fn perplexity(
    model: &Model,
    reference: Option<&Model>,
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
    let vocab = model.config.vocab_size;
    if let Some(r) = reference.filter(|r| r.config.vocab_size != vocab) {
        return Err(EvalError::VocabMismatch { model: vocab, reference: r.config.vocab_size });
    }
    let chunks = opts.max_chunks.map_or(available, |m| m.min(available));
    let first = ctx / 2;
    let scored_per_chunk = ctx - 1 - first;
    let mut cache = model.new_cache(ctx)?;
    let mut ref_cache = reference.map(|r| r.new_cache(ctx)).transpose()?;
    let (mut stats, mut ref_stats) = (NllStats::default(), NllStats::default());
    let (mut klds, mut same_top1) = (Vec::new(), 0usize);
    let mut running_ppl = Vec::with_capacity(chunks);
    let mut model_seconds = 0.0;
    let start = Instant::now();
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = opts.bos {
            chunk[0] = bos;
        }
        cache.truncate(0);
        let t = Instant::now();
        let logits = model.forward(&chunk, &mut cache, Logits::From(first))?;
        model_seconds += t.elapsed().as_secs_f64();
        let ref_logits = match (reference, ref_cache.as_mut()) {
            (Some(r), Some(rc)) => {
                rc.truncate(0);
                Some(r.forward(&chunk, rc, Logits::From(first))?)
            }
            _ => None,
        };
        // Row r holds the prediction for position first + r + 1.
        for r in 0..scored_per_chunk {
            let target = chunk[first + r + 1] as usize;
            let lp = log_softmax(&logits[r * vocab..(r + 1) * vocab]);
            stats.add(-lp[target]);
            if let Some(rl) = &ref_logits {
                let lp_ref = log_softmax(&rl[r * vocab..(r + 1) * vocab]);
                ref_stats.add(-lp_ref[target]);
                klds.push(kld(&lp_ref, &lp));
                same_top1 += usize::from(argmax(&lp) == argmax(&lp_ref));
            }
        }
        running_ppl.push(stats.ppl());
        let mean_kld = (!klds.is_empty()).then(|| klds.iter().sum::<f64>() / klds.len() as f64);
        on_chunk(&ChunkProgress { done: c + 1, total: chunks, ppl: stats.ppl(), mean_kld });
    }
    let comparison = reference.map(|_| {
        let mean_kld = klds.iter().sum::<f64>() / klds.len() as f64;
        klds.sort_by(f64::total_cmp);
        ReferenceComparison {
            reference_ppl: ref_stats.ppl(),
            ppl_ratio: stats.ppl() / ref_stats.ppl(),
            mean_kld,
            median_kld: quantile(&klds, 0.5),
            p99_kld: quantile(&klds, 0.99),
            max_kld: klds.last().copied().unwrap_or(0.0),
            same_top1: same_top1 as f64 / stats.count as f64,
        }
    });
    Ok(PerplexityReport {
        ppl: stats.ppl(),
        ppl_stderr: stats.ppl_stderr(),
        ctx,
        chunks,
        tokens_scored: stats.count,
        running_ppl,
        seconds: start.elapsed().as_secs_f64(),
        tokens_per_second: (chunks * ctx) as f64 / model_seconds,
        reference: comparison,
    })
}

#[cfg(test)]
mod tests {
    use super::{kld, log_softmax, nll, quantile};

    #[test]
    fn nll_matches_a_hand_computed_log_softmax() {
        // log-softmax of [1, 2, 3] at index 0 = 1 - ln(e + e² + e³) = -2.40760596...
        let v = nll(&[1.0, 2.0, 3.0], 0);
        assert!((v - 2.407_605_964_444_38).abs() < 1e-9, "{v}");
    }

    #[test]
    fn kld_matches_a_hand_computed_value() {
        // p = softmax([0, ln 3]) = [1/4, 3/4], q = [1/2, 1/2]:
        // KL(p‖q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812035941...
        let p = log_softmax(&[0.0, 3f32.ln()]);
        let q = log_softmax(&[1.0, 1.0]);
        assert!((kld(&p, &q) - 0.130_812_035_941).abs() < 1e-6);
        assert_eq!(kld(&p, &p), 0.0);
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((quantile(&v, 0.5), quantile(&v, 0.99), quantile(&v, 1.0)), (50.0, 99.0, 100.0));
    }
}
