//! The 32-element block formats: ggml's `quantize_row_q4_0_ref` … `quantize_row_q8_0_ref`, and the weighted
//! `quantize_row_q4_0_impl` … `quantize_row_q5_1_impl` used with an importance matrix.

use std::array::from_fn;

use half::f16;

use super::kquants::{make_qkx_quants, make_qx_quants, WEIGHTED_MIN_SEARCH};
use super::{c_trunc, inverse_or_zero, signed_absmax, Block, Weighted};
use crate::dequant::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};

/// `block_q4_0` from d = (value of largest magnitude)/−8, so that value gets code 0 exactly.
pub(super) fn q4_0(x: &[f32; QK]) -> BlockQ4_0 {
    let d = signed_absmax(x) / -8.0;
    let id = inverse_or_zero(d);
    // ggml: MIN(15, (int8_t)(x·id + 8.5)), rounding half up around the offset 8 by truncation.
    let code = |v: f32| (c_trunc(v * id + 8.5) as i8).min(15) as u8;
    BlockQ4_0 { d: f16::from_f32(d), qs: pack_nibbles(&x.map(code)) }
}

/// `block_q4_1`: 16 levels spanning [min, max].
pub(super) fn q4_1(x: &[f32; QK]) -> BlockQ4_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    let code = |v: f32| (c_trunc((v - min) * id + 0.5) as i8).min(15) as u8;
    BlockQ4_1 { d: f16::from_f32(d), m: f16::from_f32(min), qs: pack_nibbles(&x.map(code)) }
}

/// `block_q5_0`: as Q4_0 with 32 levels, d = (value of largest magnitude)/−16.
pub(super) fn q5_0(x: &[f32; QK]) -> BlockQ5_0 {
    let d = signed_absmax(x) / -16.0;
    let id = inverse_or_zero(d);
    let codes = x.map(|v| (c_trunc(v * id + 16.5) as i8).min(31) as u8);
    let (qh, qs) = pack_five_bits(&codes);
    BlockQ5_0 { d: f16::from_f32(d), qh, qs }
}

/// `block_q5_1`: 32 levels spanning [min, max].
pub(super) fn q5_1(x: &[f32; QK]) -> BlockQ5_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    // ggml casts straight to uint8_t here, without Q4_1's clamp to the top level.
    let codes = x.map(|v| c_trunc((v - min) * id + 0.5) as u8);
    let (qh, qs) = pack_five_bits(&codes);
    BlockQ5_1 { d: f16::from_f32(d), m: f16::from_f32(min), qh, qs }
}

/// `block_q8_0`: d = max|x|/127, codes rounded half away from zero (`roundf`).
pub(super) fn q8_0(x: &[f32; QK]) -> BlockQ8_0 {
    // ggml: amax = MAX(amax, fabsf(v)).
    let amax = x.iter().fold(0.0f32, |amax, v| if amax > v.abs() { amax } else { v.abs() });
    let d = amax / 127.0;
    let id = inverse_or_zero(d);
    BlockQ8_0 { d: f16::from_f32(d), qs: x.map(|v| c_trunc((v * id).round()) as i8) }
}

/// `quantize_row_q4_0_impl`: the symmetric least-squares scale search over importance-weighted errors.
pub(super) fn q4_0_weighted(x: &[f32; QK], w: Weighted<QK>) -> BlockQ4_0 {
    let mut codes = [0u8; QK];
    let d = make_qx_quants(x, 8, Some(&weights(x, &w)), &mut codes);
    BlockQ4_0 { d: f16::from_f32(d), qs: pack_nibbles(&codes) }
}

/// `quantize_row_q4_1_impl`: scale and min from the weighted grid search (`make_qkx3_quants`).
pub(super) fn q4_1_weighted(x: &[f32; QK], w: Weighted<QK>) -> BlockQ4_1 {
    let mut codes = [0u8; QK];
    let (d, neg_min) = make_qkx_quants(x, &weights(x, &w), 15, &WEIGHTED_MIN_SEARCH, &mut codes);
    BlockQ4_1 { d: f16::from_f32(d), m: f16::from_f32(-neg_min), qs: pack_nibbles(&codes) }
}

