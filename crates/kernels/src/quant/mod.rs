//! Matrix products with weights kept in GGUF's block formats ([`QuantType`]: the legacy Q4_0…Q8_0, the
//! k-quants Q2_K…Q6_K, the ternary TQ1_0/TQ2_0 and MXFP4), llama.cpp's method: the activation rows are
//! quantized once per matmul into int8 blocks of 32 ([`BlockQ8`]) in a reusable buffer
//! ([`QuantizedActs`]), then every output is a sum of integer dot products (exact in i32) times float
//! scales.
//!
//! As for the f32 kernels, [`scalar`] is the specification and each SIMD path in the [`QuantKernels`]
//! table (chosen once from run-time CPU detection) computes the same integer dot products; only the
//! order in which the float terms are added differs (see [`scalar::matmul`]).
//!
//! Activation blocks carry their own f32 scale `d` (llama.cpp's `block_q8_0` has an f16 one) and the
//! sum `s = d·Σq` of their codes (`block_q8_1`'s), which turns the minimum terms of Q4_1, Q5_1, Q4_K and
//! Q5_K into one multiply-add per 32 values instead of a second pass over the codes.
//!
//! One activation format serves every weight format, the 256-element super-blocks included (llama.cpp
//! quantizes activations for those to `block_q8_K`: one f32 scale per 256 codes, plus sums per 16).
//! Why blocks of 32 here:
//! - one quantization of a layer input serves every matrix reading it, whatever their formats, and
//!   llama.cpp's own mixes put different formats on one input (Q4_K_M: Q4_K or Q5_0 for q/k, Q6_K or
//!   Q8_0 for v; on SmolLM2, whose 576 columns are not whole super-blocks, Q5_0 next to Q4_K/Q6_K);
//! - a scale per 32 follows activation outliers more closely than one per 256;
//! - the price, one float multiply-add per 32 products instead of per 256, is small against the integer
//!   work in the batched kernels (see `avx2`), which accumulate 8 weight rows per register and convert
//!   once per 32-element piece either way; decode is bound by reading weights from memory.
//!
//! [`ActRounding::LlamaCpp`] rounds them as llama.cpp does instead (one scale shared by the eight blocks
//! of a super-block), so that lowbit reproduces llama.cpp's figures on the same file when they are compared.

pub mod scalar;
pub mod split_mxfp4;
mod types;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use types::{QuantType, QK, QK_K};

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::{parallel_chunks_mut, threads};

/// One block of 32 quantized activations: x[i] ≈ d·qs[i], with qs in [−127, 127] (never −128: the
/// Q8_0 kernels negate activation codes) and s = d·Σ qs. Made by [`scalar::quantize_block`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ8 {
    /// Scale: max |x| / 127; 0 for a block of zeros (or of values too small to scale, below
    /// `f32::MIN_POSITIVE`·127); NaN when the block holds an infinity or NaN.
    pub d: f32,
    /// d·Σ qs (exact sum, one rounding).
    pub s: f32,
    pub qs: [i8; QK],
}

/// One instruction-set path of the quantized kernels. Every entry computes what the same-named
/// function in [`scalar`] computes; `quantize_row` bit for bit, `matmul` up to the order of its float
/// additions.
#[derive(Clone, Copy)]
pub struct QuantKernels {
    /// "scalar", "avx2", "neon", "neon-dotprod".
    pub name: &'static str,
    /// Quantizes x (a multiple of [`QK`] long) into x.len()/32 blocks.
    pub quantize_row: fn(x: &[f32], out: &mut [BlockQ8]),
    /// Single-threaded `out[t·m + o] = Σ_p term(piece p of weight row o, activation block p of row t)`
    /// ([`scalar::matmul`]) for weights `w` of m rows of `k` (m = w.len() / ty.row_bytes(k)) and
    /// activations `acts` of n rows (n = acts.len()·32 / k); the public [`matmul_quant`] splits work
    /// across threads.
    pub matmul: fn(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize),
    /// Single-threaded [`split_mxfp4::matmul_scalar`]: MXFP4 with codes and scales apart (Hugging Face's
    /// layout); [`split_mxfp4::matmul_split_mxfp4`] splits work across threads.
    pub matmul_split_mxfp4: SplitMxfp4Matmul,
}

/// `QuantKernels::matmul_split_mxfp4`: (codes, scales, activation blocks, out, k).
pub type SplitMxfp4Matmul = fn(codes: &[u8], scales: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize);

pub static SCALAR: QuantKernels = QuantKernels {
    name: "scalar",
    quantize_row: scalar::quantize_row,
    matmul: scalar::matmul,
    matmul_split_mxfp4: split_mxfp4::matmul_scalar,
};

