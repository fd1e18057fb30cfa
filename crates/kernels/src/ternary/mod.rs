//! Ternary matrix products without multiplications: bitnet.cpp's look-up-table ("TL") method.
//!
//! A ternary weight is `α·w` with `w ∈ {−1, 0, 1}` and `α` the scale of its row's group. For one int8
//! activation row `q`, every pair of columns `(2p, 2p+1)` has only 9 possible contributions
//! `w0·q[2p] + w1·q[2p+1]`, so they are computed once per pair (by adds and subtracts) into a table,
//! and a row's dot product is the sum of one table entry per pair, picked by the pair's 4-bit index
//! `3·(w0 + 1) + (w1 + 1)`: 2 bits per weight, as many as 2-bit codes, and no weight is multiplied.
//! On AVX2 one byte shuffle looks up 32 rows' entries at once.
//!
//! # Layout ([`TernaryMatrix`])
//!
//! Rows go in tiles of [`TILE_ROWS`] = 32 (the last one padded with zero weights). Tile `t` holds, for
//! each pair `p` in order, 16 bytes: byte `j` has row `32t + j`'s index in its low nibble and row
//! `32t + 16 + j`'s in its high nibble. The scales follow per tile and group: 32 f32, one per row of
//! the tile (0 for padding rows).
//!
//! # Tables
//!
//! An entry is an i16 (up to 2·127 in magnitude), stored as two byte tables, because a byte shuffle
//! looks up bytes: per pair, 32 bytes, the low bytes of entries 0..16 then their high bytes (entries
//! 9..16 are 0). Per activation block of 32 (16 pairs) the looked-up entries are summed in i16 (at
//! most 16·254 in magnitude, exact), then that sum times the block's scale `d_b` is added in f32, and
//! per group the row's scale times the group's sum: out = Σ_g α_g·Σ_b d_b·Σ_p entry_p.
//!
//! [`scalar`] is the specification; the AVX2 and NEON paths compute the same integer sums.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::quant::{BlockQ8, QuantizedActs, QK};
use crate::{parallel_chunks_mut, threads};

/// Rows per tile, the unit of the layout and of the SIMD kernel.
pub const TILE_ROWS: usize = 32;
/// Bytes of one pair's tables (low bytes, then high bytes, of 16 i16 entries).
pub const TABLE_BYTES: usize = 32;

/// A ternary matrix in the look-up layout (module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    group: usize,
    indices: Vec<u8>,
    scales: Vec<f32>,
}

impl TernaryMatrix {
    /// The `rows × cols` matrix whose weight (r, i) is `scale(r, i / group)·trit(r, i)`, each trit −1, 0 or 1.
    /// Panics unless cols and group are positive multiples of 32 and every trit is one of the three.
    pub fn new(
        rows: usize,
        cols: usize,
        group: usize,
        trit: impl Fn(usize, usize) -> i8,
        scale: impl Fn(usize, usize) -> f32,
    ) -> TernaryMatrix {
        assert!(cols > 0 && cols.is_multiple_of(QK), "ternary matrix: {cols} columns, not a multiple of {QK}");
        assert!(group > 0 && group.is_multiple_of(QK), "ternary matrix: group {group}, not a multiple of {QK}");
        let (tiles, pairs, ng) = (rows.div_ceil(TILE_ROWS), cols / 2, cols.div_ceil(group));
        let index = |r: usize, p: usize| -> u8 {
            if r >= rows {
                return 4; // (0, 0)
            }
            let t = |i| {
                let w = trit(r, i);
                assert!((-1..=1).contains(&w), "ternary matrix: weight ({r}, {i}) is {w}, not −1, 0 or 1");
                (w + 1) as u8
            };
            3 * t(2 * p) + t(2 * p + 1)
        };
        let mut indices = Vec::with_capacity(tiles * pairs * 16);
        let mut scales = Vec::with_capacity(tiles * ng * TILE_ROWS);
        for t in 0..tiles {
            let r0 = t * TILE_ROWS;
            for p in 0..pairs {
                indices.extend((0..16).map(|j| index(r0 + j, p) | index(r0 + 16 + j, p) << 4));
            }
            for g in 0..ng {
                scales.extend((r0..r0 + TILE_ROWS).map(|r| if r < rows { scale(r, g) } else { 0.0 }));
            }
        }
        TernaryMatrix { rows, cols, group, indices, scales }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held: indices and scales.
    pub fn bytes(&self) -> usize {
        self.indices.len() + 4 * self.scales.len()
    }

    fn tiles(&self) -> usize {
        self.rows.div_ceil(TILE_ROWS)
    }

    fn n_groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// The 4-bit index of pair `p` of row `r`.
    fn index(&self, r: usize, p: usize) -> u8 {
        let (t, j) = (r / TILE_ROWS, r % TILE_ROWS);
        let byte = self.indices[(t * self.cols / 2 + p) * 16 + j % 16];
        if j < 16 {
            byte & 0x0F
        } else {
            byte >> 4
        }
    }

    /// The scale of group `g` of row `r`.
    fn scale(&self, r: usize, g: usize) -> f32 {
        self.scales[((r / TILE_ROWS) * self.n_groups() + g) * TILE_ROWS + r % TILE_ROWS]
    }
}

/// Checks the lengths of a `TernaryKernels::tiles` call (its contract: tables and activations of the matrix's
/// width, rows inside the matrix), then writes each tile's rows that `out` covers from `tile(indices, scales)`:
/// the tile's index bytes and scales in, its 32 outputs back.
pub(crate) fn each_tile(
    w: &TernaryMatrix,
    tables: &[u8],
    acts: &[BlockQ8],
    t0: usize,
    out: &mut [f32],
    mut tile: impl FnMut(&[u8], &[f32]) -> [f32; TILE_ROWS],
) {
    assert_eq!(tables.len(), w.cols / 2 * TABLE_BYTES, "ternary tiles: tables of another width");
    assert_eq!(acts.len(), w.cols / QK, "ternary tiles: activations of another width");
    assert!(t0 * TILE_ROWS + out.len() <= w.rows, "ternary tiles: rows past the matrix");
    let (tile_indices, tile_scales) = (w.cols / 2 * 16, w.n_groups() * TILE_ROWS);
    for (t, out) in (t0..).zip(out.chunks_mut(TILE_ROWS)) {
        let rows = tile(&w.indices[t * tile_indices..][..tile_indices], &w.scales[t * tile_scales..][..tile_scales]);
        out.copy_from_slice(&rows[..out.len()]);
    }
}

/// One instruction-set path.
#[derive(Clone, Copy)]
pub struct TernaryKernels {
    /// "scalar", "avx2", "neon".
    pub name: &'static str,
    /// Fills `tables` (`TABLE_BYTES` per pair of columns) for one activation row (`cols / 32` blocks).
    pub tables: fn(acts: &[BlockQ8], tables: &mut [u8]),
    /// `out[i]` = row `TILE_ROWS·t0 + i` of the matrix times the activation row, for the rows of the tiles
    /// from `t0` on that `out` covers.
    pub tiles: fn(w: &TernaryMatrix, tables: &[u8], acts: &[BlockQ8], t0: usize, out: &mut [f32]),
}

pub static SCALAR: TernaryKernels = TernaryKernels { name: "scalar", tables: scalar::tables, tiles: scalar::tiles };

/// Every path this CPU can run, scalar first.
pub fn paths() -> Vec<&'static TernaryKernels> {
    #[cfg(target_arch = "x86_64")]
    let simd = avx2::kernels();
    #[cfg(target_arch = "aarch64")]
    let simd = neon::kernels();
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let simd = None;
    std::iter::once(&SCALAR).chain(simd).collect()
}

