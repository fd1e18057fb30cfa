//! The ternary formats: ggml's `quantize_row_tq1_0_ref` and `quantize_row_tq2_0_ref`. Both scale a 256-element block
//! by its largest magnitude and round each value to −1, 0 or +1 of it; llama.cpp has no weighted variant (its
//! `quantize_tq*_0` ignore the importance matrix), so neither has one here.
//!
//! The largest magnitude leaves most of a block at 0. [`exact_scale`] is the best scale instead (the {−α, 0, α}
//! fit of least squared error, weighted or not): the blocks calibrated methods round onto start from it
//! (`super::grid`), and lowbit's native ternary builds use it per group.

use std::array::from_fn;

use half::f16;

use super::{inverse_or_zero, Block, Weighted};
use crate::dequant::{BlockTQ1_0, BlockTQ2_0, QK_K};

/// The block's largest magnitude and its inverse, as ggml computes them (`MAX(amax, fabsf(v))`, `d ? 1/d : 0`).
fn scale(x: &[f32; QK_K]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |amax, v| if amax > v.abs() { amax } else { v.abs() });
    (amax, inverse_or_zero(amax))
}

/// ggml's trit `lroundf(v·id) + 1` ∈ {0, 1, 2}, as x86-64 computes it. `lroundf` rounds half away from zero; for
/// the infinities and NaNs that appear when 1/amax overflows (a block of subnormals) glibc returns `LONG_MIN`, and
/// `LONG_MIN + 1` narrowed to `int` is 1 — the zero trit, which this returns too.
fn trit(v: f32, id: f32) -> u8 {
    let scaled = v * id;
    if scaled.is_finite() {
        // |scaled| ≤ 1 up to rounding, so the sum is 0, 1 or 2.
        (scaled.round() as i32 + 1) as u8
    } else {
        1
    }
}

/// Base-3 digits, most significant first, as the byte ⌈n·256/243⌉ that `tq1_trit` decodes (243 = 3⁵; `shift` trits
/// of padding make four-trit bytes decode like five-trit ones).
fn pack_trits(trits: impl Iterator<Item = u8>, shift: u32) -> u8 {
    let n = trits.fold(0u16, |n, t| n * 3 + u16::from(t)) * 3u16.pow(shift);
    ((n * 256).div_ceil(243)) as u8
}

/// The scale α of the best {−α, 0, α} fit of `x` under weights `c` (all 1 when `None`); 0 for an all-zero input.
///
/// For fixed codes the best α is Σ_{t≠0} c|x| / Σ_{t≠0} c; for fixed α the best codes round to nearest (nonzero
/// iff |x| > α/2). So an optimum keeps the k largest |x| nonzero for some k, and one scan over |x| sorted
/// descending with running sums S_k = Σ c|x|, C_k = Σ c finds the k maximising S_k²/C_k (the error is
/// Σ c x² − S_k²/C_k). TWN's threshold 0.7·mean|x| approximates it.
pub fn exact_scale(x: &[f32], c: Option<&[f32]>) -> f32 {
    let mut order: Vec<(f32, f32)> = x.iter().enumerate().map(|(i, &v)| (v.abs(), c.map_or(1.0, |c| c[i]))).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut s, mut cs) = (0f64, 0f64);
    let (mut best, mut alpha) = (0f64, 0f64);
    for &(a, w) in &order {
        s += f64::from(w) * f64::from(a);
        cs += f64::from(w);
        if cs > 0.0 && s * s / cs > best {
            (best, alpha) = (s * s / cs, s / cs);
        }
    }
    alpha as f32
}

/// The block's trits under its exact scale (weighted by `c`), and that scale as stored.
fn exact_trits(x: &[f32; QK_K], c: Option<&[f32; QK_K]>) -> ([u8; QK_K], f16) {
    let d = f16::from_f32(exact_scale(x, c.map(|c| &c[..])));
    let id = inverse_or_zero(d.to_f32());
    (from_fn(|e| trit(x[e], id)), d)
}

/// A TQ1_0 block under its exact scale (see [`exact_scale`]).
pub(super) fn tq1_0_exact(x: &[f32; QK_K]) -> BlockTQ1_0 {
    let (t, d) = exact_trits(x, None);
    tq1_0_of(&t, d)
}

/// [`tq1_0_exact`] weighted by the columns' importance.
pub(super) fn tq1_0_exact_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockTQ1_0 {
    let (t, d) = exact_trits(x, Some(w.importance));
    tq1_0_of(&t, d)
}

/// A TQ2_0 block under its exact scale.
pub(super) fn tq2_0_exact(x: &[f32; QK_K]) -> BlockTQ2_0 {
    let (t, d) = exact_trits(x, None);
    tq2_0_of(&t, d)
}