/// The fastest path this CPU supports, detected on first use.
pub fn active() -> &'static QuantKernels {
    static ACTIVE: OnceLock<&'static QuantKernels> = OnceLock::new();
    ACTIVE.get_or_init(|| paths().last().copied().unwrap_or(&SCALAR))
}

/// Every path this CPU can run, scalar first; tests compare each against the first.
pub fn paths() -> Vec<&'static QuantKernels> {
    let mut v = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx2::kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "aarch64")]
    v.extend(neon::kernels());
    v
}

/// Checks the shapes of a `QuantKernels::matmul` call and returns (n, m).
pub(crate) fn matmul_dims(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &[f32], k: usize) -> (usize, usize) {
    let be = ty.block_elems();
    assert!(
        k > 0 && k.is_multiple_of(be),
        "quantized {} matmul: k = {k} is not a positive multiple of {be}",
        ty.name()
    );
    let (row_bytes, nb) = (ty.row_bytes(k), k / QK);
    assert!(
        w.len().is_multiple_of(row_bytes) && acts.len().is_multiple_of(nb),
        "quantized matmul: {} bytes of {} weights or {} activation blocks are not whole rows of k = {k}",
        w.len(),
        ty.name(),
        acts.len()
    );
    let (n, m) = (acts.len() / nb, w.len() / row_bytes);
    assert_eq!(out.len(), n * m, "quantized matmul: out has {} elements, want {n}×{m}", out.len());
    (n, m)
}

/// How activation rows are rounded to int8 before a quantized matmul.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActRounding {
    /// A scale per 32 values, whatever the weight format (lowbit's choice: see the module documentation).
    #[default]
    Blocks32,
    /// llama.cpp's rounding: one scale per 256 values (its `block_q8_K`) for the k-quant and ternary
    /// formats, per 32 for the others. Slightly coarser; it gives llama.cpp's figures on the same file,
    /// which is what comparisons with llama.cpp's perplexity need.
    LlamaCpp,
}

/// Activation rows quantized to [`BlockQ8`]s: the reusable scratch buffer of a matmul. Quantizing into
/// it again reuses its allocation, so a decode loop allocates only on its first call.
#[derive(Clone, Debug, Default)]
pub struct QuantizedActs {
    blocks: Vec<BlockQ8>,
    rows: usize,
    k: usize,
}

/// From this many activations on, quantizing splits rows across threads (a block takes ~20 ns, so
/// 64 Ki activations take ~40 µs on one thread, ten times what handing work to the pool costs).
const PAR_MIN_ACTS: usize = 64 * 1024;

impl QuantizedActs {
    pub fn new() -> QuantizedActs {
        QuantizedActs::default()
    }

    /// Quantizes `x`, `n` rows of `k` (k a positive multiple of [`QK`]), replacing the contents.
    pub fn quantize(&mut self, x: &[f32], n: usize, k: usize) {
        self.reshape(x, n, k);
        let nb = k / QK;
        let quantize_row = active().quantize_row;
        if n == 1 || n * k < PAR_MIN_ACTS {
            return quantize_row(x, &mut self.blocks);
        }
        let rows = n.div_ceil(4 * threads());
        parallel_chunks_mut(&mut self.blocks, rows * nb, &|i, part| {
            quantize_row(&x[i * rows * k..][..part.len() * QK], part)
        });
    }

    /// Quantizes `x` as [`QuantizedActs::quantize`] does, but with one fixed scale `d` for every block
    /// (static activation quantization, [`scalar::quantize_block_static`]). A non-positive or non-finite
    /// `d` falls back to the dynamic scales.
    pub fn quantize_static(&mut self, x: &[f32], n: usize, k: usize, d: f32) {
        if !(d.is_finite() && d > 0.0) {
            return self.quantize(x, n, k);
        }
        self.reshape(x, n, k);
        for (xb, b) in x.chunks_exact(QK).zip(&mut self.blocks) {
            *b = scalar::quantize_block_static(xb.try_into().expect("whole blocks"), d);
        }
    }

    /// Quantizes `x` for weights of type `ty` as `rounding` says: [`QuantizedActs::quantize`], or llama.cpp's
    /// rounding ([`scalar::quantize_superblock`] for the formats of 256-element super-blocks).
    pub fn quantize_for(&mut self, ty: QuantType, rounding: ActRounding, x: &[f32], n: usize, k: usize) {
        if rounding == ActRounding::Blocks32 || ty.block_elems() != QK_K {
            return self.quantize(x, n, k);
        }
        self.reshape(x, n, k);
        assert!(k.is_multiple_of(QK_K), "quantize: k = {k} is not a multiple of the {QK_K} super-block");
        for (xs, bs) in x.chunks_exact(QK_K).zip(self.blocks.chunks_exact_mut(QK_K / QK)) {
            scalar::quantize_superblock(xs.try_into().expect("whole super-blocks"), bs.try_into().expect("8 blocks"));
        }
    }

