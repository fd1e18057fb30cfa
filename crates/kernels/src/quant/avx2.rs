//! AVX2 + FMA + F16C path of the quantized kernels (x86-64-v3: Haswell, Zen and later).
//!
//! Every `unsafe fn` here is compiled with `avx2,fma,f16c` enabled and may only run on a CPU that has
//! all three; the only way in from outside is the [`QuantKernels`] table that [`kernels`] returns after
//! checking.
//!
//! Integer dot products of 32 codes: `_mm256_maddubs_epi16` multiplies unsigned by signed bytes and
//! adds neighbouring pairs into i16, `_mm256_madd_epi16` by ones adds neighbouring i16 pairs into eight
//! i32 lanes. Neither saturates here, because activation codes stay in [−127, 127]: 4-bit codes give
//! pairs of at most 2·15·127 (Q4_0 then subtracts at most 2·8·127), Q8_0 codes at most 2·128·127 =
//! 32512 < 2¹⁵ (their magnitude is the unsigned operand: 128 for the −128 a file may hold). The eight
//! lanes are converted to f32 (exactly: |lane| < 2²⁴) and multiplied by the block's d_w·d_a into one
//! accumulator per output.

use std::arch::x86_64::*;

use super::{matmul_dims, BlockQ8, QuantKernels, QuantType, QK};

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<&'static QuantKernels> {
    let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    ok.then_some(&AVX2)
}

static AVX2: QuantKernels = QuantKernels { name: "avx2", quantize_row: entry::quantize_row, matmul: entry::matmul };

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
        let (w, a, o, nb) = (w.as_ptr(), acts.as_ptr(), out.as_mut_ptr(), k / QK);
        // SAFETY: see module comment; matmul_dims checked w = m rows of k, acts = n rows, out = n·m.
        unsafe {
            match ty {
                QuantType::Q4_0 => super::matmul::<Q4_0>(w, a, o, n, nb, m),
                QuantType::Q4_1 => super::matmul::<Q4_1>(w, a, o, n, nb, m),
                QuantType::Q8_0 => super::matmul::<Q8_0>(w, a, o, n, nb, m),
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
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

/// Weight formats as const-generic tags, so each kernel is compiled once per format with the format's
/// branches resolved.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

const fn block_bytes(f: u8) -> usize {
    match f {
        Q4_0 => QuantType::Q4_0.block_bytes(),
        Q4_1 => QuantType::Q4_1.block_bytes(),
        _ => QuantType::Q8_0.block_bytes(),
    }
}

/// Output rows per GEMV pass: one turn of the block loop (and the Q4_0 offset term of the activation
/// block) serves 8 weight rows, whose 8 accumulators stay in registers. A variant taking 8 blocks of one
/// row per pass instead (scales fetched with `vpgatherdd`, lanes reduced across blocks, one FMA per 8
/// blocks) measured about 40% slower on Zen 3, whose gathers cost more than they save.
const GEMV_ROWS: usize = 8;
/// Tokens per tile of the batched path: 4×2 tiles keep their 8 accumulators and the operands in
/// registers; 4×3 measured 5–10% slower (spills), and decoding a weight block serves 2 tokens already.
const TILE_TOKENS: usize = 2;
/// Tokens per sweep of the batched path: their activation blocks (40 bytes per 32 values: 60 KB at
/// k = 1536) stay in L2 while each group of 4 weight rows, decoded once in L1, passes over them.
const TOKEN_BLOCK: usize = 32;

/// The codes of the weight block at `p`, ready for `dot`. Q4_x: the 32 nibbles as bytes, in element
/// order (the 16 low nibbles are elements 0..16, matching the low half of an activation block), and an
/// unused zero. Q8_0: |q| (the unsigned operand; −128 becomes 128, as wanted) and q, whose signs `dot`
/// moves onto the activation codes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes<const F: u8>(p: *const u8) -> (__m256i, __m256i) {
    if F == Q8_0 {
        let q = _mm256_loadu_si256(p.add(2).cast());
        (_mm256_sign_epi8(q, q), q)
    } else {
        // The 16 bytes in both halves, the upper half shifted right by 4 (bits crossing into a byte's
        // high nibble from its neighbour are masked off with it): one broadcast load and two ALU ops.
        let packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(if F == Q4_1 { 4 } else { 2 }).cast()));
        let both = _mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4));
        (_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_setzero_si256())
    }
}

/// Eight i32 lanes that sum to `scalar::block_dot_i32` of a weight block (its `codes`) and activation
/// codes `a`. `a8` is Q4_0's offset term, 8·(a[2i] + a[2i+1]) per i16 lane, computed once per activation
/// block by the caller: subtracting it turns Σ q·a into Σ (q − 8)·a without a signed weight operand.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const F: u8>(w: (__m256i, __m256i), a: __m256i, a8: __m256i) -> __m256i {
    let pairs = match F {
        Q8_0 => _mm256_maddubs_epi16(w.0, _mm256_sign_epi8(a, w.1)),
        Q4_0 => _mm256_sub_epi16(_mm256_maddubs_epi16(w.0, a), a8),
        _ => _mm256_maddubs_epi16(w.0, a),
    };
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// [d, m, 0, 0] of the weight block at `p` (m only for Q4_1, else 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight_scales<const F: u8>(p: *const u8) -> __m128 {
    let bits = if F == Q4_1 { p.cast::<i32>().read_unaligned() } else { i32::from(p.cast::<u16>().read_unaligned()) };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// out[t·ldo + r] = Σ_b term(weight row r, activation row t) for r < R, t < T: the weight rows start at
