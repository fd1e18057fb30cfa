//! Matrix products with weights in lowbit's group-wise integer formats (INT8/INT4/INT3/INT2, layout in
//! `lowbit_formats::native::group`), by the same method as [`crate::quant`]: the activation rows are
//! quantized once per matmul into int8 blocks of 32 ([`BlockQ8`], in a reusable [`QuantizedActs`]), and
//! each output is a sum of exact integer dot products of 32 codes times float scales.
//!
//! A weight decodes to `(u − z)·s` per group. With `c` = 128 for 8-bit codes (so that `u − c` is a
//! signed byte) and 0 otherwise, one group's contribution to an output is
//! `s·Σ_b d_b·Σ_i (u_i − c)·q_i + s·(c − z)·Σ_b s_b` over its activation blocks b (scale d_b, codes q,
//! s_b = d_b·Σq). [`GroupParams`] holds `scale = s` and `min = s·(c − z)` per group, so the zero point
//! costs one multiply-add per group and row, whatever the group length.
//!
//! A layout with a [`Codebook`] has codes of at most 4 bits that stand for signed bytes `table[u]`, one
//! table of 16 for each run of `rows_per_table` weight rows: a weight decodes to `table[u]·s + min`, and
//! the integer dot product is `Σ table[u_i]·q_i` (on AVX2 one byte shuffle per 32 codes, on NEON one `tbl`
//! per 16). NF4 shares one table across the matrix; a palettized matrix (look-up tables per group of
//! output channels) has one per group. Their values are not integers, so a table holds them scaled to
//! ±127 and rounded, and the group scale carries the inverse factor.
//!
//! As for the other kernels, [`scalar`] is the specification; each SIMD path computes the same integer
//! dot products and differs only in the order of its float additions.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::quant::{BlockQ8, QuantizedActs, QK};
use crate::{parallel_chunks_mut, threads};

/// A group's float parameters, interleaved so that one load serves both. See the module
/// documentation for their meaning.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupParams {
    pub scale: f32,
    pub min: f32,
}

impl GroupParams {
    /// The parameters of a group with scale `s` and zero point `z` in a `bits`-bit format.
    pub fn new(bits: u8, s: f32, z: u8) -> GroupParams {
        let c = if bits == 8 { 128.0 } else { 0.0 };
        GroupParams { scale: s, min: s * (c - f32::from(z)) }
    }
}

/// The signed bytes that codes stand for: `tables[r / rows_per_table][u]` for code u of weight row r.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codebook<'a> {
    pub tables: &'a [[i8; 16]],
    pub rows_per_table: usize,
}

impl<'a> Codebook<'a> {
    /// One table for every row (NF4's).
    pub fn shared(table: &'a [i8; 16]) -> Codebook<'a> {
        Codebook { tables: std::slice::from_ref(table), rows_per_table: usize::MAX }
    }

    /// A table per `rows_per_table` consecutive rows (the last run may be shorter). Panics on 0.
    pub fn per_rows(tables: &'a [[i8; 16]], rows_per_table: usize) -> Codebook<'a> {
        assert!(rows_per_table > 0, "codebook: a table must cover at least one row");
        Codebook { tables, rows_per_table }
    }

    /// The table of row `row`.
    pub fn table(&self, row: usize) -> &'a [i8; 16] {
        &self.tables[row / self.rows_per_table]
    }

    /// Tables a matrix of m rows needs.
    pub fn tables_for(&self, m: usize) -> usize {
        m.div_ceil(self.rows_per_table).max(1)
    }

    /// The codebook of the rows from `r0` on, which must be the first row of a table's run (any row when
    /// every row shares the table).
    fn rows_from(self, r0: usize) -> Codebook<'a> {
        if self.tables.len() == 1 {
            return self;
        }
        assert!(r0.is_multiple_of(self.rows_per_table), "codebook: row {r0} is inside a table's run");
        Codebook { tables: &self.tables[r0 / self.rows_per_table..], ..self }
    }
}

/// The code layout of a weight matrix: bits per code, codes per group, and what a code stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLayout<'a> {
    /// 8, 4, 3 or 2.
    pub bits: u8,
    /// A positive multiple of 32; the last group of a row may be shorter.
    pub group: usize,
    /// With codes of at most 4 bits: the signed value of each code, used in place of the code; `None`: the
    /// code's own value (less 128 for 8 bits).
    pub codebook: Option<Codebook<'a>>,
}

