//! NEON paths of the quantized kernels, in two variants: "neon" for every aarch64 CPU, and
//! "neon-dotprod" for CPUs with the Armv8.2 dot-product instructions (Cortex-A55/A76 and later,
//! Neoverse, Apple M1 and later).
//!
//! The variants differ only in the integer dot product of 16 code pairs ([`IntDot`]): `sdot` multiplies
//! signed bytes and adds each group of 4 products into one of 4 i32 lanes; without it, `smull` makes
//! i16 products (at most 128·127 in magnitude, so exact) and `sadalp` adds neighbouring pairs of them
//! into the 4 i32 lanes. Either way the lanes hold exact integers below 2²⁴, converted to f32 exactly
//! and multiplied by the block's d_w·d_a into one accumulator per output, as on AVX2.
//!
//! A weight format ([`Format`]) says how to decode one of its blocks (once per tile row, for all the
//! tokens of the tile) and how to add the decoded block's products with an activation block to an
//! output's accumulator; the tiling and both dot-product variants are shared by every format.
//!
//! Every `unsafe fn` here may only run on a CPU with NEON, and the `Sdot` ones only with dotprod; the
//! only way in from outside is the [`QuantKernels`] tables that [`kernels`] returns after checking.

use std::arch::aarch64::*;
use std::arch::{asm, is_aarch64_feature_detected};

use super::{matmul_dims, BlockQ8, QuantKernels, QuantType, QK};

/// The NEON tables this CPU can run, slower first.
pub fn kernels() -> impl Iterator<Item = &'static QuantKernels> {
    let neon = is_aarch64_feature_detected!("neon");
    let dotprod = neon && is_aarch64_feature_detected!("dotprod");
    [neon.then_some(&NEON), dotprod.then_some(&NEON_DOTPROD)].into_iter().flatten()
}

static NEON: QuantKernels =
    QuantKernels { name: "neon", quantize_row: entry::quantize_row, matmul: entry::matmul::<Smull> };

static NEON_DOTPROD: QuantKernels =
    QuantKernels { name: "neon-dotprod", quantize_row: entry::quantize_row, matmul: entry::matmul::<Sdot> };

/// Safe entry points with the table's signatures: they check lengths, then call the vector code.
/// SAFETY (every call below): these functions are private and reachable only through `NEON` and
/// `NEON_DOTPROD`, which `kernels()` hands out only after `is_aarch64_feature_detected!` confirmed neon
/// (and dotprod for the `Sdot` variant); the pointer arguments come from slices whose lengths were
/// just checked.
mod entry {
    use super::*;

    pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
        assert_eq!(x.len(), out.len() * QK, "quantize_row: {} values for {} blocks", x.len(), out.len());
        // SAFETY: see module comment.
        unsafe { super::quantize_row(x.as_ptr(), out.as_mut_ptr(), out.len()) }
    }

    pub fn matmul<D: IntDot>(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
        if !matches!(ty, QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q8_0) {
            // No NEON kernel for the other formats yet: the scalar reference runs them (correct, slower).
            return crate::quant::scalar::matmul(ty, w, acts, out, k);
        }
        let (n, m) = matmul_dims(ty, w, acts, out, k);
        let (w, a, o, nb) = (w.as_ptr(), acts.as_ptr(), out.as_mut_ptr(), k / QK);
        // SAFETY: see module comment; matmul_dims checked w = m rows of k, acts = n rows, out = n·m.
        unsafe {
            match ty {
                QuantType::Q4_0 => D::matmul::<Q4_0>(w, a, o, n, nb, m),
                QuantType::Q4_1 => D::matmul::<Q4_1>(w, a, o, n, nb, m),
                QuantType::Q8_0 => D::matmul::<Q8_0>(w, a, o, n, nb, m),
                _ => unreachable!("formats without a NEON kernel returned above"),
            }
        }
    }
}

