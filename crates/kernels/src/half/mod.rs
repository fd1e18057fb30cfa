//! Matrix products with 16-bit float weights (IEEE f16 or bfloat16) and f32 activations: the FP16/BF16
//! runtime, the speed baseline quantized formats are compared with.
//!
//! Decode (n = 1) is a GEMV that widens each weight as it is read, so it streams half the bytes of
//! f32. Prefill (n > 1) widens the weights a slab of rows at a time into a scratch buffer and hands
//! each slab to [`crate::matmul_f32`]: compute dominates there, and the f32 kernels are the fast
//! ones; a slab is small enough to stay in cache, so the matrix is never held in f32 as a whole.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::{matmul_f32, parallel_chunks_mut, threads};

/// The 16-bit float format of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HalfType {
    /// IEEE 754 binary16.
    F16,
    /// bfloat16: the top half of an f32.
    BF16,
}

impl HalfType {
    pub const ALL: [HalfType; 2] = [HalfType::F16, HalfType::BF16];

    pub const fn name(self) -> &'static str {
        match self {
            HalfType::F16 => "F16",
            HalfType::BF16 => "BF16",
        }
    }

    /// The f32 value of one stored weight (exact: both formats are subsets of f32).
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            HalfType::F16 => crate::quant::scalar::f16_to_f32(bits),
            HalfType::BF16 => f32::from_bits(u32::from(bits) << 16),
        }
    }
}

/// One instruction-set path. Each entry computes what the same-named function in [`scalar`] computes:
/// `widen` exactly, `gemv` up to the order of its float additions.
#[derive(Clone, Copy)]
pub struct HalfKernels {
    /// "scalar", "avx2", "neon".
    pub name: &'static str,
    /// out[i] = w[i] as f32.
    pub widen: fn(ty: HalfType, w: &[u16], out: &mut [f32]),
    /// Single-threaded out[o] = Σ_i x[i]·W[o, i] for W = `w`, out.len() rows of k = x.len().
    pub gemv: fn(ty: HalfType, x: &[f32], w: &[u16], out: &mut [f32]),
}

pub static SCALAR: HalfKernels = HalfKernels { name: "scalar", widen: scalar::widen, gemv: scalar::gemv };

/// The fastest path this CPU supports, detected on first use.
pub fn active() -> &'static HalfKernels {
    static ACTIVE: OnceLock<&'static HalfKernels> = OnceLock::new();
    ACTIVE.get_or_init(|| paths().last().copied().unwrap_or(&SCALAR))
}

/// Every path this CPU can run, scalar first.
pub fn paths() -> Vec<&'static HalfKernels> {
    #[cfg(target_arch = "x86_64")]
    let simd = avx2::kernels();
    #[cfg(target_arch = "aarch64")]
    let simd = neon::kernels();
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let simd = None;
    std::iter::once(&SCALAR).chain(simd).collect()
}

/// Below this many weight bytes a decode GEMV runs on the calling thread (as for the other formats:
/// ~6 µs at one core's bandwidth, about what waking the other threads costs).
const PAR_MIN_BYTES: usize = 64 * 1024;

/// Weight rows widened per slab in prefill: 64 rows of up to a few thousand columns is well under a
/// megabyte of f32, so the slab stays in L2 while every token multiplies it.
const SLAB_ROWS: usize = 64;

/// out[t·m + o] = Σ_i x[t·k + i]·W[o, i] — x: [n, k] f32, w: [m, k] 16-bit floats, out: [n, m].
/// Panics if a slice length does not match n, k, m.
pub fn matmul_half(ty: HalfType, x: &[f32], w: &[u16], out: &mut [f32], n: usize, k: usize, m: usize) {
    assert_eq!(x.len(), n * k, "matmul_half: x has {} elements, want {n}×{k}", x.len());
    assert_eq!(w.len(), m * k, "matmul_half: w has {} elements, want {m}×{k}", w.len());
    assert_eq!(out.len(), n * m, "matmul_half: out has {} elements, want {n}×{m}", out.len());
    if out.is_empty() {
        return;
    }
    let kern = active();
    if n == 1 {
        if threads() == 1 || w.len() * 2 < PAR_MIN_BYTES {
            return (kern.gemv)(ty, x, w, out);
        }
        // About four chunks per thread, whole 4-row groups (the SIMD GEMVs' unit).
        let rows = m.div_ceil(4 * threads()).next_multiple_of(4);
        return parallel_chunks_mut(out, rows, &|i, part| {
            (kern.gemv)(ty, x, &w[i * rows * k..][..part.len() * k], part)
        });
    }
    thread_local! {
        static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    // Nothing run while the buffers are borrowed calls back into user code, so the borrow is free.
    SCRATCH.with_borrow_mut(|(slab, part)| {
        for r0 in (0..m).step_by(SLAB_ROWS) {
            let rows = SLAB_ROWS.min(m - r0);
            slab.resize(rows * k, 0.0);
            part.resize(n * rows, 0.0);
            (kern.widen)(ty, &w[r0 * k..][..rows * k], slab);
            matmul_f32(x, slab, part, n, k, rows);
            for (dst, src) in out.chunks_exact_mut(m).zip(part.chunks_exact(rows)) {
                dst[r0..r0 + rows].copy_from_slice(src);
            }
        }
    })
}
