//! AVX2 + FMA + F16C path of the quantized kernels (x86-64-v3: Haswell, Zen and later).
//!
//! Every `unsafe fn` here is compiled with `avx2,fma,f16c` enabled and may only run on a CPU that has
//! all three; the only way in from outside is the [`QuantKernels`] table that [`kernels`] returns after
//! checking.
//!
//! Two kernels share the per-format decoding of [`format`]: [`gemv`] for one or a few activation rows
//! (decode), streaming each weight row once, and [`gemm`] for batches (prefill), which decodes a panel
//! of 8 weight rows once and runs every token of a block past it with the 8 rows in the lanes of one
//! register.

mod format;
mod gemm;
mod gemv;

use std::arch::x86_64::*;

use super::{matmul_dims, BlockQ8, QuantKernels, QuantType, QK};
use crate::x86::avx2::hmax;
use format::*;

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<&'static QuantKernels> {
    let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    ok.then_some(&AVX2)
}

static AVX2: QuantKernels = QuantKernels {
    name: "avx2",
    quantize_row: entry::quantize_row,
    matmul: entry::matmul,
    matmul_split_mxfp4: super::split_mxfp4::avx2::matmul,
};

/// From this many activation rows on, a matmul goes to [`gemm`]: decoding a panel costs about as much
/// as running two tokens past it.
const GEMM_MIN_ROWS: usize = 4;

/// Safe entry points with the table's signatures: they check lengths, then call the vector code.
/// SAFETY (every call below): these functions are private and reachable only through `AVX2`, which
/// `kernels()` hands out only after `is_x86_feature_detected!` confirmed avx2, fma and f16c; the
/// pointer arguments come from slices whose lengths were just checked.
mod entry {
    use super::*;

    pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
        assert_eq!(x.len(), out.len() * QK, "quantize_row: {} values for {} blocks", x.len(), out.len());
        // SAFETY: see module comment.
        unsafe { super::quantize_row(x.as_ptr(), out.as_mut_ptr(), out.len()) }
    }

    pub fn matmul(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
        let (n, m) = matmul_dims(ty, w, acts, out, k);
        let (w, a, o) = (w.as_ptr(), acts.as_ptr(), out.as_mut_ptr());
        // SAFETY: see module comment; matmul_dims checked w = m rows of k, acts = n rows, out = n·m.
        unsafe {
            match ty {
                QuantType::Q4_0 => super::matmul::<Q4_0>(w, a, o, n, k, m),
                QuantType::Q4_1 => super::matmul::<Q4_1>(w, a, o, n, k, m),
                QuantType::Q5_0 => super::matmul::<Q5_0>(w, a, o, n, k, m),
                QuantType::Q5_1 => super::matmul::<Q5_1>(w, a, o, n, k, m),
                QuantType::Q8_0 => super::matmul::<Q8_0>(w, a, o, n, k, m),
                QuantType::Q2K => super::matmul::<Q2K>(w, a, o, n, k, m),
                QuantType::Q3K => super::matmul::<Q3K>(w, a, o, n, k, m),
                QuantType::Q4K => super::matmul::<Q4K>(w, a, o, n, k, m),
                QuantType::Q5K => super::matmul::<Q5K>(w, a, o, n, k, m),
                QuantType::Q6K => super::matmul::<Q6K>(w, a, o, n, k, m),
                QuantType::TQ1_0 => super::matmul::<TQ1_0>(w, a, o, n, k, m),
                QuantType::TQ2_0 => super::matmul::<TQ2_0>(w, a, o, n, k, m),
                QuantType::MXFP4 => super::matmul::<MXFP4>(w, a, o, n, k, m),
            }
        }
    }
}

/// out[t·m + o] for n activation rows of k/32 blocks at `a` and m weight rows of format F at `w`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul<const F: u8>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, k: usize, m: usize) {
    if n >= GEMM_MIN_ROWS {
        return gemm::gemm::<F>(w, a, out, n, k, m);
    }
    for t in 0..n {
        gemv::gemv::<F>(w, a.add(t * k / QK), out.add(t * m), k, m);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s)))
}

/// `scalar::quantize_block` on each of `nb` blocks, bit for bit: the same scale arithmetic in scalar
/// f32, the same products x·(1/d), rounding half to even like `round_ties_even`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row(x: *const f32, out: *mut BlockQ8, nb: usize) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let inf = _mm256_set1_ps(f32::INFINITY);
    for b in 0..nb {
        let p = x.add(b * QK);
        let mut v = [_mm256_setzero_ps(); 4];
        let mut amax = _mm256_setzero_ps();
        let mut non_finite = _mm256_setzero_ps();
        for (j, v) in v.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(p.add(8 * j));
            let a = _mm256_and_ps(*v, abs_mask);
            amax = _mm256_max_ps(a, amax);
            // |x| ≥ inf, or unordered (NaN).
            non_finite = _mm256_or_ps(non_finite, _mm256_cmp_ps::<_CMP_NLT_UQ>(a, inf));
        }
        let o = out.add(b);
        if _mm256_movemask_ps(non_finite) != 0 {
            *o = BlockQ8 { d: f32::NAN, s: f32::NAN, qs: [0; QK] };
            continue;
        }
        let d = hmax(amax) / 127.0;
        if d < f32::MIN_POSITIVE {
            *o = BlockQ8::default();
            continue;
        }
        let id = _mm256_set1_ps(1.0 / d);
        let mut q = [_mm256_setzero_si256(); 4];
        for (q, v) in q.iter_mut().zip(v) {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(v, id));
            *q = _mm256_cvtps_epi32(r);
        }
        let sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        // The packs work within 128-bit halves: the result holds dwords of 4 codes in the order
        // q0[0..4] q1[0..4] q2[0..4] q3[0..4] | q0[4..8] q1[4..8] q2[4..8] q3[4..8]; the permute restores
        // element order. |codes| ≤ 127, so the saturating packs are exact.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let codes = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        (*o).d = d;
        (*o).s = d * sum as f32;
        _mm256_storeu_si256(std::ptr::addr_of_mut!((*o).qs).cast(), codes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F16C's conversion against the scalar one on every f16 (NaNs: F16C quiets signalling ones, so
    /// only NaN-ness is compared).
    #[test]
    fn f16c_matches_scalar_conversion() {
        if kernels().is_none() {
            return;
        }
        for h in 0..=u16::MAX {
            // SAFETY: kernels() returned Some, so this CPU has f16c.
            let got = unsafe { scales::<Q8_0>(h.to_le_bytes().as_ptr()).d[0] };
            let want = super::super::scalar::f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }
}
