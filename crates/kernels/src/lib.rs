//! CPU kernels for lowbit: f32 matmul/GEMV, norms, softmax and gated activations.
//!
//! Each kernel exists as a scalar reference ([`scalar`], the specification) and as SIMD paths
//! (`x86::avx2`, `arm::neon`), collected in one [`dispatch::Kernels`] table per path. The table is
//! chosen once from run-time CPU detection; the functions at the crate root go through it and add
//! threading where it pays (the n = 1 GEMV of decode, and prefill matmuls).

#[cfg(target_arch = "aarch64")]
pub mod arm;
pub mod dispatch;
pub mod group;
pub mod half;
mod pool;
pub mod quant;
pub mod scalar;
pub mod ternary;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use pool::{parallel_chunks_mut, parallel_for, set_threads, threads};

/// Below this many weights (m·k) a decode GEMV runs on the calling thread: at ~10 GB/s per core it
/// takes ~10 µs, and splitting it would save less than waking the other threads costs.
const PAR_MIN_WEIGHTS: usize = 32 * 1024;

/// out[t·m + o] = Σ_i x[t·k + i]·w[o·k + i] — x: [n, k] row-major activations, w: [m, k] row-major
/// weights (PyTorch Linear layout), out: [n, m]. Accumulates in f32.
///
/// n = 1 (decode) is a GEMV bound by memory bandwidth: the rows of w are split across threads in
/// chunks. 1 < n < [`GEMM_MIN_ROWS`] splits the rows of x across threads, each thread going over all
/// of w in cache-sized blocks. Larger n goes to the `gemm` crate, which packs panels of w as it goes.
/// No path copies or transposes all of w.
///
/// Panics if a slice length does not match n, k, m.
pub fn matmul_f32(x: &[f32], w: &[f32], out: &mut [f32], n: usize, k: usize, m: usize) {
    if trivial_matmul(x, w, out, n, k, m) {
        return;
    }
    let kern = dispatch::active().matmul_f32;
    let threads = threads();
    if n == 1 {
        if threads == 1 || m * k < PAR_MIN_WEIGHTS {
            return kern(x, w, out, k);
        }
        // About four chunks per thread so a thread that loses its core is covered by the others;
        // chunks are whole 4-row groups, the unit of the GEMV kernel.
        let rows = m.div_ceil(4 * threads).next_multiple_of(4);
        parallel_chunks_mut(out, rows, &|i, part| kern(x, &w[i * rows * k..][..part.len() * k], part, k));
    } else if n < GEMM_MIN_ROWS {
        // One chunk of x rows per thread: each chunk reads all of w, so more chunks would mean more
        // passes over w (671 MB for Gemma 3's lm_head).
        let rows = n.div_ceil(threads);
        parallel_chunks_mut(out, rows * m, &|i, part| kern(&x[i * rows * k..][..part.len() / m * k], w, part, k));
    } else {
        gemm_f32(x, w, out, n, k, m, threads);
    }
}

/// From this many rows of x on, `matmul_f32` uses the `gemm` crate. Measured with benches/matmul.rs
/// on 2 threads (EPYC, AVX2), w 1536×576: with few rows the tile kernel wins because gemm packs w on
/// every call (2.1× faster at 16 rows, 14% at 64, 4% at 128); from 256 rows on, and on Gemma 3's
/// 262144×640 lm_head at 512 rows, the two are even (±3%) on an idle machine, while with other
/// processes competing for the cores gemm's finer work split (rayon) kept it 5–15% ahead.
pub const GEMM_MIN_ROWS: usize = 128;

/// [`matmul_f32`] through the `gemm` crate whatever n: the path it takes from [`GEMM_MIN_ROWS`] rows on,
/// for benches/matmul.rs to time against the tile kernel that the threshold was set by.
///
/// Panics if a slice length does not match n, k, m.
pub fn matmul_f32_gemm(x: &[f32], w: &[f32], out: &mut [f32], n: usize, k: usize, m: usize) {
    if !trivial_matmul(x, w, out, n, k, m) {
        gemm_f32(x, w, out, n, k, m, threads());
    }
}

