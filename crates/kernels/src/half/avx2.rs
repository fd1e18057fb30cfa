//! AVX2 + FMA + F16C path. Every `unsafe fn` is compiled with those features and reachable only
//! through the table [`kernels`] returns after checking the CPU has them.

use std::arch::x86_64::*;

use super::{scalar, HalfKernels, HalfType};
use crate::x86::avx2::hsum;

pub fn kernels() -> Option<&'static HalfKernels> {
    let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    ok.then_some(&AVX2)
}

static AVX2: HalfKernels = HalfKernels { name: "avx2", widen: entry::widen, gemv: entry::gemv };

/// SAFETY (every call below): reachable only through `AVX2`, handed out after feature detection; the
/// pointers come from slices whose lengths were just checked.
mod entry {
    use super::*;

    pub fn widen(ty: HalfType, w: &[u16], out: &mut [f32]) {
        assert_eq!(w.len(), out.len(), "widen: length mismatch");
        let body = w.len() / 8 * 8;
        // SAFETY: see module comment; reads and writes stay below `body`.
        unsafe {
            for i in (0..body).step_by(8) {
                _mm256_storeu_ps(out.as_mut_ptr().add(i), load8(ty, w.as_ptr().add(i)));
            }
        }
        scalar::widen(ty, &w[body..], &mut out[body..]);
    }

    pub fn gemv(ty: HalfType, x: &[f32], w: &[u16], out: &mut [f32]) {
        let k = x.len();
        assert_eq!(w.len(), out.len() * k, "gemv: w has {} weights, want {}×{k}", w.len(), out.len());
        let body = out.len() / 4 * 4;
        for o in (0..body).step_by(4) {
            // SAFETY: see module comment; rows o..o+4 lie inside w.
            let sums = unsafe { gemv4(ty, x.as_ptr(), w.as_ptr().add(o * k), k) };
            out[o..o + 4].copy_from_slice(&sums);
        }
        scalar::gemv(ty, x, &w[body * k..], &mut out[body..]);
    }
}

/// Eight weights widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(ty: HalfType, p: *const u16) -> __m256 {
    let h = _mm_loadu_si128(p as *const __m128i);
    match ty {
        HalfType::F16 => _mm256_cvtph_ps(h),
        HalfType::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h))),
    }
}

/// Four rows of k weights (at w, row stride k) times x: one load of x feeds four rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv4(ty: HalfType, x: *const f32, w: *const u16, k: usize) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    let body = k / 8 * 8;
    for i in (0..body).step_by(8) {
        let xv = _mm256_loadu_ps(x.add(i));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(load8(ty, w.add(r * k + i)), xv, *a);
        }
    }
    let mut sums = acc.map(|a| hsum(a));
    for i in body..k {
        for (r, s) in sums.iter_mut().enumerate() {
            *s += ty.to_f32(*w.add(r * k + i)) * *x.add(i);
        }
    }
    sums
}