impl<'a> GroupLayout<'a> {
    /// Panics unless bits is 8, 4, 3 or 2 and group a positive multiple of 32.
    pub fn new(bits: u8, group: usize) -> GroupLayout<'a> {
        assert!(matches!(bits, 8 | 4 | 3 | 2), "group kernels: {bits}-bit codes do not exist");
        assert!(group > 0 && group.is_multiple_of(QK), "group kernels: group {group} is not a multiple of {QK}");
        GroupLayout { bits, group, codebook: None }
    }

    /// Codes of `bits` ≤ 4 (packed as the integer codes of that width) standing for their entries of
    /// `codebook`.
    pub fn with_codebook(bits: u8, group: usize, codebook: Codebook<'a>) -> GroupLayout<'a> {
        assert!(bits <= 4, "group kernels: codebooks index codes of at most 4 bits, not {bits}");
        GroupLayout { codebook: Some(codebook), ..GroupLayout::new(bits, group) }
    }

    /// The layout of the rows from `r0` on.
    fn rows_from(self, r0: usize) -> GroupLayout<'a> {
        GroupLayout { codebook: self.codebook.map(|c| c.rows_from(r0)), ..self }
    }

    /// Rows that a split of the matrix between threads keeps together: the 8 of a SIMD GEMV pass, and
    /// whole runs of a table.
    fn row_unit(self) -> usize {
        match self.codebook {
            Some(c) if c.tables.len() > 1 => lcm(8, c.rows_per_table),
            _ => 8,
        }
    }

    /// Bytes of 32 codes.
    pub const fn sub_block_bytes(self) -> usize {
        QK * self.bits as usize / 8
    }

    pub const fn row_bytes(self, k: usize) -> usize {
        k / QK * self.sub_block_bytes()
    }

    pub const fn n_groups(self, k: usize) -> usize {
        k.div_ceil(self.group)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b) * b
}

/// Single-threaded `out[t·m + o]` for m weight rows of k codes (`codes`: m·row_bytes(k) bytes, `params`:
/// m·n_groups(k)) and n activation rows (`acts`: n·k/32 blocks).
pub type GroupMatmul =
    fn(l: GroupLayout<'_>, codes: &[u8], params: &[GroupParams], acts: &[BlockQ8], out: &mut [f32], k: usize);

/// One instruction-set path.
#[derive(Clone, Copy)]
pub struct GroupKernels {
    /// "scalar", "avx2", "neon", "neon-dotprod".
    pub name: &'static str,
    pub matmul: GroupMatmul,
}

pub static SCALAR: GroupKernels = GroupKernels { name: "scalar", matmul: scalar::matmul };

/// The fastest path this CPU supports, detected on first use.
pub fn active() -> &'static GroupKernels {
    static ACTIVE: OnceLock<&'static GroupKernels> = OnceLock::new();
    ACTIVE.get_or_init(|| paths().last().copied().unwrap_or(&SCALAR))
}

/// Every path this CPU can run, scalar first.
pub fn paths() -> Vec<&'static GroupKernels> {
    #[cfg(target_arch = "x86_64")]
    let simd = avx2::kernels();
    #[cfg(target_arch = "aarch64")]
    let simd = neon::kernels();
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let simd = None;
    std::iter::once(&SCALAR).chain(simd).collect()
}

/// The code kinds the SIMD paths compile a kernel for: the bit widths, and with this flag set, codes of that width
/// that index a codebook.
pub(crate) const TABLE: u8 = 0x10;
pub(crate) const TABLE2: u8 = TABLE | 2;
pub(crate) const TABLE3: u8 = TABLE | 3;
pub(crate) const TABLE4: u8 = TABLE | 4;

/// Bytes of 32 codes of a code kind.
pub(crate) const fn sub_block_bytes(kind: u8) -> usize {
    QK * (kind & 0x0F) as usize / 8
}

/// The table pointer the SIMD paths hold for layouts without a codebook (never read).
pub(crate) static NO_TABLE: [[i8; 16]; 1] = [[0; 16]];