/// Checks the slice lengths of a matmul (panics if one does not match n, k, m) and says whether it is
/// already done: out is empty, or k = 0 and out has been zeroed.
fn trivial_matmul(x: &[f32], w: &[f32], out: &mut [f32], n: usize, k: usize, m: usize) -> bool {
    assert_eq!(x.len(), n * k, "matmul_f32: x has {} elements, want {n}×{k}", x.len());
    assert_eq!(w.len(), m * k, "matmul_f32: w has {} elements, want {m}×{k}", w.len());
    assert_eq!(out.len(), n * m, "matmul_f32: out has {} elements, want {n}×{m}", out.len());
    if k == 0 {
        out.fill(0.0);
    }
    out.is_empty() || k == 0
}

/// The `gemm` crate on our layout: x is its row-major lhs, and w, read with row stride 1 and column
/// stride k, is its rhs wᵀ (k×m) without a copy. It dispatches on CPU features at run time itself.
/// The caller has checked the slice lengths (`trivial_matmul`).
fn gemm_f32(x: &[f32], w: &[f32], out: &mut [f32], n: usize, k: usize, m: usize, threads: usize) {
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the caller checked x.len() = n·k, w.len() = m·k, out.len() = n·m; with the strides below
    // gemm reads x[t·k + i], w[o·k + i] and writes out[t·m + o] for t < n, i < k, o < m only.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            out.as_mut_ptr(),
            1,
            m as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Σ a[i]·b[i]. Panics if the lengths differ.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    (dispatch::active().dot_f32)(a, b)
}

/// y += alpha·x. Panics if the lengths differ.
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    (dispatch::active().axpy_f32)(alpha, x, y)
}

/// y += Σ_j c[j]·rows[j], the rows of `rows` (`c.len()` rows of `y.len()`) taken in order (attention's weighted
/// sum of values). Panics on mismatched lengths.
pub fn add_weighted_rows(c: &[f32], rows: &[f32], y: &mut [f32]) {
    assert_eq!(
        rows.len(),
        c.len() * y.len(),
        "add_weighted_rows: {} values are not {} rows of {}",
        rows.len(),
        c.len(),
        y.len()
    );
    let axpy = dispatch::active().axpy_f32;
    for (&c, row) in c.iter().zip(rows.chunks_exact(y.len().max(1))) {
        axpy(c, row, y);
    }
}

/// RMSNorm of each row of x (rows of width w.len()): out = x / sqrt(mean(x²) + eps) · (w + weight_offset).
/// weight_offset is 0 for Llama-family models and 1 for Gemma, which stores its norm weights as w − 1.
///
/// Panics if w is empty, out.len() != x.len(), or x.len() is not a multiple of w.len().
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, weight_offset: f32, out: &mut [f32]) {
    assert!(!w.is_empty(), "rmsnorm: empty weight");
    assert!(x.len().is_multiple_of(w.len()), "rmsnorm: x has {} elements, not rows of {}", x.len(), w.len());
    assert_eq!(out.len(), x.len(), "rmsnorm: out and x differ in length");
    let row = dispatch::active().rmsnorm_row;
    for (xr, or) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        row(xr, w, eps, weight_offset, or);
    }
}

/// x = softmax(x), computed as exp(x − max) / Σ exp(x − max); −inf entries become 0.
pub fn softmax_inplace(x: &mut [f32]) {
    (dispatch::active().softmax_inplace)(x)
}

/// gate = silu(gate)·up (the Llama MLP). Panics if the lengths differ.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    (dispatch::active().silu_mul)(gate, up)
}

/// gate = gelu_tanh(gate)·up (Gemma's MLP, `gelu_pytorch_tanh`). Panics if the lengths differ.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    (dispatch::active().gelu_tanh_mul)(gate, up)
}
