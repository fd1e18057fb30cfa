//! Test data shared by the kernels' integration tests.

use lowbit_kernels::quant::{QuantizedActs, QK};
use lowbit_testdata::Rng;

/// n rows of k activations quantized per block of 32: uniform values scaled by 2^e with e cycling over −3..4 from
/// block to block, and now and then a 30× outlier, so blocks of very different scales (and codes of ±127) occur.
pub fn random_acts(n: usize, k: usize, seed: u64) -> QuantizedActs {
    let mut r = Rng::new(seed);
    let x: Vec<f32> = (0..n * k)
        .map(|i| r.unit() * 2f32.powi((i / QK % 7) as i32 - 3) * if r.below(40) == 0 { 30.0 } else { 1.0 })
        .collect();
    let mut acts = QuantizedActs::new();
    acts.quantize(&x, n, k);
    acts
}
