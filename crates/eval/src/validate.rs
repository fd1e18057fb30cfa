//! The acceptance rule our users quote for a quantized build, measured against its original: perplexity up by
//! less than 2%, at least 1.5× the decode speed of an FP16 build, about 4× smaller than FP16 at 4 bits (in
//! general `16 / bits` with a margin), and generation that is still text and still answers like the original.
//! Every criterion is reported with its value, its limit and pass/fail (docs/validation.md documents the JSON).

use lowbit_formats::source::ModelSource;
use lowbit_model::{Logits, Model};
use lowbit_runtime::generate::{generate, GenerateError, GenerateOptions};
use lowbit_runtime::sampler::SamplingParams;
use lowbit_runtime::tokenizer::Tokenizer;
use serde::Serialize;

use crate::bench::{bench, BenchOptions, Throughput};
use crate::perplexity::{nll, perplexity, EvalError, PerplexityOptions};
use crate::sanity::{overlap, shared_prefix, TextFigures};

/// The prompts generation is checked on when the caller gives none: plain text to continue, one per line.
pub const DEFAULT_PROMPTS: &str = include_str!("prompts.txt");

/// The limits of the rule.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rule {
    /// Perplexity over the original's must stay below this.
    pub max_ppl_ratio: f64,
    /// Decode tokens/s over the FP16 build's must reach this.
    pub min_speedup: f64,
    /// FP16 bytes over the build's must reach `size_margin · 16 / bits` (3.5 at 4 bits: "about 4×").
    pub size_margin: f64,
    /// Prompts on which the build may degenerate (empty, junk, loop) where the original does not, as a share of
    /// the prompts (at least one prompt is always allowed).
    pub max_extra_degenerate: f64,
    /// The mean token overlap of the build's answers with the original's must reach this.
    pub min_overlap: f64,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule { max_ppl_ratio: 1.02, min_speedup: 1.5, size_margin: 0.875, max_extra_degenerate: 0.1, min_overlap: 0.25 }
    }
}

/// One criterion of the rule: the value measured, the limit, and whether it passes.
#[derive(Clone, Debug, Serialize)]
pub struct Criterion {
    pub name: &'static str,
    pub what: String,
    pub value: f64,
    pub limit: f64,
    /// `"<"`, `"<="` or `">="`: how the value must compare with the limit.
    pub must_be: &'static str,
    pub pass: bool,
}

impl Criterion {
    fn below(name: &'static str, what: String, value: f64, limit: f64) -> Criterion {
        Criterion { name, what, value, limit, must_be: "<", pass: value < limit }
    }

    fn at_most(name: &'static str, what: String, value: f64, limit: f64) -> Criterion {
        Criterion { name, what, value, limit, must_be: "<=", pass: value <= limit }
    }

    fn at_least(name: &'static str, what: String, value: f64, limit: f64) -> Criterion {
        Criterion { name, what, value, limit, must_be: ">=", pass: value >= limit }
    }
}

/// Perplexity, KL-divergence and top-1 agreement on the corpus.
#[derive(Clone, Debug, Serialize)]
pub struct Quality {
    pub ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    pub original_ppl: f64,
    pub ppl: f64,
    pub ppl_ratio: f64,
    pub mean_kld: f64,
    pub p99_kld: f64,
    pub same_top1: f64,
}

/// Decode speed of the build and of the original's FP16 build (llama-bench's tg test).
#[derive(Clone, Debug, Serialize)]
pub struct Speed {
    pub threads: usize,
    pub fp16: Throughput,
    pub quantized: Throughput,
    /// Median over median.
    pub speedup: f64,
}

/// Bytes of the weights (every tensor's stored bytes; metadata and tokenizer left out).
#[derive(Clone, Debug, Serialize)]
pub struct Size {
    /// The original with every matrix in F16 and every vector in F32, as `quantize --type F16` stores it.
    pub fp16_bytes: u64,
    pub bytes: u64,
    /// `fp16_bytes / bytes`.
    pub ratio: f64,
    /// The build's nominal bits per weight: its matrices' storages' nominal bits, weighted by their weights (a
    /// mixed-precision build with some blocks at 8 bits promises less than 4× at 4 bits).
    pub bits: f64,
    /// The storage that holds most of the matrices' weights.
    pub storage: String,
}

