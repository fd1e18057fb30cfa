//! The kernel table: one set of function pointers per instruction-set path, chosen once per process
//! from what the CPU reports at run time (never from compile-time target features, so one binary is
//! fast on AVX2 machines and correct on any x86-64 or aarch64).

use std::sync::OnceLock;

/// One instruction-set path. Every entry computes what the same-named function in [`crate::scalar`]
/// computes, up to summation order and the accuracy of `exp`.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Short name of the path, for logs and benchmarks ("scalar", "avx2", "neon").
    pub name: &'static str,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    pub axpy_f32: fn(f32, &[f32], &mut [f32]),
    /// Single-threaded `out[t·m + o] = Σ_i x[t·k + i]·w[o·k + i]`, n = x.len()/k, m = w.len()/k;
    /// the public `matmul_f32` splits work across threads and calls this on each piece.
    pub matmul_f32: fn(x: &[f32], w: &[f32], out: &mut [f32], k: usize),
    /// One row of RMSNorm: `out = x / sqrt(mean(x²) + eps) · (w + weight_offset)`.
    pub rmsnorm_row: fn(x: &[f32], w: &[f32], eps: f32, weight_offset: f32, out: &mut [f32]),
    pub softmax_inplace: fn(&mut [f32]),
    pub silu_mul: fn(&mut [f32], &[f32]),
    pub gelu_tanh_mul: fn(&mut [f32], &[f32]),
}

pub static SCALAR: Kernels = Kernels {
    name: "scalar",
    dot_f32: crate::scalar::dot_f32,
    axpy_f32: crate::scalar::axpy_f32,
    matmul_f32: crate::scalar::matmul_f32,
    rmsnorm_row: crate::scalar::rmsnorm_row,
    softmax_inplace: crate::scalar::softmax_inplace,
    silu_mul: crate::scalar::silu_mul,
    gelu_tanh_mul: crate::scalar::gelu_tanh_mul,
};

/// The fastest path this CPU supports, detected on first use.
pub fn active() -> &'static Kernels {
    static ACTIVE: OnceLock<&'static Kernels> = OnceLock::new();
    ACTIVE.get_or_init(|| paths().last().copied().unwrap_or(&SCALAR))
}

/// Every path this CPU can run, slowest (scalar) first; tests compare each against the first.
pub fn paths() -> Vec<&'static Kernels> {
    let mut v = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = crate::x86::avx2::kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = crate::arm::neon::kernels() {
        v.push(k);
    }
    v
}

/// Checks the shapes of a `Kernels::matmul_f32` call and returns (n, m).
pub(crate) fn matmul_dims(x: &[f32], w: &[f32], out: &[f32], k: usize) -> (usize, usize) {
    assert!(k > 0, "matmul_f32: k must be positive");
    assert!(
        x.len().is_multiple_of(k) && w.len().is_multiple_of(k),
        "matmul_f32: x ({}) and w ({}) not multiples of k = {k}",
        x.len(),
        w.len()
    );
    let (n, m) = (x.len() / k, w.len() / k);
    assert_eq!(out.len(), n * m, "matmul_f32: out has {} elements, want {n}×{m}", out.len());
    (n, m)
}