/// `scalar::quantize_block` on each of `nb` blocks, bit for bit: the same scale arithmetic in scalar
/// f32, the same products x·(1/d), rounding half to even (`fcvtns`) like `round_ties_even`.
#[target_feature(enable = "neon")]
unsafe fn quantize_row(x: *const f32, out: *mut BlockQ8, nb: usize) {
    let inf = vdupq_n_f32(f32::INFINITY);
    for b in 0..nb {
        let p = x.add(b * QK);
        let mut v = [vdupq_n_f32(0.0); QK / 4];
        let mut amax = vdupq_n_f32(0.0);
        // All ones while every |x| < inf, which is false for infinities and NaN.
        let mut finite = vdupq_n_u32(u32::MAX);
        for (j, v) in v.iter_mut().enumerate() {
            *v = vld1q_f32(p.add(4 * j));
            let a = vabsq_f32(*v);
            amax = vmaxq_f32(amax, a);
            finite = vandq_u32(finite, vcltq_f32(a, inf));
        }
        let o = out.add(b);
        if vminvq_u32(finite) == 0 {
            *o = BlockQ8 { d: f32::NAN, s: f32::NAN, qs: [0; QK] };
            continue;
        }
        let d = vmaxvq_f32(amax) / 127.0;
        if d < f32::MIN_POSITIVE {
            *o = BlockQ8::default();
            continue;
        }
        let id = vdupq_n_f32(1.0 / d);
        let mut sum = vdupq_n_s32(0);
        let mut q = [vdupq_n_s32(0); QK / 4];
        for (q, &v) in q.iter_mut().zip(&v) {
            *q = vcvtnq_s32_f32(vmulq_f32(v, id));
            sum = vaddq_s32(sum, *q);
        }
        // |codes| ≤ 127, so the saturating narrowings are exact.
        let qs = std::ptr::addr_of_mut!((*o).qs).cast::<i8>();
        for (half, q) in q.chunks_exact(4).enumerate() {
            let lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
            let hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
            vst1q_s8(qs.add(16 * half), vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
        }
        (*o).d = d;
        (*o).s = d * vaddvq_s32(sum) as f32;
    }
}

/// The integer dot product of the two variants, and the matmul compiled with the variant's features.
trait IntDot {
    /// acc plus the 16 products a[i]·b[i], each added to one of the 4 lanes (which one is up to the
    /// variant). Exact for codes in [−128, 127] × [−127, 127] while the lanes stay in i32.
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;

    /// [`matmul`] for weights of format F, in a function compiled with the features `dot` needs (the
    /// generic code below is inlined into it).
    unsafe fn matmul<F: Format>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize);
}

/// Base NEON: `smull`/`smull2` and `sadalp`.
struct Smull;

impl IntDot for Smull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }

    #[target_feature(enable = "neon")]
    unsafe fn matmul<F: Format>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize) {
        matmul::<F, Self>(w, a, out, n, nb, m)
    }
}

/// Armv8.2 dot product: `sdot`, through inline assembly because Rust's `vdotq_s32` is not stable yet.
struct Sdot;

impl IntDot for Sdot {
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn matmul<F: Format>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize) {
        matmul::<F, Self>(w, a, out, n, nb, m)
    }
}

/// One output's running sum: the per-lane products, and the terms kept apart from them (Q4_1's
/// m_w·s_a).
#[derive(Clone, Copy)]
struct Acc {
    lanes: float32x4_t,
    other: f32,
}

/// A weight block format as the kernels see it.
trait Format {
    const TYPE: QuantType;
    /// A decoded block, held in registers while it meets the activation blocks of a tile's tokens.
    type Block: Copy;
    /// Decodes the block at p.
    unsafe fn decode(p: *const u8) -> Self::Block;
    /// Adds the products of `w` with the activation block `a` to `acc`.
    unsafe fn accumulate<D: IntDot>(w: Self::Block, a: &BlockQ8, acc: &mut Acc);
}

/// A decoded block of 32 codes with one scale (the legacy formats): signed codes of elements 0..16
/// and 16..32 (Q4_0's offset of 8 applied), the scale d and the minimum m (0 but for Q4_1).
#[derive(Clone, Copy)]
struct Codes32 {
    lo: int8x16_t,
    hi: int8x16_t,
    d: f32,
    m: f32,
}

/// acc += (d_w·d_a)·(the 4 lanes of the codes' integer dot product), plus m_w·s_a when `MIN`; d_w·d_a
/// is the same f32 product as in the scalar reference.
#[inline(always)]
unsafe fn accumulate_codes32<D: IntDot, const MIN: bool>(w: Codes32, a: &BlockQ8, acc: &mut Acc) {
    let qs = a.qs.as_ptr();
    let isum = D::dot(D::dot(vdupq_n_s32(0), w.lo, vld1q_s8(qs)), w.hi, vld1q_s8(qs.add(16)));
    acc.lanes = vfmaq_f32(acc.lanes, vcvtq_f32_s32(isum), vdupq_n_f32(w.d * a.d));
    if MIN {
        acc.other += w.m * a.s;
    }
}

