//! ggml's MXFP4 quantizer, `quantize_row_mxfp4_ref`: the shared exponent puts the block's largest magnitude in
//! E2M1's top binade, and each value takes the nearest of the 16 codes. llama.cpp has no weighted variant
//! (`quantize_mxfp4` ignores the importance matrix), so neither has one here.

use std::array::from_fn;

use super::Block;
use crate::dequant::{e8m0_half, BlockMxfp4, MXFP4_VALUES, QK_MXFP4};

/// ggml's `floorf(log2f(amax)) − 2 + 127` for a positive finite `amax`, clamped at 0.
///
/// The floor of log2f is not the binary exponent: for a value within a few ulps below a power of two, log2f rounds
/// up to that power's exponent (0x1.fffffep-3 gives −2, not −3). The log2 is taken in f64 and rounded to f32,
/// which gives glibc's and numpy's log2f floors for every float within 300 ulps of each power of two and on 2·10⁸
/// random ones (checked in C against glibc 2.36), independently of the platform's log2f.
///
/// Below 2^−125 ggml converts a negative float to `uint8_t`, which C leaves undefined (x86-64 wraps it, and
/// llama.cpp's own validation then refuses the 0xFF that results for [2^−126, 2^−125)); lowbit uses 0, the
/// smallest exponent, which represents such a block best.
fn shared_exponent(amax: f32) -> u8 {
    let floor_log2 = ((f64::from(amax)).log2() as f32).floor();
    // The caller has refused values above MXFP4's largest, 1.5·2^127, so the sum is at most 252.
    (floor_log2 - 2.0 + 127.0).max(0.0) as u8
}

/// ggml's `best_index_mxfp4`: the first code of least |code·d − x|.
fn best_code(x: f32, d: f32) -> u8 {
    let mut best = (0u8, (f32::from(MXFP4_VALUES[0]) * d - x).abs());
    for (i, &k) in MXFP4_VALUES.iter().enumerate().skip(1) {
        let err = (f32::from(k) * d - x).abs();
        if err < best.1 {
            best = (i as u8, err);
        }
    }
    best.0
}

/// `block_mxfp4`: element j in the low nibble of byte j, element j + 16 in its high nibble.
pub(super) fn mxfp4(x: &[f32; QK_MXFP4]) -> BlockMxfp4 {
    let amax = x.iter().fold(0.0f32, |amax, v| if amax < v.abs() { v.abs() } else { amax });
    let e = if amax > 0.0 { shared_exponent(amax) } else { 0 };
    let d = e8m0_half(e);
    BlockMxfp4 { e, qs: from_fn(|j| best_code(x[j], d) | best_code(x[j + 16], d) << 4) }
}

impl Block for BlockMxfp4 {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.e);
        out.extend_from_slice(&self.qs);
    }

    /// The scale is a power of two, finite for every exponent byte there is.
    fn scales_finite(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponent_follows_log2f_not_the_binary_exponent() {
        assert_eq!(shared_exponent(1.0), 125);
        assert_eq!(shared_exponent(6.0), 127);
        // Just below 0.25: the exact floor of log2 is −3, log2f rounds to −2.0.
        assert_eq!(shared_exponent(f32::from_bits(0.25f32.to_bits() - 1)), 123);
        // Just below 1.0: log2f stays below 0, as the exact value does.
        assert_eq!(shared_exponent(f32::from_bits(1.0f32.to_bits() - 1)), 124);
        assert_eq!(shared_exponent(1.5 * 2f32.powi(127)), 252);
        assert_eq!(shared_exponent(2f32.powi(-125)), 0);
        assert_eq!(shared_exponent(1e-40), 0);
    }

    #[test]
    fn the_largest_magnitude_lands_in_the_top_binade() {
        let mut x = [0.0f32; QK_MXFP4];
        x[0] = 6.0; // d = 0.5: 6 = 12·d, code 7
        x[1] = -1.25; // between −1 (code 10) and −1.5 (code 11): ties keep the first
        x[17] = 0.2; // nearest 0 (code 0), not 0.5
        let b = mxfp4(&x);
        assert_eq!(b.e, 127);
        assert_eq!((b.qs[0] & 0x0F, b.qs[1] & 0x0F, b.qs[1] >> 4), (7, 10, 0));
    }
}