/// One prompt's greedy answers.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub prompt: String,
    pub original: TextFigures,
    pub quantized: TextFigures,
    /// Token overlap of the two answers ([`overlap`]) and the tokens they share from the start.
    pub overlap: f64,
    pub shared_prefix: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub max_tokens: usize,
    pub prompts: usize,
    /// Prompts on which each answer degenerates.
    pub degenerate_original: usize,
    pub degenerate: usize,
    pub mean_overlap: f64,
    pub mean_shared_prefix: f64,
    pub samples: Vec<Sample>,
}

/// Everything measured, the criteria and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct ValidationReport {
    pub rule: Rule,
    pub quality: Quality,
    pub speed: Speed,
    pub size: Size,
    pub generation: Generation,
    pub criteria: Vec<Criterion>,
    pub pass: bool,
}

impl ValidationReport {
    /// The names of the criteria that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.criteria.iter().filter(|c| !c.pass).map(|c| c.name).collect()
    }
}

/// The models compared: the original (run as the reference, in f32), the build, and the original's FP16 build
/// (for speed), with the tokenizer they share.
pub struct Models<'a> {
    pub original: &'a Model,
    pub quantized: &'a Model,
    pub fp16: &'a Model,
    pub tokenizer: &'a Tokenizer,
}

pub struct ValidateOptions {
    pub rule: Rule,
    pub perplexity: PerplexityOptions,
    /// Decode steps and repetitions of the speed test.
    pub speed: BenchOptions,
    /// Tokens generated per prompt.
    pub max_tokens: usize,
}