/// `quantize_row_q5_0_impl`.
pub(super) fn q5_0_weighted(x: &[f32; QK], w: Weighted<QK>) -> BlockQ5_0 {
    let mut codes = [0u8; QK];
    let d = make_qx_quants(x, 16, Some(&weights(x, &w)), &mut codes);
    let (qh, qs) = pack_five_bits(&codes);
    BlockQ5_0 { d: f16::from_f32(d), qh, qs }
}

/// `quantize_row_q5_1_impl`.
pub(super) fn q5_1_weighted(x: &[f32; QK], w: Weighted<QK>) -> BlockQ5_1 {
    let mut codes = [0u8; QK];
    let (d, neg_min) = make_qkx_quants(x, &weights(x, &w), 31, &WEIGHTED_MIN_SEARCH, &mut codes);
    let (qh, qs) = pack_five_bits(&codes);
    BlockQ5_1 { d: f16::from_f32(d), m: f16::from_f32(-neg_min), qh, qs }
}

/// ggml's weights for the 32-element formats: importance · sqrt(σ² + x²), σ² the row's mean square.
fn weights(x: &[f32; QK], w: &Weighted<QK>) -> [f32; QK] {
    from_fn(|j| w.importance[j] * (w.row_mean_square + x[j] * x[j]).sqrt())
}

/// The block's minimum and maximum, scanned as ggml does from (FLT_MAX, −FLT_MAX).
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// 4-bit codes as Q4_0/Q4_1 store them: element j in the low nibble of byte j, element j + 16 in its high nibble.
pub(super) fn pack_nibbles(codes: &[u8; QK]) -> [u8; QK / 2] {
    from_fn(|j| codes[j] | (codes[j + 16] << 4))
}

/// Splits 5-bit codes into the low nibbles (element j low, j + 16 high) and the fifth bits (bit j of `qh`).
pub(super) fn pack_five_bits(codes: &[u8; QK]) -> ([u8; 4], [u8; QK / 2]) {
    let mut qh = 0u32;
    for (j, &c) in codes.iter().enumerate() {
        qh |= u32::from((c & 0x10) >> 4) << j;
    }
    (qh.to_le_bytes(), from_fn(|j| (codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4)))
}

impl Block for BlockQ4_0 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.qs);
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

impl Block for BlockQ4_1 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.m.to_le_bytes());
        out.extend_from_slice(&self.qs);
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite() && self.m.is_finite()
    }
}

impl Block for BlockQ5_0 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.qh);
        out.extend_from_slice(&self.qs);
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

impl Block for BlockQ5_1 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.m.to_le_bytes());
        out.extend_from_slice(&self.qh);
        out.extend_from_slice(&self.qs);
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite() && self.m.is_finite()
    }
}

impl Block for BlockQ8_0 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend(self.qs.iter().map(|&q| q as u8));
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &impl Block) -> Vec<u8> {
        let mut out = Vec::new();
        b.write(&mut out);
        out
    }

    #[test]
    fn written_blocks_read_back_as_the_same_struct() {
        let x: [f32; QK] = from_fn(|j| ((j * 7 % 13) as f32 - 6.0) * 0.37);
        let b = q4_0(&x);
        assert_eq!(BlockQ4_0::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q4_1(&x);
        assert_eq!(BlockQ4_1::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q5_0(&x);
        assert_eq!(BlockQ5_0::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q5_1(&x);
        assert_eq!(BlockQ5_1::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q8_0(&x);
        assert_eq!(BlockQ8_0::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
    }

    #[test]
    fn q4_0_maps_the_largest_magnitude_to_code_0() {
        let mut x = [0.5f32; QK];
        x[3] = -4.0;
        let b = q4_0(&x);
        assert_eq!(b.d.to_f32(), 0.5);
        assert_eq!(b.qs[3] & 0x0F, 0); // -4 = (0 - 8)·0.5
        assert_eq!(b.qs[0] & 0x0F, 9); // 0.5 = (9 - 8)·0.5
    }

    #[test]
    fn five_bit_codes_put_the_fifth_bit_of_element_j_in_bit_j() {
        let mut codes = [0u8; QK];
        codes[1] = 0x1F;
        codes[17] = 0x12;
        let (qh, qs) = pack_five_bits(&codes);
        assert_eq!(u32::from_le_bytes(qh), (1 << 1) | (1 << 17));
        assert_eq!(qs[1], 0x2F);
    }
}