/// The 4 nibbles-as-bytes vectors of a Q4 block's 16 code bytes at p: element j is the low nibble of
/// byte j, element j + 16 its high nibble.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(p);
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// f32 lanes [h0, h1, 0, 0] of the f16s h0 (low half of `bits`) and h1 (high half), by `fcvtl`
/// (Armv8 base floating point; Rust's f16 intrinsics are not stable yet).
#[inline(always)]
unsafe fn f16_pair(bits: u32) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl {out:v}.4s, {h:v}.4h",
        h = in(vreg) u64::from(bits),
        out = lateout(vreg) out,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// The f16 at p as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    vgetq_lane_f32::<0>(f16_pair(u32::from(p.cast::<u16>().read_unaligned())))
}

struct Q4_0;
struct Q4_1;
struct Q8_0;

impl Format for Q4_0 {
    const TYPE: QuantType = QuantType::Q4_0;
    type Block = Codes32;

    #[inline(always)]
    unsafe fn decode(p: *const u8) -> Codes32 {
        let (lo, hi) = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        let (lo, hi) = (vsubq_s8(vreinterpretq_s8_u8(lo), eight), vsubq_s8(vreinterpretq_s8_u8(hi), eight));
        Codes32 { lo, hi, d: f16_at(p), m: 0.0 }
    }

    #[inline(always)]
    unsafe fn accumulate<D: IntDot>(w: Codes32, a: &BlockQ8, acc: &mut Acc) {
        accumulate_codes32::<D, false>(w, a, acc)
    }
}

impl Format for Q4_1 {
    const TYPE: QuantType = QuantType::Q4_1;
    type Block = Codes32;

    #[inline(always)]
    unsafe fn decode(p: *const u8) -> Codes32 {
        let (lo, hi) = nibbles(p.add(4));
        let dm = f16_pair(p.cast::<u32>().read_unaligned());
        Codes32 {
            lo: vreinterpretq_s8_u8(lo),
            hi: vreinterpretq_s8_u8(hi),
            d: vgetq_lane_f32::<0>(dm),
            m: vgetq_lane_f32::<1>(dm),
        }
    }

    #[inline(always)]
    unsafe fn accumulate<D: IntDot>(w: Codes32, a: &BlockQ8, acc: &mut Acc) {
        accumulate_codes32::<D, true>(w, a, acc)
    }
}

impl Format for Q8_0 {
    const TYPE: QuantType = QuantType::Q8_0;
    type Block = Codes32;

    #[inline(always)]
    unsafe fn decode(p: *const u8) -> Codes32 {
        let codes = p.add(2).cast::<i8>();
        Codes32 { lo: vld1q_s8(codes), hi: vld1q_s8(codes.add(16)), d: f16_at(p), m: 0.0 }
    }

    #[inline(always)]
    unsafe fn accumulate<D: IntDot>(w: Codes32, a: &BlockQ8, acc: &mut Acc) {
        accumulate_codes32::<D, false>(w, a, acc)
    }
}

/// Output rows per GEMV pass: one turn of the block loop serves 8 weight rows from one load of the
/// activation codes, with 8 accumulators in registers (NEON has 32).
const GEMV_ROWS: usize = 8;
/// Tokens per tile of the batched path: 4×2 tiles decode each weight block once for 2 tokens.
const TILE_TOKENS: usize = 2;
/// Tokens per sweep of the batched path: their activation blocks stay in L2 while each group of 4
/// weight rows, decoded once in L1, passes over them.
const TOKEN_BLOCK: usize = 32;

/// out[t·ldo + r] = Σ_b term(weight row r, activation row t) for r < R, t < T: the weight rows start at
/// `w`, `row_bytes` apart; the activation rows at `a`, `nb` blocks apart. Each weight block is decoded
/// once for all T tokens.
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline(always)]
unsafe fn tile<F: Format, D: IntDot, const R: usize, const T: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const BlockQ8,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[Acc { lanes: vdupq_n_f32(0.0), other: 0.0 }; T]; R];
    for b in 0..nb {
        for r in 0..R {
            let block = F::decode(w.add(r * row_bytes + b * F::TYPE.block_bytes()));
            for t in 0..T {
                F::accumulate::<D>(block, &*a.add(t * nb + b), &mut acc[r][t]);
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            *out.add(t * ldo + r) = vaddvq_f32(acc[r][t].lanes) + acc[r][t].other;
        }
    }
}