/// Where the validation is, for a progress display.
pub enum Stage<'a> {
    Perplexity { done: usize, total: usize },
    Speed { model: &'a str, run: usize, of: usize },
    Generation { done: usize, total: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Model(#[from] lowbit_model::ModelError),
    #[error("prompt {index}: {source}")]
    Generate { index: usize, source: GenerateError },
    #[error("no prompts to generate from")]
    NoPrompts,
}

/// Measures the build against the original on `corpus` (token ids) and `prompts` and applies the rule; `size`
/// comes from [`size`].
pub fn validate(
    models: &Models,
    corpus: &[u32],
    prompts: &[String],
    size: Size,
    opts: &ValidateOptions,
    progress: &mut dyn FnMut(Stage),
) -> Result<ValidationReport, ValidateError> {
    if prompts.is_empty() {
        return Err(ValidateError::NoPrompts);
    }
    let ppl = perplexity(models.quantized, Some(models.original), corpus, &opts.perplexity, |p| {
        progress(Stage::Perplexity { done: p.done, total: p.total })
    })?;
    let reference = ppl.reference.as_ref().expect("perplexity with a reference compares");
    let quality = Quality {
        ctx: ppl.ctx,
        chunks: ppl.chunks,
        tokens_scored: ppl.tokens_scored,
        original_ppl: reference.reference_ppl,
        ppl: ppl.ppl,
        ppl_ratio: reference.ppl_ratio,
        mean_kld: reference.mean_kld,
        p99_kld: reference.p99_kld,
        same_top1: reference.same_top1,
    };

    let speed_opts = BenchOptions { prompt: 0, ..opts.speed.clone() };
    let mut tg = |model: &Model, name: &str| -> Result<Throughput, ValidateError> {
        let report = bench(model, &speed_opts, &mut |_, run, of| progress(Stage::Speed { model: name, run, of }))?;
        Ok(report.tg.expect("a decode test was asked for"))
    };
    let (fp16, quantized) = (tg(models.fp16, "FP16")?, tg(models.quantized, "quantized")?);
    let speed = Speed { threads: lowbit_kernels::threads(), speedup: quantized.median / fp16.median, fp16, quantized };

    let generation = generations(models, prompts, opts.max_tokens, progress)?;
    let criteria = criteria(&opts.rule, &quality, &speed, &size, &generation);
    let pass = criteria.iter().all(|c| c.pass);
    Ok(ValidationReport { rule: opts.rule, quality, speed, size, generation, criteria, pass })
}

/// Greedy answers of both models to every prompt, plain text encoded as the tokenizer wants it.
fn generations(
    models: &Models,
    prompts: &[String],
    max_tokens: usize,
    progress: &mut dyn FnMut(Stage),
) -> Result<Generation, ValidateError> {
    let tok = models.tokenizer;
    let mut encoded = Vec::with_capacity(prompts.len());
    for (index, prompt) in prompts.iter().enumerate() {
        let ids =
            tok.encode(prompt, tok.adds_bos()).map_err(|e| ValidateError::Generate { index, source: e.into() })?;
        encoded.push((prompt.clone(), ids));
    }
    answers(models.original, models.quantized, tok, &encoded, max_tokens, &mut |done, total| {
        progress(Stage::Generation { done, total })
    })
}

/// Greedy answers of `original` and `quantized` to each prompt, given as its text (as shown) and its token ids,
/// with their figures. `progress(done, total)` counts prompts.
pub fn answers(
    original: &Model,
    quantized: &Model,
    tok: &Tokenizer,
    prompts: &[(String, Vec<u32>)],
    max_tokens: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Generation, ValidateError> {
    if prompts.is_empty() {
        return Err(ValidateError::NoPrompts);
    }
    let mut samples = Vec::with_capacity(prompts.len());
    for (index, (prompt, ids)) in prompts.iter().enumerate() {
        progress(index, prompts.len());
        let fail = |source| ValidateError::Generate { index, source };
        let opts = GenerateOptions {
            max_tokens,
            sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
            stop: Vec::new(),
            ctx: ids.len() + max_tokens,
        };
        let answer = |model: &Model| generate(model, tok, ids, &opts, &mut |_| {}).map_err(fail);
        let (a, b) = (answer(original)?, answer(quantized)?);
        let figures = |g: &lowbit_runtime::generate::Generation| -> Result<TextFigures, ValidateError> {
            Ok(TextFigures::of(&g.tokens, &g.text, continuation_ppl(original, ids, &g.tokens)?))
        };
        samples.push(Sample {
            prompt: prompt.clone(),
            overlap: overlap(&a.tokens, &b.tokens),
            shared_prefix: shared_prefix(&a.tokens, &b.tokens),
            original: figures(&a)?,
            quantized: figures(&b)?,
        });
    }
    progress(prompts.len(), prompts.len());
    let n = samples.len() as f64;
    Ok(Generation {
        max_tokens,
        prompts: samples.len(),
        degenerate_original: samples.iter().filter(|s| s.original.degenerate.is_some()).count(),
        degenerate: samples.iter().filter(|s| s.quantized.degenerate.is_some()).count(),
        mean_overlap: samples.iter().map(|s| s.overlap).sum::<f64>() / n,
        mean_shared_prefix: samples.iter().map(|s| s.shared_prefix as f64).sum::<f64>() / n,
        samples,
    })
}

/// The perplexity of `answer` under `model` after `prompt` (1 for an empty answer).
fn continuation_ppl(model: &Model, prompt: &[u32], answer: &[u32]) -> Result<f64, ValidateError> {
    if answer.is_empty() {
        return Ok(1.0);
    }
    let tokens: Vec<u32> = prompt.iter().chain(answer).copied().collect();
    let mut cache = model.new_cache(tokens.len())?;
    // Row r predicts token prompt.len() + r.
    let logits = model.forward(&tokens[..tokens.len() - 1], &mut cache, Logits::From(prompt.len() - 1))?;
    let vocab = model.config.vocab_size;
    let total: f64 = answer.iter().enumerate().map(|(r, &t)| nll(&logits[r * vocab..(r + 1) * vocab], t)).sum();
    Ok((total / answer.len() as f64).exp())
}

/// The rule applied to the figures.
fn criteria(rule: &Rule, quality: &Quality, speed: &Speed, size: &Size, generation: &Generation) -> Vec<Criterion> {
    let size_limit = rule.size_margin * 16.0 / size.bits;
    let extra = generation.degenerate as f64 - generation.degenerate_original as f64;
    let allowed = (rule.max_extra_degenerate * generation.prompts as f64).ceil().max(1.0);
    vec![
        Criterion::below(
            "perplexity",
            format!("perplexity up by less than {:.0}% on the corpus", (rule.max_ppl_ratio - 1.0) * 100.0),
            quality.ppl_ratio,
            rule.max_ppl_ratio,
        ),
        Criterion::at_least(
            "speed",
            format!("decode at least {}x as fast as FP16", rule.min_speedup),
            speed.speedup,
            rule.min_speedup,
        ),
        Criterion::at_least(
            "size",
            format!("at least {size_limit:.2}x smaller than FP16 for {:.2}-bit weights", size.bits),
            size.ratio,
            size_limit,
        ),
        Criterion::at_most(
            "degenerate_generations",
            format!("at most {allowed} more prompts answered empty, with junk or in a loop than by the original"),
            extra,
            allowed,
        ),
        Criterion::at_least(
            "answers_like_original",
            "mean token overlap of the greedy answers with the original's".to_string(),
            generation.mean_overlap,
            rule.min_overlap,
        ),
    ]
}

/// The build's weight bytes against the original's FP16 build's, and its nominal bits.
pub fn size(original: &ModelSource, quantized: &ModelSource) -> Result<Size, lowbit_formats::FormatError> {
    let mut fp16_bytes = 0u64;
    for name in original.tensor_names() {
        let t = original.tensor(name)?;
        fp16_bytes += (t.n_elements() * if t.shape.len() >= 2 { 2 } else { 4 }) as u64;
    }
    let (mut bytes, mut by_storage) = (0u64, std::collections::BTreeMap::<String, usize>::new());
    for name in quantized.tensor_names() {
        bytes += quantized.stored_bytes(name)? as u64;
        let t = quantized.tensor(name)?;
        if t.shape.len() >= 2 {
            *by_storage.entry(quantized.storage_name(name)?).or_default() += t.n_elements();
        }
    }
    let weights: usize = by_storage.values().sum();
    let bits = match weights {
        0 => 16.0,
        _ => by_storage.iter().map(|(s, &n)| nominal_bits(s) * n as f64).sum::<f64>() / weights as f64,
    };
    let storage = by_storage.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s).unwrap_or_default();
    Ok(Size { fp16_bytes, bytes, ratio: fp16_bytes as f64 / bytes.max(1) as f64, bits, storage })
}

/// A storage format's nominal bits per weight: the first number in its name (`Q4_K` 4, `int3-g128` 3, `nf4` 4,
/// `F16` 16, `MXFP4` 4), 1.58 for the ternary types; 16 when the name has none.
pub fn nominal_bits(storage: &str) -> f64 {
    if storage.starts_with("TQ") {
        return 1.58;
    }
    let digits: String =
        storage.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(16.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_bits_of_every_kind_of_name() {
        for (name, bits) in [
            ("Q4_K", 4.0),
            ("Q8_0", 8.0),
            ("int3-g128-sym", 3.0),
            ("nf4", 4.0),
            ("F16", 16.0),
            ("BF16", 16.0),
            ("F32", 32.0),
            ("MXFP4", 4.0),
            ("TQ1_0", 1.58),
            ("", 16.0),
        ] {
            assert_eq!(nominal_bits(name), bits, "{name}");
        }
    }

    fn figures(ppl_ratio: f64, speedup: f64, ratio: f64, degenerate: (usize, usize), mean_overlap: f64) -> Vec<bool> {
        let quality = Quality {
            ctx: 512,
            chunks: 1,
            tokens_scored: 255,
            original_ppl: 10.0,
            ppl: 10.0 * ppl_ratio,
            ppl_ratio,
            mean_kld: 0.01,
            p99_kld: 0.1,
            same_top1: 0.9,
        };
        let t = Throughput { tokens: 8, runs: vec![1.0], median: 1.0, mean: 1.0, stddev: 0.0 };
        let speed = Speed { threads: 2, fp16: t.clone(), quantized: t, speedup };
        let size = Size { fp16_bytes: 400, bytes: 100, ratio, bits: 4.0, storage: "Q4_K".into() };
        let generation = Generation {
            max_tokens: 8,
            prompts: 20,
            degenerate_original: degenerate.0,
            degenerate: degenerate.1,
            mean_overlap,
            mean_shared_prefix: 1.0,
            samples: Vec::new(),
        };
        criteria(&Rule::default(), &quality, &speed, &size, &generation).iter().map(|c| c.pass).collect()
    }

    #[test]
    fn each_criterion_fails_on_its_own_figure() {
        assert_eq!(figures(1.019, 1.5, 3.5, (1, 3), 0.25), [true; 5]);
        assert_eq!(figures(1.02, 1.5, 3.5, (1, 3), 0.25), [false, true, true, true, true]);
        assert_eq!(figures(1.0, 1.49, 3.5, (1, 3), 0.25), [true, false, true, true, true]);
        assert_eq!(figures(1.0, 1.5, 3.49, (1, 3), 0.25), [true, true, false, true, true]);
        // 20 prompts allow 2 more degenerate answers than the original's.
        assert_eq!(figures(1.0, 1.5, 3.5, (1, 4), 0.25), [true, true, true, false, true]);
        assert_eq!(figures(1.0, 1.5, 3.5, (0, 0), 0.24), [true, true, true, true, false]);
    }
}