/// The SIMD path of this CPU, if there is one. Without it the look-up method is slower than the group
/// kernels' 2-bit codes, so callers keep those.
pub fn simd() -> Option<&'static TernaryKernels> {
    static SIMD: OnceLock<Option<&'static TernaryKernels>> = OnceLock::new();
    *SIMD.get_or_init(|| paths().into_iter().find(|k| k.name != SCALAR.name))
}

/// Below this many index bytes a GEMV runs on the calling thread.
const PAR_MIN_BYTES: usize = 64 * 1024;

/// out[t·m + o] = row o of `w` times activation row t of `acts` (quantized from x), on path `kern`. The
/// tables of each row are built once and the tiles split across threads.
pub fn matmul_ternary(kern: &TernaryKernels, w: &TernaryMatrix, acts: &QuantizedActs, out: &mut [f32]) {
    let (n, k, m) = (acts.rows(), acts.k(), w.rows);
    assert_eq!(k, w.cols, "matmul_ternary: activations of {k}, matrix of {} columns", w.cols);
    assert_eq!(out.len(), n * m, "matmul_ternary: out has {} elements, want {n}×{m}", out.len());
    thread_local! {
        static TABLES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let nb = k / QK;
    TABLES.with_borrow_mut(|tables| {
        tables.resize(k / 2 * TABLE_BYTES, 0);
        for (t, out) in out.chunks_exact_mut(m).enumerate() {
            let a = &acts.blocks()[t * nb..][..nb];
            (kern.tables)(a, tables);
            let threads = threads();
            if threads == 1 || w.indices.len() < PAR_MIN_BYTES {
                (kern.tiles)(w, tables, a, 0, out);
                continue;
            }
            let tiles = w.tiles().div_ceil(4 * threads);
            let tables = &tables[..];
            parallel_chunks_mut(out, tiles * TILE_ROWS, &|i, part| (kern.tiles)(w, tables, a, i * tiles, part));
        }
    })
}

/// [`matmul_ternary`] of f32 activations `x` (n rows of `w.cols()`) on the SIMD path, quantized first
/// into a per-thread scratch buffer. Panics when this CPU has no SIMD path ([`simd`]).
pub fn matmul_ternary_f32(w: &TernaryMatrix, x: &[f32], out: &mut [f32], n: usize) {
    thread_local! {
        static SCRATCH: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::new());
    }
    let kern = simd().expect("matmul_ternary_f32: this CPU has no SIMD ternary path");
    SCRATCH.with_borrow_mut(|acts| {
        acts.quantize(x, n, w.cols);
        matmul_ternary(kern, w, acts, out);
    })
}
