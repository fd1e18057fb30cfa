//! Static activation quantization: one int8 step per projection input, calibrated beforehand, instead of a
//! step per block of 32 computed at run time ("dynamic"). The step is the largest magnitude the input took
//! over the calibration set divided by 127 (per tensor, absmax calibration), so no calibrated value clips;
//! an unseen larger value at run time clamps to ±127 steps. Static scales save the per-block scale search
//! at run time, and cost accuracy wherever one outlier channel widens the step for every other channel,
//! which is what the comparison with dynamic quantization shows.

use std::collections::BTreeMap;

use lowbit_model::{Logits, Model, ModelError, Observer, Proj, Site};

/// Largest |x| per (block, site).
#[derive(Default)]
struct Ranges(BTreeMap<(usize, Site), f32>);

impl Observer for Ranges {
    fn observe(&mut self, block: usize, site: Site, x: &[f32], _: usize) {
        let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = self.0.entry((block, site)).or_insert(0.0);
        *e = e.max(m);
    }
}

/// The static step of every projection's input, by weight tensor name, from running the model over the
/// calibration windows; `progress(i)` after window `i`. Inputs that were all zero get no step (dynamic).
pub fn calibrate(
    model: &Model,
    samples: &[Vec<u32>],
    progress: &dyn Fn(usize),
) -> Result<BTreeMap<String, f32>, ModelError> {
    let mut ranges = Ranges::default();
    let len = samples.iter().map(Vec::len).max().unwrap_or(1);
    let mut cache = model.new_cache(len.max(1))?;
    for (i, s) in samples.iter().enumerate() {
        cache.truncate(0);
        model.forward_observed(s, &mut cache, Logits::From(0), &mut ranges)?;
        progress(i);
    }
    let head = model.head_tensor_name();
    let mut steps = BTreeMap::new();
    for ((block, site), max) in ranges.0 {
        if !(max.is_finite() && max > 0.0) {
            continue;
        }
        let names: Vec<String> = match site {
            Site::Head => vec![head.to_string()],
            _ => site.projections().iter().map(|p: &Proj| p.tensor_name(block)).collect(),
        };
        for name in names {
            steps.insert(name, max / 127.0);
        }
    }
    Ok(steps)
}
