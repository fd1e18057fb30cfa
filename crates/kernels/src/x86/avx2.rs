//! AVX2 + FMA path (x86-64-v3: Haswell, Zen and later).
//!
//! Every `unsafe fn` here is compiled with `avx2,fma` enabled and may only run on a CPU that has both;
//! the only way in from outside is the [`Kernels`] table that [`kernels`] returns after checking.
//! Tails shorter than one vector go through masked loads/stores, so no kernel reads or writes past the
//! end of its slices and there are no scalar remainder loops to keep in sync with the vector code.

use std::arch::x86_64::*;

use crate::dispatch::{matmul_dims, Kernels};

/// The AVX2 table, if this CPU has AVX2 and FMA.
pub fn kernels() -> Option<&'static Kernels> {
    (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(&AVX2)
}

static AVX2: Kernels = Kernels {
    name: "avx2",
    dot_f32: entry::dot_f32,
    axpy_f32: entry::axpy_f32,
    matmul_f32: entry::matmul_f32,
    rmsnorm_row: entry::rmsnorm_row,
    softmax_inplace: entry::softmax_inplace,
    silu_mul: entry::silu_mul,
    gelu_tanh_mul: entry::gelu_tanh_mul,
};

/// Safe entry points with the table's signatures: they check lengths, then call the vector code.
/// SAFETY (every call below): these functions are private and reachable only through `AVX2`, which
/// `kernels()` hands out only after `is_x86_feature_detected!` confirmed avx2 and fma; the pointer
/// arguments come from slices whose lengths were just checked.
mod entry {
    use super::*;

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
        // SAFETY: see module comment.
        unsafe { dot(a.as_ptr(), b.as_ptr(), a.len()) }
    }

    pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy_f32: length mismatch");
        // SAFETY: see module comment.
        unsafe { axpy(alpha, x.as_ptr(), y.as_mut_ptr(), y.len()) }
    }

    pub fn matmul_f32(x: &[f32], w: &[f32], out: &mut [f32], k: usize) {
        let (n, m) = matmul_dims(x, w, out, k);
        // SAFETY: see module comment; matmul_dims checked x = n·k, w = m·k, out = n·m.
        unsafe { matmul(x.as_ptr(), w.as_ptr(), out.as_mut_ptr(), n, k, m) }
    }

    pub fn rmsnorm_row(x: &[f32], w: &[f32], eps: f32, weight_offset: f32, out: &mut [f32]) {
        assert!(x.len() == w.len() && out.len() == w.len(), "rmsnorm_row: length mismatch");
        // SAFETY: see module comment.
        unsafe { rmsnorm(x.as_ptr(), w.as_ptr(), eps, weight_offset, out.as_mut_ptr(), x.len()) }
    }

    pub fn softmax_inplace(x: &mut [f32]) {
        // SAFETY: see module comment.
        unsafe { softmax(x.as_mut_ptr(), x.len()) }
    }

    pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
        // SAFETY: see module comment.
        unsafe { silu_mul_ptr(gate.as_mut_ptr(), up.as_ptr(), gate.len()) }
    }

    pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "gelu_tanh_mul: length mismatch");
        // SAFETY: see module comment.
        unsafe { gelu_tanh_mul_ptr(gate.as_mut_ptr(), up.as_ptr(), gate.len()) }
    }
}

/// Lanes 0..rem set, rem in 1..=7: a window into eight ones followed by eight zeros.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tail_mask(rem: usize) -> __m256i {
    static ONES_THEN_ZEROS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    debug_assert!((1..8).contains(&rem));
    _mm256_loadu_si256(ONES_THEN_ZEROS.as_ptr().add(8 - rem).cast())
}

/// Σ of the 8 lanes. Shared by the half, group and quant AVX2 paths, whose target features include these.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The largest of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}