/// [`tq2_0_exact`] weighted by the columns' importance.
pub(super) fn tq2_0_exact_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockTQ2_0 {
    let (t, d) = exact_trits(x, Some(w.importance));
    tq2_0_of(&t, d)
}

/// `block_tq1_0`: bytes 0–31 take elements m + 32n (n < 5), bytes 32–47 elements 160 + m + 16n, the four `qh` bytes
/// elements 240 + j + 4n (n < 4).
pub(super) fn tq1_0(x: &[f32; QK_K]) -> BlockTQ1_0 {
    let (d, id) = scale(x);
    tq1_0_of(&from_fn(|e| trit(x[e], id)), f16::from_f32(d))
}

/// The TQ1_0 block of trits `t` (0, 1, 2 for −1, 0, +1) and scale `d`.
pub(super) fn tq1_0_of(trits: &[u8; QK_K], d: f16) -> BlockTQ1_0 {
    let t = |e: usize| trits[e];
    let qs = from_fn(|b| {
        if b < 32 {
            pack_trits((0..5).map(|n| t(b + 32 * n)), 0)
        } else {
            pack_trits((0..5).map(|n| t(160 + (b - 32) + 16 * n)), 0)
        }
    });
    let qh = from_fn(|j| pack_trits((0..4).map(|n| t(240 + j + 4 * n)), 1));
    BlockTQ1_0 { qs, qh, d }
}

/// `block_tq2_0`: element 128h + 32n + m is bits 2n..2n+2 of byte 32h + m.
pub(super) fn tq2_0(x: &[f32; QK_K]) -> BlockTQ2_0 {
    let (d, id) = scale(x);
    tq2_0_of(&from_fn(|e| trit(x[e], id)), f16::from_f32(d))
}

/// The TQ2_0 block of trits `t` and scale `d`.
pub(super) fn tq2_0_of(trits: &[u8; QK_K], d: f16) -> BlockTQ2_0 {
    let qs = from_fn(|b| {
        let (half, m) = (b / 32, b % 32);
        (0..4).fold(0u8, |q, n| q | trits[128 * half + 32 * n + m] << (2 * n))
    });
    BlockTQ2_0 { qs, d }
}

impl Block for BlockTQ1_0 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.qs);
        out.extend_from_slice(&self.qh);
        out.extend_from_slice(&self.d.to_le_bytes());
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

impl Block for BlockTQ2_0 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.qs);
        out.extend_from_slice(&self.d.to_le_bytes());
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::tq1_trit;

    #[test]
    fn every_packed_tq1_byte_decodes_to_its_trits() {
        for n in 0..243u16 {
            let trits: Vec<u8> = (0..5).rev().map(|k| (n / 3u16.pow(k) % 3) as u8).collect();
            let byte = pack_trits(trits.iter().copied(), 0);
            let decoded: Vec<u8> = (0..5).map(|k| (tq1_trit(byte, k) + 1) as u8).collect();
            assert_eq!(decoded, trits, "{n}");
        }
    }

    #[test]
    fn four_trit_bytes_decode_like_five_trit_ones() {
        let byte = pack_trits([2, 0, 1, 2].into_iter(), 1);
        let decoded: Vec<i8> = (0..4).map(|k| tq1_trit(byte, k)).collect();
        assert_eq!(decoded, [1, -1, 0, 1]);
    }

    #[test]
    fn values_round_half_away_from_zero_to_the_nearest_trit() {
        let mut x = [0.0f32; QK_K];
        x[0] = -2.0;
        x[1] = 1.0; // exactly half of amax: rounds away from zero, to +1
        x[2] = -0.99;
        x[3] = 0.98;
        let b = tq2_0(&x);
        let codes: Vec<u8> = (0..4).map(|n| (b.qs[0] >> (2 * n)) & 3).collect();
        assert_eq!(codes, [0, 1, 1, 1]); // elements 0, 32, 64, 96 share byte 0
        assert_eq!(b.qs[1] & 3, 2); // element 1 = 0.5·amax
        assert_eq!((b.qs[2] & 3, b.qs[3] & 3), (1, 1)); // −0.495 and 0.49 of amax round to 0
    }

    #[test]
    fn a_block_of_subnormals_stores_zeros_like_ggml() {
        let x: [f32; QK_K] = from_fn(|i| if i % 3 == 0 { 1e-44 } else { 0.0 });
        let b = tq2_0(&x);
        assert_eq!(b.d.to_f32(), 0.0);
        assert!(b.qs.iter().all(|&q| q == 0b01_01_01_01));
    }
}
