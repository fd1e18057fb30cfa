//! Reference quantized kernels: the specification every SIMD path is tested against, and the path on
//! CPUs without one.

use super::{matmul_dims, BlockQ8, QuantType, QK};

/// IEEE half-precision bits to f32 (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from(h >> 10) & 0x1F;
    let man = u32::from(h & 0x3FF);
    match exp {
        // Zero and subnormals: man·2⁻²⁴, exact in f32.
        0 => f32::from_bits(sign | (man as f32 * (1.0 / (1u32 << 24) as f32)).to_bits()),
        // Infinity and NaN (payload kept).
        0x1F => f32::from_bits(sign | 0x7F80_0000 | man << 13),
        // Normal: rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | (exp + 112) << 23 | man << 13),
    }
}

/// Quantizes one block: d = max|x| / 127, qs[i] = round-half-to-even(x[i]·(1/d)), s = d·Σ qs.
///
/// With d normal, |x[i]·(1/d)| ≤ 127·(1 + 2⁻²³)² < 127.5, so the codes lie in [−127, 127]. A block whose
/// d would be below `f32::MIN_POSITIVE` (zeros, or values under ~1.5e-36) becomes all zeros with d = 0:
/// 1/d could overflow there, and such values are below f32's resolution of anything they are added
/// to. A block holding an infinity or NaN gets d = s = NaN and zero codes, so whatever it reaches turns
/// NaN as it would in f32 arithmetic.
pub fn quantize_block(x: &[f32; QK]) -> BlockQ8 {
    if !x.iter().all(|v| v.is_finite()) {
        return BlockQ8 { d: f32::NAN, s: f32::NAN, qs: [0; QK] };
    }
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    if d < f32::MIN_POSITIVE {
        return BlockQ8::default();
    }
    let id = 1.0 / d;
    let qs = x.map(|v| (v * id).round_ties_even() as i8);
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    BlockQ8 { d, s: d * sum as f32, qs }
}

/// Quantizes x (a multiple of 32 long) into x.len()/32 blocks.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row: {} values for {} blocks", x.len(), out.len());
    for (xb, b) in x.chunks_exact(QK).zip(out) {
        *b = quantize_block(xb.try_into().expect("chunks_exact yields whole blocks"));
    }
}

/// The f16 at bytes 2i, 2i + 1 of a weight block.
fn f16_at(block: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[2 * i], block[2 * i + 1]]))
}

/// The integer dot product of a weight block's codes (with Q4_0's offset of 8 applied) and an
/// activation block's codes: exact, |result| ≤ 32·128·127.
pub fn block_dot_i32(ty: QuantType, block: &[u8], a: &BlockQ8) -> i32 {
    let q = &a.qs;
    match ty {
        QuantType::Q8_0 => block[2..34].iter().zip(q).map(|(&w, &x)| i32::from(w as i8) * i32::from(x)).sum(),
        QuantType::Q4_0 | QuantType::Q4_1 => {
            let (codes, offset) = if ty == QuantType::Q4_0 { (&block[2..18], 8) } else { (&block[4..20], 0) };
            codes
                .iter()
                .enumerate()
                .map(|(j, &b)| {
                    let (lo, hi) = (i32::from(b & 0x0F) - offset, i32::from(b >> 4) - offset);
                    lo * i32::from(q[j]) + hi * i32::from(q[j + 16])
                })
                .sum()
        }
    }
}

/// One block's term of an output: (d_w·d_a)·isum, plus m_w·s_a for Q4_1.
pub fn block_term(ty: QuantType, block: &[u8], a: &BlockQ8) -> f32 {
    let isum = block_dot_i32(ty, block, a) as f32;
    let term = (f16_at(block, 0) * a.d) * isum;
    match ty {
        QuantType::Q4_1 => term + f16_at(block, 1) * a.s,
        QuantType::Q4_0 | QuantType::Q8_0 => term,
    }
}

/// out[t·m + o] = Σ_b block_term(block b of weight row o, block b of activation row t), the terms added
/// left to right in f32.
///
/// The SIMD paths compute the same exact integers; they add the products (d_w·d_a)·(partial isum)
/// lane-wise with FMAs, Q4_1's m_w·s_a terms separately, and the lanes at the end, so their sums differ
/// from this one by float rounding only (each is within γ_N·Σ|terms| of the exact sum of the same
/// rounded scales, N the number of additions; see the tests).
pub fn matmul(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
    let (n, m) = matmul_dims(ty, w, acts, out, k);
    let (nb, row_bytes) = (k / QK, ty.row_bytes(k));
    for t in 0..n {
        let a = &acts[t * nb..][..nb];
        for o in 0..m {
            let row = &w[o * row_bytes..][..row_bytes];
            out[t * m + o] = row.chunks_exact(ty.block_bytes()).zip(a).fold(0.0, |s, (b, a)| s + block_term(ty, b, a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_special_values() {
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03FF), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7C00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xFC00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7E00).is_nan());
    }

    #[test]
    fn quantize_block_edge_cases() {
        let mut x = [0.0f32; QK];
        assert_eq!(quantize_block(&x), BlockQ8::default());
        // max |x| = 127 makes d = 1 exactly, so the codes show the rounding rule.
        (x[3], x[7], x[8], x[9], x[10], x[11]) = (-127.0, 64.0, 0.5, 1.5, 2.5, -0.5);
        let b = quantize_block(&x);
        assert_eq!(b.d, 1.0);
        assert_eq!(b.qs[3..12], [-127, 0, 0, 0, 64, 0, 2, 2, 0]);
        assert_eq!(b.s, (-127 + 64 + 2 + 2) as f32);
        // Scaling x by a power of two scales d and s alike and keeps the codes.
        assert_eq!(quantize_block(&x.map(|v| v * 0.25)), BlockQ8 { d: 0.25, s: b.s * 0.25, qs: b.qs });
        x[5] = f32::INFINITY;
        let b = quantize_block(&x);
        assert!(b.d.is_nan() && b.s.is_nan() && b.qs == [0; QK]);
        x[5] = f32::NAN;
        assert!(quantize_block(&x).d.is_nan());
        let tiny = [1e-37f32; QK];
        assert_eq!(quantize_block(&tiny), BlockQ8::default());
    }
}
