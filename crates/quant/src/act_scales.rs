//! Static activation quantization: one int8 step per projection input, calibrated beforehand, instead of a
//! step per block of 32 computed at run time ("dynamic"). Static scales save the per-block scale search
//! at run time, and cost accuracy wherever one outlier channel widens the step for every other channel,
//! which is what the comparison with dynamic quantization shows.
//!
//! The step minimizes the expected squared error of quantizing the values the input took over the
//! calibration set, as TensorRT's and ONNX Runtime's MSE calibrators do: a histogram of |x| per input,
//! then the clip threshold 127·step among its bins for which the rounding error of the values below it
//! plus the clipping error of those above is least. The largest magnitude / 127 (absmax calibration, which
//! never clips) let a handful of huge values set a step that rounds most other values to zero.
//!
//! The first token of each calibration window is left out: LLMs put massive activations on it (it
//! serves as the attention sink whatever the token is), and their squared clipping error would outweigh
//! every other value and bring back the absmax step. At run time those values clamp to ±127 steps.
//!
//! Some inputs have massive activations on other tokens too, and no step serves both: in SmolLM2-135M
//! the inputs of the down projections of blocks 11 and 28 (|x| up to about 1700, most values below 1)
//! get a step that rounds over 99% of their values to zero.
//!
//! A mixture of experts gets one step per stack, as it stores one per tensor: gate/up's from the MLP norm's
//! output (every token's, which is what its experts share out), down's from the hidden rows of all experts
//! together. The observer sees an expert's rows without their positions, so down's keep the window's first
//! token; GPT-OSS, the mixture of experts lowbit runs, has learned attention sinks in place of a first token
//! with massive activations.

use std::collections::{BTreeMap, BTreeSet};

use lowbit_model::{ExpertMatrix, Logits, Model, ModelError, Observer, Proj, Site};

/// Mantissa bits kept in a histogram bin: bins are 2⁻⁵ of an octave wide (3% of the value), fine enough
/// that the error estimated from the bins' midpoints varies smoothly with the step.
const MANTISSA_BITS: u32 = 5;

/// Bins covering every finite positive f32 (the bin of a magnitude is its bit pattern's top bits).
const BINS: usize = (f32::MAX.to_bits() >> (23 - MANTISSA_BITS)) as usize + 1;

/// Counts of |x| in bins of equal width on a log scale, and the largest |x|.
struct Histogram {
    counts: Vec<u64>,
    max: f32,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; BINS], max: 0.0 }
    }

    /// Adds the magnitudes of the finite values of `x`.
    fn add(&mut self, x: &[f32]) {
        for v in x.iter().map(|v| v.abs()).filter(|v| v.is_finite()) {
            self.counts[(v.to_bits() >> (23 - MANTISSA_BITS)) as usize] += 1;
            self.max = self.max.max(v);
        }
    }

    /// The midpoints of the non-empty bins with their counts.
    fn bins(&self) -> Vec<(f64, f64)> {
        let half = 1u32 << (22 - MANTISSA_BITS);
        let bins = self.counts.iter().enumerate().filter(|(_, &c)| c > 0);
        bins.map(|(b, &c)| (f64::from(f32::from_bits(((b as u32) << (23 - MANTISSA_BITS)) | half)), c as f64)).collect()
    }

    /// The step with the least [`squared_error`]: the clip thresholds tried are the midpoints of the
    /// non-empty bins and the largest magnitude (absmax calibration). `None` when every value was zero.
    fn step(&self) -> Option<f32> {
        if self.max == 0.0 {
            return None;
        }
        let bins = self.bins();
        let absmax = f64::from(self.max) / 127.0;
        let candidates = bins.iter().map(|&(v, _)| v / 127.0).filter(|&s| s > 0.0 && s < absmax);
        let best = candidates
            .chain([absmax])
            .map(|s| (squared_error(&bins, s), s))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, s)| s)?;
        Some(best as f32)
    }
}

/// Expected squared error per value of quantizing to codes round(x/step) clamped to ±127, from the bins'
/// midpoints and counts: below half a step a value rounds to zero (error x²); up to the clip threshold its
/// error is uniform over a step (step²/12); beyond it, the distance to the threshold.
fn squared_error(bins: &[(f64, f64)], step: f64) -> f64 {
    let clip = 127.0 * step;
    let (mut sum, mut count) = (0.0, 0.0);
    for &(v, c) in bins {
        let e = if v < step / 2.0 {
            v * v
        } else if v <= clip {
            step * step / 12.0
        } else {
            (v - clip) * (v - clip)
        };
        sum += c * e;
        count += c;
    }
    sum / count.max(1.0)
}

/// A histogram of |x| per (block, site), and the (block, site) pairs already seen in the current window.
#[derive(Default)]
struct Magnitudes {
    histograms: BTreeMap<(usize, Site), Histogram>,
    seen: BTreeSet<(usize, Site)>,
}