/// `tile` for r ≤ 4 weight rows and c ≤ 2 tokens.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_edge<F: Format, D: IntDot>(
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
        (4, 2) => tile::<F, D, 4, 2>(w, row_bytes, a, nb, out, ldo),
        (3, 2) => tile::<F, D, 3, 2>(w, row_bytes, a, nb, out, ldo),
        (2, 2) => tile::<F, D, 2, 2>(w, row_bytes, a, nb, out, ldo),
        (1, 2) => tile::<F, D, 1, 2>(w, row_bytes, a, nb, out, ldo),
        (4, 1) => tile::<F, D, 4, 1>(w, row_bytes, a, nb, out, ldo),
        (3, 1) => tile::<F, D, 3, 1>(w, row_bytes, a, nb, out, ldo),
        (2, 1) => tile::<F, D, 2, 1>(w, row_bytes, a, nb, out, ldo),
        (1, 1) => tile::<F, D, 1, 1>(w, row_bytes, a, nb, out, ldo),
        _ => unreachable!("quantized tile {r}×{c}"),
    }
}

/// out[t·m + o] for n activation rows of nb blocks at `a` and m weight rows of format F at `w`.
///
/// n = 1: GEMV_ROWS weight rows per pass over the activation row. n > 1: blocks of TOKEN_BLOCK tokens;
/// within one, each group of 4 weight rows sweeps the tokens TILE_TOKENS at a time.
#[inline(always)]
unsafe fn matmul<F: Format, D: IntDot>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize) {
    let row_bytes = nb * F::TYPE.block_bytes();
    if n == 1 {
        let mut o = 0;
        while o + GEMV_ROWS <= m {
            tile::<F, D, GEMV_ROWS, 1>(w.add(o * row_bytes), row_bytes, a, nb, out.add(o), 0);
            o += GEMV_ROWS;
        }
        while o < m {
            let r = (m - o).min(4);
            tile_edge::<F, D>(r, 1, w.add(o * row_bytes), row_bytes, a, nb, out.add(o), 0);
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
                tile_edge::<F, D>(r, c, w.add(o * row_bytes), row_bytes, a.add(t * nb), nb, out.add(t * m + o), m);
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

    /// `fcvtl` against the scalar conversion on every f16 (NaNs: the hardware quiets signalling ones,
    /// so only NaN-ness is compared).
    #[test]
    fn fcvtl_matches_scalar_conversion() {
        assert!(is_aarch64_feature_detected!("neon"));
        for h in 0..=u16::MAX {
            // SAFETY: this CPU has NEON (checked above).
            let got = unsafe { f16_at(h.to_le_bytes().as_ptr()) };
            let want = super::super::scalar::f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
        // The high half of a pair is the second lane (Q4_1's minimum).
        // SAFETY: as above.
        let pair = unsafe { f16_pair(0xC000_3C00) };
        // SAFETY: as above.
        assert_eq!(unsafe { (vgetq_lane_f32::<0>(pair), vgetq_lane_f32::<1>(pair)) }, (1.0, -2.0));
    }

    /// Every variant the CPU supports is in `paths()`, and so under the tests that compare each path
    /// with the scalar reference. CI runs the tests under qemu's `max` CPU, which has dotprod, with
    /// LOWBIT_REQUIRE_DOTPROD set, so a change of emulated CPU cannot silently drop the `sdot` variant.
    #[test]
    fn every_variant_is_registered() {
        let dotprod = is_aarch64_feature_detected!("dotprod");
        if std::env::var_os("LOWBIT_REQUIRE_DOTPROD").is_some() {
            assert!(dotprod, "LOWBIT_REQUIRE_DOTPROD is set but this CPU has no dotprod");
        }
        let names: Vec<&str> = super::super::paths().iter().map(|k| k.name).collect();
        let want: &[&str] = if dotprod { &["scalar", "neon", "neon-dotprod"] } else { &["scalar", "neon"] };
        assert_eq!(names, want);
    }
}