/// e^x per lane with relative error below 1.4·2⁻²⁴ (Cephes `expf`; see the test): x = n·ln2 + r with
/// |r| ≤ ln2/2, e^r from a degree-6 polynomial, 2^n built in the exponent bits. Inputs above 88.376
/// (just under ln(f32::MAX) = 88.72) give +inf and inputs below ln(f32::MIN_POSITIVE) = -87.34 give 0:
/// the callers add 1 to the result or divide it by a sum ≥ 1, which moves them less than
/// f32::MIN_POSITIVE. NaN stays NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp(x: __m256) -> __m256 {
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_55;
    // max/min return their second operand when either is NaN, which keeps a NaN input NaN.
    let xc = _mm256_min_ps(_mm256_set1_ps(HI), _mm256_max_ps(_mm256_set1_ps(LO), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // ln2 split in two so that n·LN2_HI is exact and r keeps its low bits.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let e_r = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(r, r), p, r), _mm256_set1_ps(1.0));
    // n ∈ [-126, 127] after the clamp, so 2^n is a normal float.
    let two_n =
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    let y = _mm256_mul_ps(e_r, two_n);
    let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO)), y);
    _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI)))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot(a: *const f32, b: *const f32, len: usize) -> f32 {
    // Four independent accumulators hide the FMA latency (4 cycles, 2 per cycle issued).
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= len {
        for (j, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 8 * j)), _mm256_loadu_ps(b.add(i + 8 * j)), *s);
        }
        i += 32;
    }
    while i + 8 <= len {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc[0]);
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        acc[1] = _mm256_fmadd_ps(_mm256_maskload_ps(a.add(i), m), _mm256_maskload_ps(b.add(i), m), acc[1]);
    }
    hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy(alpha: f32, x: *const f32, y: *mut f32, len: usize) {
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= len {
        _mm256_storeu_ps(y.add(i), _mm256_fmadd_ps(a, _mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i))));
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        let v = _mm256_fmadd_ps(a, _mm256_maskload_ps(x.add(i), m), _mm256_maskload_ps(y.add(i), m));
        _mm256_maskstore_ps(y.add(i), m, v);
    }
}

/// Longest stretch of k one tile works on: 3 x rows and 4 w rows of 768 floats (21 KiB) stay in the
/// 32 KiB L1 while their 12 dot products run.
const KC_MAX: usize = 768;
/// Bytes of w kept hot (in L2) while every tile row of x passes over them.
const W_BLOCK_BYTES: usize = 192 * 1024;

/// out[t·m + o] = Σ_i x[t·k + i]·w[o·k + i] for x: n×k, w: m×k, out: n×m.
///
/// n = 1 (decode) streams w once; each pass shares one load of x among 4 rows of w (`gemv4`). n > 1
/// works on 3×4 tiles of out (12 accumulators, 7 loads per 12 FMAs, which keeps the FMA units busy):
/// the 3 rows of x stay in L1 while the tile sweeps a block of w small enough to stay in L2, over a
/// stretch of k small enough for all 7 rows to fit in L1; stretches after the first add to out.
#[target_feature(enable = "avx2,fma")]
unsafe fn matmul(x: *const f32, w: *const f32, out: *mut f32, n: usize, k: usize, m: usize) {
    if n == 1 {
        let mut o = 0;
        while o + 4 <= m {
            gemv4(x, w.add(o * k), k, out.add(o));
            o += 4;
        }
        if o < m {
            tile_edge(1, m - o, x, w.add(o * k), k, k, out.add(o), 0, false);
        }
        return;
    }
    let kc = k.div_ceil(k.div_ceil(KC_MAX)).next_multiple_of(8);
    let mut k0 = 0;
    while k0 < k {
        let len = kc.min(k - k0);
        let ob = (W_BLOCK_BYTES / (4 * len)).next_multiple_of(4);
        let mut o0 = 0;
        while o0 < m {
            let o1 = (o0 + ob).min(m);
            let mut t = 0;
            while t < n {
                let r = (n - t).min(3);
                let mut o = o0;
                while o < o1 {
                    let c = (o1 - o).min(4);
                    let (xt, wo, ot) = (x.add(t * k + k0), w.add(o * k + k0), out.add(t * m + o));
                    if r == 3 && c == 4 {
                        tile::<3, 4>(xt, wo, k, len, ot, m, k0 > 0);
                    } else {
                        tile_edge(r, c, xt, wo, k, len, ot, m, k0 > 0);
                    }
                    o += c;
                }
                t += r;
            }
            o0 = o1;
        }
        k0 += len;
    }
}

/// out[0..4] = w[c·k..][..k] · x for the 4 consecutive rows of w at `w`: `tile::<1, 4>` plus a software
/// prefetch of the next 4 rows at the same offset. Decode streams w from memory, and with rows of a
/// few KiB the hardware prefetcher keeps restarting; prefetching one group ahead measured 5–15% more
/// GB/s. Prefetching past the end of w is harmless (prefetches never fault), hence `wrapping_add`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv4(x: *const f32, w: *const f32, k: usize, out: *mut f32) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 8 <= k {
        let xv = _mm256_loadu_ps(x.add(i));
        for (c, a) in acc.iter_mut().enumerate() {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((4 + c) * k + i).cast());
            *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w.add(c * k + i)), *a);
        }
        i += 8;
    }
    if i < k {
        let m = tail_mask(k - i);
        let xv = _mm256_maskload_ps(x.add(i), m);
        for (c, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(xv, _mm256_maskload_ps(w.add(c * k + i), m), *a);
        }
    }
    _mm_storeu_ps(out, hsum4(acc));
}

