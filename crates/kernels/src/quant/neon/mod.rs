//! NEON paths of the quantized kernels, for every weight format, in two variants: "neon" for every
//! aarch64 CPU, and "neon-dotprod" for CPUs with the Armv8.2 dot-product instructions (Cortex-A55/A76
//! and later, Neoverse, Apple M1 and later, Oryon).
//!
//! Built as the AVX2 path is: [`format`] unpacks each 32-element piece of a weight block into signed
//! int8 codes and its scales (the integers and floats of `scalar::piece`), and the one core of
//! [`kernel`] multiplies unpacked pieces with activation blocks, for every format and both variants.
//!
//! The variants differ only in the integer dot product of 16 code pairs ([`IntDot`]): `sdot` multiplies
//! signed bytes and adds each group of 4 products into one of 4 i32 lanes; without it, `smull` makes
//! i16 products (at most 128·127 in magnitude, so exact) and `sadalp` adds neighbouring pairs of them
//! into the 4 i32 lanes. Either way the lanes hold exact integers below 2²⁴ (times a half-piece scale:
//! at most 2·4·32·127·128 for Q6_K), converted to f32 exactly and multiplied by the piece's d_w·d_a.
//!
//! Every `unsafe fn` here may only run on a CPU with NEON, and the `Sdot` ones only with dotprod; the
//! only way in from outside is the [`QuantKernels`] tables that [`kernels`] returns after checking.

mod format;
mod kernel;

use std::arch::aarch64::*;
use std::arch::is_aarch64_feature_detected;

use super::{matmul_dims, BlockQ8, QuantKernels, QuantType, QK};
use crate::arm::int_dot::{IntDot, Sdot, Smull};
use format::*;

/// The NEON tables this CPU can run, slower first.
pub fn kernels() -> impl Iterator<Item = &'static QuantKernels> {
    let neon = is_aarch64_feature_detected!("neon");
    let dotprod = neon && is_aarch64_feature_detected!("dotprod");
    [neon.then_some(&NEON), dotprod.then_some(&NEON_DOTPROD)].into_iter().flatten()
}

// Split MXFP4 (GPT-OSS's experts) has no NEON kernel yet: those tables carry the scalar reference.
static NEON: QuantKernels = QuantKernels {
    name: "neon",
    quantize_row: entry::quantize_row,
    matmul: entry::matmul::<Smull>,
    matmul_split_mxfp4: super::split_mxfp4::matmul_scalar,
};

static NEON_DOTPROD: QuantKernels = QuantKernels {
    name: "neon-dotprod",
    quantize_row: entry::quantize_row,
    matmul: entry::matmul::<Sdot>,
    matmul_split_mxfp4: super::split_mxfp4::matmul_scalar,
};

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

    pub fn matmul<D: VariantMatmul>(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
        let (n, m) = matmul_dims(ty, w, acts, out, k);
        let (w, a, o, nb) = (w.as_ptr(), acts.as_ptr(), out.as_mut_ptr(), k / QK);
        // SAFETY: see module comment; matmul_dims checked w = m rows of k, acts = n rows, out = n·m.
        unsafe {
            match ty {
                QuantType::Q4_0 => D::matmul::<Q4_0>(w, a, o, n, nb, m),
                QuantType::Q4_1 => D::matmul::<Q4_1>(w, a, o, n, nb, m),
                QuantType::Q5_0 => D::matmul::<Q5_0>(w, a, o, n, nb, m),
                QuantType::Q5_1 => D::matmul::<Q5_1>(w, a, o, n, nb, m),
                QuantType::Q8_0 => D::matmul::<Q8_0>(w, a, o, n, nb, m),
                QuantType::Q2K => D::matmul::<Q2K>(w, a, o, n, nb, m),
                QuantType::Q3K => D::matmul::<Q3K>(w, a, o, n, nb, m),
                QuantType::Q4K => D::matmul::<Q4K>(w, a, o, n, nb, m),
                QuantType::Q5K => D::matmul::<Q5K>(w, a, o, n, nb, m),
                QuantType::Q6K => D::matmul::<Q6K>(w, a, o, n, nb, m),
                QuantType::TQ1_0 => D::matmul::<TQ1_0>(w, a, o, n, nb, m),
                QuantType::TQ2_0 => D::matmul::<TQ2_0>(w, a, o, n, nb, m),
                QuantType::MXFP4 => D::matmul::<MXFP4>(w, a, o, n, nb, m),
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

/// [`kernel::matmul`] for weights of format F, in a function compiled with the features the variant's
/// `dot` needs so that it inlines into the shared core (`target_feature` cannot depend on a type
/// parameter, hence one such shim per variant).
trait VariantMatmul: IntDot {
    unsafe fn matmul<F: Format>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize);
}

impl VariantMatmul for Smull {
    #[target_feature(enable = "neon")]
    unsafe fn matmul<F: Format>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize) {
        kernel::matmul::<F, Self>(w, a, out, n, nb, m)
    }
}

impl VariantMatmul for Sdot {
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn matmul<F: Format>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, nb: usize, m: usize) {
        kernel::matmul::<F, Self>(w, a, out, n, nb, m)
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
        let names: Vec<&str> = super::super::paths().iter().map(|k| k.name).collect();
        crate::arm::int_dot::assert_every_variant(&names);
    }
}
