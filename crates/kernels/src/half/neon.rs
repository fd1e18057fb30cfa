//! NEON path. Every `unsafe fn` is compiled with `neon` and reachable only through the table
//! [`kernels`] returns after checking the CPU has it.
//!
//! F16 widens with `fcvtl`/`fcvtl2` (base Armv8 floating point, exact) through inline assembly: Rust's
//! `float16x4_t` and `vcvt_f32_f16` are unstable in the crate's minimum Rust (1.87) and are gated on
//! the `fp16` feature (half-precision arithmetic), which the conversion does not need. BF16 widens with
//! `shll #16`, the top half of an f32.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{scalar, HalfKernels, HalfType};

pub fn kernels() -> Option<&'static HalfKernels> {
    std::arch::is_aarch64_feature_detected!("neon").then_some(&NEON)
}

static NEON: HalfKernels = HalfKernels { name: "neon", widen: entry::widen, gemv: entry::gemv };

/// SAFETY (every call below): reachable only through `NEON`, handed out after feature detection; the
/// pointers come from slices whose lengths were just checked.
mod entry {
    use super::*;

    pub fn widen(ty: HalfType, w: &[u16], out: &mut [f32]) {
        assert_eq!(w.len(), out.len(), "widen: length mismatch");
        let body = w.len() / 8 * 8;
        // SAFETY: see module comment; reads and writes stay below `body`.
        unsafe {
            for i in (0..body).step_by(8) {
                let (lo, hi) = load8(ty, w.as_ptr().add(i));
                vst1q_f32(out.as_mut_ptr().add(i), lo);
                vst1q_f32(out.as_mut_ptr().add(i + 4), hi);
            }
        }
        scalar::widen(ty, &w[body..], &mut out[body..]);
    }

    pub fn gemv(ty: HalfType, x: &[f32], w: &[u16], out: &mut [f32]) {
        let k = x.len();
        assert_eq!(w.len(), out.len() * k, "gemv: w has {} weights, want {}×{k}", w.len(), out.len());
        let (x, w) = (x.as_ptr(), w.as_ptr());
        let body = out.len() / 4 * 4;
        for o in (0..body).step_by(4) {
            // SAFETY: see module comment; rows o..o+4 lie inside w.
            out[o..o + 4].copy_from_slice(&unsafe { gemv_rows::<4>(ty, x, w.add(o * k), k) });
        }
        for (o, y) in out.iter_mut().enumerate().skip(body) {
            // SAFETY: as above, for row o.
            *y = unsafe { gemv_rows::<1>(ty, x, w.add(o * k), k) }[0];
        }
    }
}

/// Eight weights widened to f32 (elements 0..4, 4..8).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load8(ty: HalfType, p: *const u16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p);
    match ty {
        HalfType::F16 => {
            let (lo, hi): (float32x4_t, float32x4_t);
            asm!(
                "fcvtl {lo:v}.4s, {h:v}.4h",
                "fcvtl2 {hi:v}.4s, {h:v}.8h",
                h = in(vreg) h,
                // `out`, not `lateout`: h is read again after lo is written.
                lo = out(vreg) lo,
                hi = lateout(vreg) hi,
                options(pure, nomem, nostack, preserves_flags)
            );
            (lo, hi)
        }
        HalfType::BF16 => (
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
        ),
    }
}

/// R rows of k weights (at w, row stride k) times x: one load of x feeds R rows, each with two
/// accumulators (2R FMA chains: 8 for R = 4, enough to cover the FMA latency of the cores' 4 pipes
/// while the widening takes the other half of the issue slots).
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline]
#[target_feature(enable = "neon")]
unsafe fn gemv_rows<const R: usize>(ty: HalfType, x: *const f32, w: *const u16, k: usize) -> [f32; R] {
    let mut acc = [[vdupq_n_f32(0.0); 2]; R];
    let body = k / 8 * 8;
    for i in (0..body).step_by(8) {
        let (x0, x1) = (vld1q_f32(x.add(i)), vld1q_f32(x.add(i + 4)));
        for r in 0..R {
            let (w0, w1) = load8(ty, w.add(r * k + i));
            acc[r][0] = vfmaq_f32(acc[r][0], w0, x0);
            acc[r][1] = vfmaq_f32(acc[r][1], w1, x1);
        }
    }
    let mut sums = [0.0; R];
    for r in 0..R {
        sums[r] = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1]));
        for i in body..k {
            sums[r] += ty.to_f32(*w.add(r * k + i)) * *x.add(i);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    /// The NEON path is in `paths()`, and so under the tests that compare each path with the reference.
    #[test]
    fn neon_is_registered() {
        let names: Vec<&str> = super::super::paths().iter().map(|k| k.name).collect();
        assert_eq!(names, ["scalar", "neon"]);
    }
}