/// `tile` for the partial tiles at the edges of out (r ≤ 3 rows of x, c ≤ 4 rows of w).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_edge(
    r: usize,
    c: usize,
    x: *const f32,
    w: *const f32,
    ld: usize,
    len: usize,
    out: *mut f32,
    ldo: usize,
    acc: bool,
) {
    match (r, c) {
        (3, 4) => tile::<3, 4>(x, w, ld, len, out, ldo, acc),
        (3, 3) => tile::<3, 3>(x, w, ld, len, out, ldo, acc),
        (3, 2) => tile::<3, 2>(x, w, ld, len, out, ldo, acc),
        (3, 1) => tile::<3, 1>(x, w, ld, len, out, ldo, acc),
        (2, 4) => tile::<2, 4>(x, w, ld, len, out, ldo, acc),
        (2, 3) => tile::<2, 3>(x, w, ld, len, out, ldo, acc),
        (2, 2) => tile::<2, 2>(x, w, ld, len, out, ldo, acc),
        (2, 1) => tile::<2, 1>(x, w, ld, len, out, ldo, acc),
        (1, 4) => tile::<1, 4>(x, w, ld, len, out, ldo, acc),
        (1, 3) => tile::<1, 3>(x, w, ld, len, out, ldo, acc),
        (1, 2) => tile::<1, 2>(x, w, ld, len, out, ldo, acc),
        (1, 1) => tile::<1, 1>(x, w, ld, len, out, ldo, acc),
        _ => unreachable!("tile {r}×{c}"),
    }
}

/// out[r·ldo + c] (+)= Σ_{i<len} x[r·ld + i]·w[c·ld + i] for r < R, c < C ≤ 4: R·C dot products
/// sharing their loads, one vector accumulator each, reduced across lanes once at the end.
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const C: usize>(
    x: *const f32,
    w: *const f32,
    ld: usize,
    len: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let mut xv = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i + 8 <= len {
        for r in 0..R {
            xv[r] = _mm256_loadu_ps(x.add(r * ld + i));
        }
        for c in 0..C {
            let wv = _mm256_loadu_ps(w.add(c * ld + i));
            for r in 0..R {
                acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
            }
        }
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        for r in 0..R {
            xv[r] = _mm256_maskload_ps(x.add(r * ld + i), m);
        }
        for c in 0..C {
            let wv = _mm256_maskload_ps(w.add(c * ld + i), m);
            for r in 0..R {
                acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
            }
        }
    }
    for r in 0..R {
        // Columns past C hold zeros; one reduction handles all four.
        let mut sums = hsum4(acc[r]);
        let p = out.add(r * ldo);
        if C == 4 {
            if accumulate {
                sums = _mm_add_ps(sums, _mm_loadu_ps(p));
            }
            _mm_storeu_ps(p, sums);
        } else {
            let mut lanes = [0.0f32; 4];
            _mm_storeu_ps(lanes.as_mut_ptr(), sums);
            for c in 0..C {
                *p.add(c) = if accumulate { *p.add(c) + lanes[c] } else { lanes[c] };
            }
        }
    }
}

/// [Σ lanes of v[0], …, Σ lanes of v[3]]: three horizontal adds and one cross-half add instead of four
/// separate reductions.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum4(v: [__m256; 4]) -> __m128 {
    let s = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rmsnorm(x: *const f32, w: *const f32, eps: f32, weight_offset: f32, out: *mut f32, len: usize) {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= len {
        for (j, s) in acc.iter_mut().enumerate() {
            let v = _mm256_loadu_ps(x.add(i + 8 * j));
            *s = _mm256_fmadd_ps(v, v, *s);
        }
        i += 16;
    }
    while i + 8 <= len {
        let v = _mm256_loadu_ps(x.add(i));
        acc[0] = _mm256_fmadd_ps(v, v, acc[0]);
        i += 8;
    }
    if i < len {
        let v = _mm256_maskload_ps(x.add(i), tail_mask(len - i));
        acc[1] = _mm256_fmadd_ps(v, v, acc[1]);
    }
    let mean_sq = hsum(_mm256_add_ps(acc[0], acc[1])) / len as f32;
    let scale = _mm256_set1_ps(1.0 / (mean_sq + eps).sqrt());
    let off = _mm256_set1_ps(weight_offset);
    let mut i = 0;
    while i + 8 <= len {
        let g = _mm256_add_ps(_mm256_loadu_ps(w.add(i)), off);
        _mm256_storeu_ps(out.add(i), _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x.add(i)), scale), g));
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        let g = _mm256_add_ps(_mm256_maskload_ps(w.add(i), m), off);
        _mm256_maskstore_ps(out.add(i), m, _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(x.add(i), m), scale), g));
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn softmax(x: *mut f32, len: usize) {
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut mv = neg_inf;
    let mut i = 0;
    while i + 8 <= len {
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x.add(i)));
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        // Masked-off lanes load as 0, which must not win the maximum.
        mv = _mm256_max_ps(mv, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x.add(i), m), _mm256_castsi256_ps(m)));
    }
    let max = _mm256_set1_ps(hmax(mv));
    let mut sum = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= len {
        let e = exp(_mm256_sub_ps(_mm256_loadu_ps(x.add(i)), max));
        _mm256_storeu_ps(x.add(i), e);
        sum = _mm256_add_ps(sum, e);
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        let e = _mm256_and_ps(exp(_mm256_sub_ps(_mm256_maskload_ps(x.add(i), m), max)), _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(x.add(i), m, e);
        sum = _mm256_add_ps(sum, e);
    }
    let inv = _mm256_set1_ps(1.0 / hsum(sum));
    let mut i = 0;
    while i + 8 <= len {
        _mm256_storeu_ps(x.add(i), _mm256_mul_ps(_mm256_loadu_ps(x.add(i)), inv));
        i += 8;
    }
    if i < len {
        let m = tail_mask(len - i);
        _mm256_maskstore_ps(x.add(i), m, _mm256_mul_ps(_mm256_maskload_ps(x.add(i), m), inv));
    }
}