/// `w`, `row_bytes` apart; the activation rows at `a`, `nb` blocks apart. Each weight block is decoded
/// once (codes and d_w broadcast) for all T tokens; activation codes and scales are read from L1 inside
/// the pair loop (mostly as memory operands), which leaves the registers to the R·T accumulators.
///
/// Per pair of blocks: acc += (d_w·d_a)·lanes, one FMA over the eight i32 lanes of `dot` (d_w·d_a is the
/// same f32 product as in the scalar reference); Q4_1's m_w·s_a goes to a scalar accumulator per output.
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const F: u8, const R: usize, const T: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const BlockQ8,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut mins = [[0.0f32; T]; R];
    for b in 0..nb {
        let mut a8 = [_mm256_setzero_si256(); T];
        if F == Q4_0 {
            for t in 0..T {
                let aq = _mm256_loadu_si256(std::ptr::addr_of!((*a.add(t * nb + b)).qs).cast());
                a8[t] = _mm256_maddubs_epi16(_mm256_set1_epi8(8), aq);
            }
        }
        for r in 0..R {
            let p = w.add(r * row_bytes + b * block_bytes(F));
            if T == 1 {
                // Decode streams w from memory, R rows at a time; prefetching the next group's rows at
                // the same offset keeps R + R streams in flight. Past the end of w is harmless:
                // prefetches never fault.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(R * row_bytes).cast());
            }
            let c = codes::<F>(p);
            let sw = weight_scales::<F>(p);
            let dw = _mm256_broadcastss_ps(sw);
            let mw = _mm_cvtss_f32(_mm_movehdup_ps(sw));
            for t in 0..T {
                let ab = a.add(t * nb + b);
                let aq = _mm256_loadu_si256(std::ptr::addr_of!((*ab).qs).cast());
                let lanes = _mm256_cvtepi32_ps(dot::<F>(c, aq, a8[t]));
                let scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(&(*ab).d));
                acc[r][t] = _mm256_fmadd_ps(scale, lanes, acc[r][t]);
                if F == Q4_1 {
                    mins[r][t] += mw * (*ab).s;
                }
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            *out.add(t * ldo + r) = hsum(acc[r][t]) + mins[r][t];
        }
    }
}

/// `tile` for r ≤ 4 weight rows and c ≤ 2 tokens.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_edge<const F: u8>(
    r: usize,
    c: usize,
    w: *const u8,
    row_bytes: usize,
    a: *const BlockQ8,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    match (r, c) {
        (4, 2) => tile::<F, 4, 2>(w, row_bytes, a, nb, out, ldo),
        (3, 2) => tile::<F, 3, 2>(w, row_bytes, a, nb, out, ldo),
        (2, 2) => tile::<F, 2, 2>(w, row_bytes, a, nb, out, ldo),
        (1, 2) => tile::<F, 1, 2>(w, row_bytes, a, nb, out, ldo),
        (4, 1) => tile::<F, 4, 1>(w, row_bytes, a, nb, out, ldo),
        (3, 1) => tile::<F, 3, 1>(w, row_bytes, a, nb, out, ldo),
        (2, 1) => tile::<F, 2, 1>(w, row_bytes, a, nb, out, ldo),
        (1, 1) => tile::<F, 1, 1>(w, row_bytes, a, nb, out, ldo),
        _ => unreachable!("quantized tile {r}×{c}"),
    }
}

/// out[t·m + o] for n activation rows of nb blocks at `a` and m weight rows of format F at `w`.
///
/// n = 1: GEMV_ROWS weight rows per pass over the activation row. n > 1: blocks of TOKEN_BLOCK tokens;
/// within one, each group of 4 weight rows sweeps the tokens TILE_TOKENS at a time (4×2 tiles: 8
/// accumulators, each weight block decoded once per 2 tokens).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul<const F: u8>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize) {
    let row_bytes = nb * block_bytes(F);
    if n == 1 {
        let mut o = 0;
        while o + GEMV_ROWS <= m {
            tile::<F, GEMV_ROWS, 1>(w.add(o * row_bytes), row_bytes, a, nb, out.add(o), 0);
            o += GEMV_ROWS;
        }
        while o < m {
            let r = (m - o).min(4);
            tile_edge::<F>(r, 1, w.add(o * row_bytes), row_bytes, a, nb, out.add(o), 0);
            o += r;
        }
        return;
    }
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + TOKEN_BLOCK).min(n);
        let mut o = 0;
        while o < m {
            let r = (m - o).min(4);
            let mut t = t0;
            while t < t1 {
                let c = (t1 - t).min(TILE_TOKENS);
                tile_edge::<F>(r, c, w.add(o * row_bytes), row_bytes, a.add(t * nb), nb, out.add(t * m + o), m);
                t += c;
            }
            o += r;
        }
        t0 = t1;
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
            let got = unsafe { _mm_cvtss_f32(weight_scales::<Q8_0>(h.to_le_bytes().as_ptr())) };
            let want = super::super::scalar::f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }
}