/// Checks the lengths of a `GroupKernels::matmul` call; returns (n, m).
pub(crate) fn matmul_dims(
    l: GroupLayout<'_>,
    codes: &[u8],
    params: &[GroupParams],
    acts: &[BlockQ8],
    out: &[f32],
    k: usize,
) -> (usize, usize) {
    assert!(k > 0 && k.is_multiple_of(QK), "group matmul: k = {k} is not a positive multiple of {QK}");
    let (row_bytes, nb, ng) = (l.row_bytes(k), k / QK, l.n_groups(k));
    assert!(codes.len().is_multiple_of(row_bytes), "group matmul: {} code bytes are not rows of k = {k}", codes.len());
    assert!(acts.len().is_multiple_of(nb), "group matmul: {} activation blocks are not rows of k = {k}", acts.len());
    let (n, m) = (acts.len() / nb, codes.len() / row_bytes);
    assert_eq!(params.len(), m * ng, "group matmul: {} group parameters, want {m}×{ng}", params.len());
    assert_eq!(out.len(), n * m, "group matmul: out has {} elements, want {n}×{m}", out.len());
    if let Some(c) = l.codebook {
        assert!(c.tables.len() >= c.tables_for(m), "group matmul: {} tables for {m} rows", c.tables.len());
    }
    (n, m)
}

/// Below this many weight bytes a decode GEMV runs on the calling thread (as in `quant`).
const PAR_MIN_BYTES: usize = 64 * 1024;

/// out[t·m + o] = Σ_i W[o, i]·x̃[t, i] for the m-row matrix W of `codes` and `params` and the activations
/// as quantized in `acts`. n = 1 splits the rows of W across threads, n > 1 the tokens. Panics on
/// mismatched lengths.
pub fn matmul_group(
    l: GroupLayout<'_>,
    codes: &[u8],
    params: &[GroupParams],
    acts: &QuantizedActs,
    out: &mut [f32],
    m: usize,
) {
    let (n, k) = (acts.rows(), acts.k());
    if n == 0 || m == 0 {
        assert!(out.is_empty(), "matmul_group: out has {} elements, want {n}×{m}", out.len());
        return;
    }
    let (row_bytes, ng) = (l.row_bytes(k), l.n_groups(k));
    assert_eq!(codes.len(), m * row_bytes, "matmul_group: {} code bytes, want {m} rows of {k}", codes.len());
    assert_eq!(out.len(), n * m, "matmul_group: out has {} elements, want {n}×{m}", out.len());
    let kern = active().matmul;
    let threads = threads();
    let blocks = acts.blocks();
    if n == 1 {
        if threads == 1 || codes.len() < PAR_MIN_BYTES {
            return kern(l, codes, params, blocks, out, k);
        }
        // About four chunks per thread, in whole units of rows.
        let rows = m.div_ceil(4 * threads).next_multiple_of(l.row_unit());
        parallel_chunks_mut(out, rows, &|i, part| {
            let r0 = i * rows;
            kern(
                l.rows_from(r0),
                &codes[r0 * row_bytes..][..part.len() * row_bytes],
                &params[r0 * ng..][..part.len() * ng],
                blocks,
                part,
                k,
            )
        });
    } else {
        let nb = k / QK;
        let tokens = n.div_ceil(threads);
        parallel_chunks_mut(out, tokens * m, &|i, part| {
            kern(l, codes, params, &blocks[i * tokens * nb..][..part.len() / m * nb], part, k)
        });
    }
}

/// [`matmul_group`] of f32 activations `x` (n rows of k), quantized first into a per-thread scratch
/// buffer reused from call to call: per block (dynamic), or with the one scale `static_d` calibrated for
/// this matrix's input ([`QuantizedActs::quantize_static`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_group_f32(
    l: GroupLayout<'_>,
    codes: &[u8],
    params: &[GroupParams],
    x: &[f32],
    out: &mut [f32],
    n: usize,
    k: usize,
    m: usize,
    static_d: Option<f32>,
) {
    thread_local! {
        static SCRATCH: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::new());
    }
    // Nothing run while the buffer is borrowed calls back into user code, so it cannot be held already.
    SCRATCH.with_borrow_mut(|acts| {
        match static_d {
            Some(d) => acts.quantize_static(x, n, k, d),
            None => acts.quantize(x, n, k),
        }
        matmul_group(l, codes, params, acts, out, m);
    })
}
