//! The int8 dot product of 16 code pairs in the two NEON variants the int8 kernels come in: [`Smull`]
//! for every aarch64 CPU and [`Sdot`] for CPUs with the Armv8.2 dot-product instructions (Cortex-A55/A76
//! and later, Neoverse, Apple M1 and later). A kernel is written once, generic over [`IntDot`], and
//! compiled once per variant inside a function that enables the variant's features.

use std::arch::aarch64::*;
use std::arch::asm;

/// One variant's integer dot product.
pub trait IntDot {
    /// acc plus the 16 products a[i]·b[i], each added to one of the 4 lanes (which one is up to the
    /// variant). Exact for codes in [−128, 127] × [−127, 127] while the lanes stay in i32.
    ///
    /// # Safety
    /// The CPU must have the variant's features (neon; and dotprod for [`Sdot`]).
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Base NEON: `smull`/`smull2` make i16 products (at most 128·127 in magnitude, so exact) and `sadalp`
/// adds neighbouring pairs of them into the i32 lanes.
pub struct Smull;

impl IntDot for Smull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Armv8.2 dot product: `sdot` adds each group of 4 products into one lane, through inline assembly
/// because Rust's `vdotq_s32` is not stable.
pub struct Sdot;

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
}

/// The path names an int8 kernel family (quant, group) must list on this CPU: scalar, neon, and
/// neon-dotprod where the CPU has dotprod. With LOWBIT_REQUIRE_DOTPROD set (CI, under qemu's `max`
/// CPU) a missing dotprod fails, so a change of emulated CPU cannot silently drop the `sdot` variant.
#[cfg(test)]
pub(crate) fn assert_every_variant(names: &[&str]) {
    let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    if std::env::var_os("LOWBIT_REQUIRE_DOTPROD").is_some() {
        assert!(dotprod, "LOWBIT_REQUIRE_DOTPROD is set but this CPU has no dotprod");
    }
    let want: &[&str] = if dotprod { &["scalar", "neon", "neon-dotprod"] } else { &["scalar", "neon"] };
    assert_eq!(names, want);
}
