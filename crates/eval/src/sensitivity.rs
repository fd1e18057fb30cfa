//! How much each part of a quantized build (each block, the embedding) costs on its own: the mean
//! KL-divergence of the original's next-token distributions from those of the original with that one part
//! taken from the build. Mixed precision keeps the most sensitive parts wider.

use lowbit_model::{Logits, Model, Part};

use crate::perplexity::{kld, log_softmax, EvalError};

/// Mean KL-divergence over every position of `windows` for each part of [`Model::parts`], in its order.
/// `original` and `build` must share an architecture; both are left as they came (each part is swapped in and
/// back). `progress(done, total)` counts parts.
pub fn part_sensitivity(
    original: &mut Model,
    build: &mut Model,
    windows: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(Part, f64)>, EvalError> {
    let vocab = original.config.vocab_size;
    if build.config.vocab_size != vocab {
        return Err(EvalError::VocabMismatch { model: build.config.vocab_size, reference: vocab });
    }
    let reference: Vec<Vec<f32>> = windows.iter().map(|w| logits(original, w)).collect::<Result<_, _>>()?;
    let parts = original.parts();
    let mut out = Vec::with_capacity(parts.len());
    for (i, &part) in parts.iter().enumerate() {
        progress(i, parts.len());
        original.swap_part(build, part)?;
        let measured = mean_kld(original, windows, &reference, vocab);
        original.swap_part(build, part)?;
        out.push((part, measured?));
    }
    progress(parts.len(), parts.len());
    Ok(out)
}

fn logits(model: &Model, window: &[u32]) -> Result<Vec<f32>, EvalError> {
    let mut cache = model.new_cache(window.len())?;
    Ok(model.forward(window, &mut cache, Logits::From(0))?)
}

fn mean_kld(model: &Model, windows: &[Vec<u32>], reference: &[Vec<f32>], vocab: usize) -> Result<f64, EvalError> {
    let (mut sum, mut count) = (0.0, 0usize);
    for (window, reference) in windows.iter().zip(reference) {
        let got = logits(model, window)?;
        for (p, q) in reference.chunks_exact(vocab).zip(got.chunks_exact(vocab)) {
            sum += kld(&log_softmax(p), &log_softmax(q));
            count += 1;
        }
    }
    Ok(sum / count.max(1) as f64)
}