/// silu(x) = x / (1 + e^-x), as in the scalar reference.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu8(x: __m256) -> __m256 {
    let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// gelu_tanh(x) = x / (1 + e^-2y), y = sqrt(2/π)·(x + 0.044715·x³), as in the scalar reference.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_tanh8(x: __m256) -> __m256 {
    let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    let y = _mm256_mul_ps(_mm256_set1_ps(0.797_884_6), _mm256_fmadd_ps(_mm256_set1_ps(0.044_715), x3, x));
    let e = exp(_mm256_mul_ps(_mm256_set1_ps(-2.0), y));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// gate[i] = act(gate[i])·up[i] for an 8-lane activation `act`.
macro_rules! gated {
    ($name:ident, $act:ident) => {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name(gate: *mut f32, up: *const f32, len: usize) {
            let mut i = 0;
            while i + 8 <= len {
                let v = _mm256_mul_ps($act(_mm256_loadu_ps(gate.add(i))), _mm256_loadu_ps(up.add(i)));
                _mm256_storeu_ps(gate.add(i), v);
                i += 8;
            }
            if i < len {
                let m = tail_mask(len - i);
                let v = _mm256_mul_ps($act(_mm256_maskload_ps(gate.add(i), m)), _mm256_maskload_ps(up.add(i), m));
                _mm256_maskstore_ps(gate.add(i), m, v);
            }
        }
    };
}
gated!(silu_mul_ptr, silu8);
gated!(gelu_tanh_mul_ptr, gelu_tanh8);

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp` against f64 `exp` on every 97th f32 in [-87.3, 88.3] (~22 M values) and at the special inputs.
    #[test]
    fn exp_accuracy() {
        if kernels().is_none() {
            return;
        }
        let mut worst = 0.0f64;
        let mut bits = (-87.3f32).to_bits();
        let mut batch = Vec::with_capacity(8);
        let mut check = |xs: &[f32]| {
            let mut lanes = [0.0f32; 8];
            lanes[..xs.len()].copy_from_slice(xs);
            let mut ys = [0.0f32; 8];
            // SAFETY: kernels() returned Some, so this CPU has avx2 and fma.
            unsafe { _mm256_storeu_ps(ys.as_mut_ptr(), exp(_mm256_loadu_ps(lanes.as_ptr()))) };
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp();
                worst = worst.max((y as f64 - want).abs() / want);
            }
        };
        // Negative floats grow in magnitude with their bits: walk down from -87.3 to 0, then up to 88.3.
        while bits > 0x8000_0000 {
            batch.push(f32::from_bits(bits));
            if batch.len() == 8 {
                check(&batch);
                batch.clear();
            }
            bits = bits.saturating_sub(97).max(0x8000_0000);
        }
        let mut x = 0.0f32;
        while x < 88.3 {
            batch.push(x);
            if batch.len() == 8 {
                check(&batch);
                batch.clear();
            }
            x = f32::from_bits(x.to_bits() + 97);
        }
        check(&batch);
        // Measured: 1.39·2⁻²⁴.
        assert!(worst <= 1.5 / (1u64 << 24) as f64, "worst relative error {worst:e}");

        let special = [f32::NEG_INFINITY, -100.0, -87.4, 88.4, 100.0, f32::INFINITY, f32::NAN, 0.0];
        let mut ys = [0.0f32; 8];
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(ys.as_mut_ptr(), exp(_mm256_loadu_ps(special.as_ptr()))) };
        assert_eq!(ys[..6], [0.0, 0.0, 0.0, f32::INFINITY, f32::INFINITY, f32::INFINITY]);
        assert!(ys[6].is_nan());
        assert_eq!(ys[7], 1.0);
    }
}