impl Observer for Magnitudes {
    fn observe(&mut self, block: usize, site: Site, x: &[f32], n: usize) {
        if n == 0 {
            return;
        }
        // A window longer than the model's batch reaches each site in several calls; only the first
        // call's first row is the window's first token.
        let x = if self.seen.insert((block, site)) { &x[x.len() / n..] } else { x };
        self.histograms.entry((block, site)).or_insert_with(Histogram::new).add(x);
    }

    fn observe_expert(&mut self, block: usize, site: Site, _expert: usize, _experts: usize, x: &[f32], _n: usize) {
        // Gate/up's input is the MLP norm's output, observed whole above.
        if site == Site::MlpOut {
            self.histograms.entry((block, site)).or_insert_with(Histogram::new).add(x);
        }
    }
}

/// The static step of every projection's input, by weight tensor name, from running the model over the
/// calibration windows; `progress(i)` after window `i`. Inputs that were all zero get no step (dynamic).
pub fn calibrate(
    model: &Model,
    samples: &[Vec<u32>],
    progress: &dyn Fn(usize),
) -> Result<BTreeMap<String, f32>, ModelError> {
    let mut magnitudes = Magnitudes::default();
    let len = samples.iter().map(Vec::len).max().unwrap_or(1);
    let mut cache = model.new_cache(len.max(1))?;
    for (i, s) in samples.iter().enumerate() {
        cache.truncate(0);
        magnitudes.seen.clear();
        model.forward_observed(s, &mut cache, Logits::From(0), &mut magnitudes)?;
        progress(i);
    }
    let head = model.head_tensor_name();
    let mut steps = BTreeMap::new();
    for ((block, site), histogram) in magnitudes.histograms {
        let Some(step) = histogram.step() else { continue };
        let experts = model.n_experts(block) > 0;
        let names: Vec<String> = match site {
            Site::Head => vec![head.to_string()],
            Site::MlpIn | Site::MlpOut if experts => {
                ExpertMatrix::ALL.iter().filter(|m| m.site() == site).map(|m| m.tensor_name(block)).collect()
            }
            _ => site.projections().iter().map(|p: &Proj| p.tensor_name(block)).collect(),
        };
        for name in names {
            steps.insert(name, step);
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean squared error of actually quantizing `x` with `step` as the runtime does.
    fn quantization_error(x: &[f32], step: f32) -> f64 {
        let e: f64 = x
            .iter()
            .map(|&v| {
                let q = (v / step).round_ties_even().clamp(-127.0, 127.0) * step;
                f64::from(v - q).powi(2)
            })
            .sum();
        e / x.len() as f64
    }

    #[test]
    fn one_huge_outlier_is_clipped_rather_than_widening_the_step() {
        let mut rng = lowbit_testdata::Rng::new(3);
        let mut x = rng.units(1_000_000);
        x[123] = 100.0;
        let mut h = Histogram::new();
        h.add(&x);
        let step = h.step().expect("non-zero values");
        let absmax = 100.0 / 127.0;
        assert!(step < absmax / 4.0, "step {step} vs absmax/127 {absmax}");
        // Every value but the outlier is within [-1, 1): the step should still cover them.
        assert!(127.0 * step >= 0.9, "clip threshold {} cuts the bulk", 127.0 * step);
        let (chosen, wide) = (quantization_error(&x, step), quantization_error(&x, absmax));
        assert!(chosen < wide / 3.0, "error {chosen} with the chosen step, {wide} with absmax");
    }

    #[test]
    fn without_outliers_the_step_is_near_absmax() {
        // Uniform values: clipping any of them costs more than the finer step saves.
        let mut rng = lowbit_testdata::Rng::new(4);
        let x = rng.units(100_000);
        let mut h = Histogram::new();
        h.add(&x);
        let step = h.step().expect("non-zero values");
        assert!(step > 0.9 / 127.0 && step <= 1.0 / 127.0, "step {step}");
    }

    #[test]
    fn all_zero_inputs_get_no_step() {
        let mut h = Histogram::new();
        h.add(&[0.0; 64]);
        assert_eq!(h.step(), None);
    }

    #[test]
    fn the_first_token_of_each_window_is_left_out() {
        let (n, d) = (4, 32);
        let mut window = vec![0.5f32; n * d];
        window[3] = 1000.0;
        let mut m = Magnitudes::default();
        m.observe(0, Site::AttnIn, &window, n);
        assert_eq!(m.histograms[&(0, Site::AttnIn)].max, 0.5);
        // The same window's next batch starts past its first token.
        m.observe(0, Site::AttnIn, &window, n);
        assert_eq!(m.histograms[&(0, Site::AttnIn)].max, 1000.0);
        // A new window: its first token is left out again.
        m.seen.clear();
        window[3] = 2000.0;
        m.observe(0, Site::AttnIn, &window, n);
        assert_eq!(m.histograms[&(0, Site::AttnIn)].max, 1000.0);
    }
}