    /// Checks `x` is `n` rows of `k` (a positive multiple of [`QK`]) and sizes the blocks for it.
    fn reshape(&mut self, x: &[f32], n: usize, k: usize) {
        assert!(k > 0 && k.is_multiple_of(QK), "quantize: k = {k} is not a positive multiple of {QK}");
        assert_eq!(x.len(), n * k, "quantize: x has {} elements, want {n}×{k}", x.len());
        self.blocks.resize(n * (k / QK), BlockQ8::default());
        (self.rows, self.k) = (n, k);
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// All blocks, row after row (k/32 per row).
    pub fn blocks(&self) -> &[BlockQ8] {
        &self.blocks
    }
}

/// Below this many weight bytes a decode GEMV runs on the calling thread: at ~10 GB/s per core it
/// takes ~6 µs, about what splitting it would cost in waking and waiting for the other threads.
const PAR_MIN_BYTES: usize = 64 * 1024;

/// out[t·m + o] = Σ_i W[o, i]·x̃[t, i], where W is `w` (m rows of `ty` blocks, k = acts.k() per row) and
/// x̃ the activations as quantized in `acts` (n = acts.rows() rows): for each pair of blocks, an exact
/// integer dot product times the two scales (plus Q4_1's minimum times the block sum).
///
/// n = 1 (decode) splits the rows of w across threads, each pass of the kernel sharing one load of the
/// activations among several rows; n > 1 splits the rows of x (tokens) across threads, and each
/// thread's kernel decodes a weight block once for several tokens. Panics on mismatched lengths.
pub fn matmul_quant(ty: QuantType, w: &[u8], acts: &QuantizedActs, out: &mut [f32], m: usize) {
    let (n, k) = (acts.rows(), acts.k());
    if n == 0 || m == 0 {
        assert!(out.is_empty(), "matmul_quant: out has {} elements, want {n}×{m}", out.len());
        return;
    }
    let be = ty.block_elems();
    assert!(k.is_multiple_of(be), "matmul_quant: k = {k} is not a multiple of the {} block of {be}", ty.name());
    let row_bytes = ty.row_bytes(k);
    assert_eq!(w.len(), m * row_bytes, "matmul_quant: w has {} bytes, want {m} rows of {k} {}", w.len(), ty.name());
    assert_eq!(out.len(), n * m, "matmul_quant: out has {} elements, want {n}×{m}", out.len());
    let kern = active().matmul;
    let threads = threads();
    let blocks = acts.blocks();
    if n == 1 {
        if threads == 1 || w.len() < PAR_MIN_BYTES {
            return kern(ty, w, blocks, out, k);
        }
        // About four chunks per thread so that a thread that loses its core is covered by the others;
        // chunks are whole 8-row groups, the unit of the AVX2 GEMV.
        let rows = m.div_ceil(4 * threads).next_multiple_of(8);
        parallel_chunks_mut(out, rows, &|i, part| {
            kern(ty, &w[i * rows * row_bytes..][..part.len() * row_bytes], blocks, part, k)
        });
    } else {
        // One chunk of tokens per thread, each reading all of w: output rows stay contiguous, and w
        // (at most a few MB per matrix, or the lm_head read in a few passes) comes from the caches.
        let nb = k / QK;
        let tokens = n.div_ceil(threads);
        parallel_chunks_mut(out, tokens * m, &|i, part| {
            kern(ty, w, &blocks[i * tokens * nb..][..part.len() / m * nb], part, k)
        });
    }
}

/// [`matmul_quant`] of f32 activations `x` (n rows of k), quantized first (as `rounding` says) into a
/// per-thread scratch buffer that is reused from call to call.
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_f32(
    ty: QuantType,
    rounding: ActRounding,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
    n: usize,
    k: usize,
    m: usize,
) {
    thread_local! {
        static SCRATCH: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::new());
    }
    // Nothing run while the buffer is borrowed calls back into user code (the pool runs only this
    // call's own items on this thread), so the borrow cannot already be held.
    SCRATCH.with_borrow_mut(|acts| {
        acts.quantize_for(ty, rounding, x, n, k);
        matmul_quant(ty, w, acts, out, m);
    })
}
