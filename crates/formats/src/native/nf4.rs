//! NF4 with double quantization (bitsandbytes' `quantize_4bit(quant_type="nf4", blocksize=64,
//! compress_statistics=True)`): the layout and its scalar reference quantize and dequantize. This is
//! the specification that the numpy golden script (scripts/golden/gen_native_nf4.py) re-implements and
//! that the NF4 kernels (`lowbit_kernels::group` with a code table) read.
//!
//! # Values
//!
//! A matrix `[rows, cols]` is cut into blocks of 64 consecutive weights along each row; `cols` must be
//! a multiple of 64 (the writer leaves other matrices unquantized, as it does for the group formats).
//! Weight `i` of block `b` decodes to `NF4[code_i]·s_b` ([`NF4`], 16 values from −1 to 1), where the
//! block scale `s_b` is itself stored in 8 bits ("double quantization"):
//!
//! * `absmax_b = max |w|` over the block, in f32.
//! * The codes are computed with the exact `absmax_b`: `x = w·(1/absmax_b)` (an f32 reciprocal, then a
//!   multiply, as bitsandbytes' kernel does) and `code` is the number of NF4 midpoints strictly below
//!   `x` ([`nf4_midpoints`], bitsandbytes' `dQuantizeNF4` thresholds: a value exactly at a midpoint
//!   takes the lower code). A block with `absmax_b = 0` gets code 7, the exact 0 (bitsandbytes would
//!   compute `0·∞ = NaN` and code 0, which decodes to `−s_b`, not 0).
//! * The scales of the whole matrix, in row-major block order, have their mean subtracted: `offset =
//!   f32(Σ absmax_b / n)` with the sum taken left to right in f64, `c_b = absmax_b − offset`.
//! * The `c_b` are quantized in chunks of 256 blocks (the last chunk may be shorter) with bitsandbytes'
//!   signed dynamic 8-bit map ([`dynamic_map`]): `A = max |c_b|` over the chunk, `x = c_b·(1/A)`, and
//!   `q_b` = the number of map midpoints `(m[i] + m[i+1])·0.5` strictly below `x` — the nearest map
//!   value, a tie taking the lower one (bitsandbytes' binary search may take either at an exact tie).
//!   A chunk with `A = 0` gets `q = 127`, the map's 0.
//! * `s_b = m[q_b]·A + offset`, rounded to f32 after the product and after the sum (no fused
//!   multiply-add), and `w = NF4[code]·s_b` in f32.
//!
//! Per weight that is 4 bits of code, 8/64 bits of block scale and 32/(64·256) bits of chunk scale:
//! 4.127 bits.
//!
//! # Layout
//!
//! Four safetensors tensors hold a quantized matrix `NAME` (names after bitsandbytes' quant state):
//!
//! | tensor | dtype | shape | holds |
//! |---|---|---|---|
//! | `NAME.qweight` | U8 | `[rows, cols/2]` | the codes, block after block |
//! | `NAME.absmax` | U8 | `[rows, cols/64]` | `q_b` of every block |
//! | `NAME.nested_absmax` | F32 | `[ceil(rows·cols/64 / 256)]` | `A` of every chunk |
//! | `NAME.offset` | F32 | `[1]` | the mean |
//!
//! A stack of matrices (mixture-of-experts weights, `[experts, rows, cols]`) is quantized expert by expert, each
//! with its own offset and chunks, so that one expert is written and read without the others: `NAME.qweight`
//! `[experts·rows, cols/2]`, `NAME.absmax` `[experts·rows, cols/64]`, `NAME.nested_absmax`
//! `[experts, ceil(rows·cols/64 / 256)]` and `NAME.offset` `[experts]`, each the experts' parts one after another.
//!
//! The 32 bytes of a block are two sub-blocks of 32 codes in the layout of lowbit's INT4 group format
//! (`super::group`): byte `j` of a sub-block holds code `j` in its low nibble and code `j + 16` in its
//! high nibble. bitsandbytes instead packs consecutive codes into one byte, the first in the high
//! nibble; lowbit's order lets a SIMD kernel expand a sub-block into 32 bytes in element order (the
//! order of the int8 activation blocks) with one broadcast, one shift and one mask before the table
//! lookup, the same steps as for its INT4 codes. The NF4 table and the dynamic map are fixed by the
//! format and not stored.

use std::sync::OnceLock;

use super::check_values;
use crate::error::{FormatError, Result};

/// Weights per block (one 8-bit scale each).
pub const BLOCK: usize = 64;
/// Blocks per chunk of the double quantization (one f32 each).
pub const NESTED_BLOCK: usize = 256;
/// Bytes of codes per block.
pub const BLOCK_BYTES: usize = BLOCK / 2;
/// The code of 0.
pub const ZERO_CODE: u8 = 7;
/// The dynamic map's index of 0.
const DYNAMIC_ZERO: u8 = 127;

/// The 16 NF4 values (bitsandbytes' `get_4bit_type("nf4")`): quantiles of a normal distribution scaled
/// to [−1, 1], with an exact 0 at code 7.
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The 15 thresholds between adjacent NF4 values, `f32((t[i] + t[i+1])/2)` computed in f64: the
/// constants of bitsandbytes' `dQuantizeNF4`.
pub fn nf4_midpoints() -> [f32; 15] {
    std::array::from_fn(|i| ((f64::from(NF4[i]) + f64::from(NF4[i + 1])) / 2.0) as f32)
}

/// bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`, 256 sorted
/// values from −0.99297 to 1 that are dense near 0.
///
/// For exponent `e` = 0..7 it takes `torch.linspace(0.1, 1, 2^e + 1)` in f32, the means of adjacent
/// points, times `10^(e−6)`, with both signs; then 0 and 1. torch's f32 linspace computes point `i` as
/// `start + step·i` for `i < steps/2` and `end − step·(steps−1−i)` after, each as one fused
/// multiply-add; with that arithmetic the 256 values equal bitsandbytes' table bit for bit.
pub fn dynamic_map() -> &'static [f32; 256] {
    static MAP: OnceLock<[f32; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        const SCALES: [f32; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
        let mut data = Vec::with_capacity(256);
        for (e, scale) in SCALES.into_iter().enumerate() {
            let steps = (1usize << e) + 1;
            let (start, end) = (0.1f32, 1.0f32);
            let step = (end - start) / (steps - 1) as f32;
            let point = |i: usize| {
                if i < steps / 2 {
                    step.mul_add(i as f32, start)
                } else {
                    (-step).mul_add((steps - 1 - i) as f32, end)
                }
            };
            let values: Vec<f32> = (0..steps - 1).map(|i| scale * ((point(i) + point(i + 1)) / 2.0)).collect();
            data.extend(values.iter().copied());
            data.extend(values.iter().map(|v| -v));
        }
        data.extend([0.0, 1.0]);
        data.sort_by(f32::total_cmp);
        data.try_into().expect("127 positive and 127 negative means, 0 and 1")
    })
}

/// Midpoints between adjacent dynamic-map values, in f32 as bitsandbytes' `dQuantize` forms them.
fn dynamic_midpoints() -> &'static [f32; 255] {
    static MIDS: OnceLock<[f32; 255]> = OnceLock::new();
    MIDS.get_or_init(|| {
        let m = dynamic_map();
        std::array::from_fn(|i| (m[i] + m[i + 1]) * 0.5)
    })
}

/// Number of `thresholds` (ascending) strictly below `x`.
fn count_below(thresholds: &[f32], x: f32) -> usize {
    thresholds.partition_point(|&t| t < x)
}

/// Checks that a `[rows, cols]` matrix can be stored as NF4.
pub fn check_shape(rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(FormatError::Invalid(format!("{rows}×{cols} matrix: nf4 needs rows of a positive multiple of 64")));
    }
    Ok(())
}

/// Blocks and chunks of a checked shape.
fn counts(rows: usize, cols: usize) -> Option<(usize, usize)> {
    let blocks = rows.checked_mul(cols / BLOCK)?;
    Some((blocks, blocks.div_ceil(NESTED_BLOCK)))
}

/// A quantized matrix, as the four tensors of the layout hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Matrix {
    pub rows: usize,
    pub cols: usize,
    /// `rows × cols/2` bytes.
    pub codes: Vec<u8>,
    /// One 8-bit dynamic-map index per block.
    pub absmax: Vec<u8>,
    /// Little-endian f32 bytes, one value per chunk of 256 blocks.
    pub nested_absmax: Vec<u8>,
    /// Little-endian f32 bytes of the mean.
    pub offset: [u8; 4],
}

impl Nf4Matrix {
    pub fn view(&self) -> Nf4View<'_> {
        Nf4View {
            rows: self.rows,
            cols: self.cols,
            codes: &self.codes,
            absmax: &self.absmax,
            nested_absmax: &self.nested_absmax,
            offset: f32::from_le_bytes(self.offset),
        }
    }
}

/// Borrowed parts of a quantized matrix (e.g. from a memory-mapped file), checked for consistent sizes.
#[derive(Clone, Copy, Debug)]
pub struct Nf4View<'a> {
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u8],
    pub absmax: &'a [u8],
    /// Little-endian f32 bytes (a mapped file does not promise f32 alignment).
    pub nested_absmax: &'a [u8],
    pub offset: f32,
}

impl<'a> Nf4View<'a> {
    /// Checks every part's length against the shape (before anything reads them).
    pub fn new(
        rows: usize,
        cols: usize,
        codes: &'a [u8],
        absmax: &'a [u8],
        nested_absmax: &'a [u8],
        offset: &[u8],
    ) -> Result<Nf4View<'a>> {
        check_shape(rows, cols)?;
        let (blocks, chunks) =
            counts(rows, cols).ok_or_else(|| FormatError::Invalid(format!("nf4 {rows}×{cols}: too large")))?;
        let expect = |what: &str, got: usize, want: Option<usize>| match want {
            Some(want) if want == got => Ok(()),
            _ => Err(FormatError::Invalid(format!("nf4 {rows}×{cols}: {what} has {got} bytes, want {want:?}"))),
        };
        expect("codes", codes.len(), blocks.checked_mul(BLOCK_BYTES))?;
        expect("absmax", absmax.len(), Some(blocks))?;
        expect("nested_absmax", nested_absmax.len(), Some(4 * chunks))?;
        expect("offset", offset.len(), Some(4))?;
        let offset = f32::from_le_bytes(offset.try_into().expect("checked length"));
        let view = Nf4View { rows, cols, codes, absmax, nested_absmax, offset };
        // Non-finite scales would turn every product with the matrix into NaN; a writer never makes them.
        if !offset.is_finite() || (0..chunks).any(|c| !view.nested(c).is_finite()) {
            return Err(FormatError::Invalid(format!("nf4 {rows}×{cols}: a non-finite scale")));
        }
        Ok(view)
    }

    fn nested(&self, chunk: usize) -> f32 {
        f32::from_le_bytes(self.nested_absmax[4 * chunk..][..4].try_into().expect("checked length"))
    }

    /// Blocks per row.
    pub fn row_blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// The scale of block `b` (row-major block index), `m[q_b]·A + offset`.
    pub fn block_scale(&self, b: usize) -> f32 {
        dynamic_map()[usize::from(self.absmax[b])] * self.nested(b / NESTED_BLOCK) + self.offset
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.row_blocks();
        let row = &self.codes[r * nb * BLOCK_BYTES..][..nb * BLOCK_BYTES];
        for (i, (bytes, out)) in row.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)).enumerate() {
            let s = self.block_scale(r * nb + i);
            for (bytes, out) in bytes.chunks_exact(16).zip(out.chunks_exact_mut(32)) {
                for (j, &byte) in bytes.iter().enumerate() {
                    out[j] = NF4[usize::from(byte & 15)] * s;
                    out[j + 16] = NF4[usize::from(byte >> 4)] * s;
                }
            }
        }
    }

    /// The whole matrix dequantized, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }
}

/// A stack of NF4 matrices, each quantized on its own (see the module documentation), checked for consistent
/// sizes.
#[derive(Clone, Copy, Debug)]
pub struct Nf4Stack<'a> {
    pub experts: usize,
    pub rows: usize,
    pub cols: usize,
    codes: &'a [u8],
    absmax: &'a [u8],
    nested_absmax: &'a [u8],
    offsets: &'a [u8],
}

impl<'a> Nf4Stack<'a> {
    /// Checks every part's length against the shape, and every expert's scales.
    pub fn new(
        experts: usize,
        rows: usize,
        cols: usize,
        codes: &'a [u8],
        absmax: &'a [u8],
        nested_absmax: &'a [u8],
        offsets: &'a [u8],
    ) -> Result<Nf4Stack<'a>> {
        check_shape(rows, cols)?;
        let too_large = || FormatError::Invalid(format!("nf4 stack {experts}×{rows}×{cols}: too large"));
        let (blocks, chunks) = counts(rows, cols).ok_or_else(too_large)?;
        let parts = [
            ("codes", codes.len(), blocks.checked_mul(BLOCK_BYTES)),
            ("absmax", absmax.len(), Some(blocks)),
            ("nested_absmax", nested_absmax.len(), chunks.checked_mul(4)),
            ("offset", offsets.len(), Some(4)),
        ];
        for (what, got, per_expert) in parts {
            if per_expert.and_then(|p| p.checked_mul(experts)) != Some(got) {
                return Err(FormatError::Invalid(format!(
                    "nf4 stack {experts}×{rows}×{cols}: {what} has {got} bytes, want {experts} × {per_expert:?}"
                )));
            }
        }
        let stack = Nf4Stack { experts, rows, cols, codes, absmax, nested_absmax, offsets };
        for e in 0..experts {
            stack.expert(e)?;
        }
        Ok(stack)
    }

    /// Expert `e`'s matrix.
    pub fn expert(&self, e: usize) -> Result<Nf4View<'a>> {
        if e >= self.experts {
            return Err(FormatError::Invalid(format!("expert {e} of an nf4 stack of {}", self.experts)));
        }
        let part = |bytes: &'a [u8]| {
            let per = bytes.len() / self.experts;
            &bytes[e * per..(e + 1) * per]
        };
        let (codes, absmax, nested, offset) =
            (part(self.codes), part(self.absmax), part(self.nested_absmax), part(self.offsets));
        Nf4View::new(self.rows, self.cols, codes, absmax, nested, offset)
    }

    /// The codes of every expert.
    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }

    /// Bytes of all parts together.
    pub fn stored_bytes(&self) -> usize {
        self.codes.len() + self.absmax.len() + self.nested_absmax.len() + self.offsets.len()
    }
}

/// Quantizes `values`, `rows × cols` row-major (rules in the module documentation). Errors name the
/// row and column of a non-finite value.
pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Result<Nf4Matrix> {
    let (codes, absmax) = encode_rows(values, rows, cols)?;
    let (absmax, nested_absmax, offset) = double_quantize(&absmax);
    Ok(Nf4Matrix { rows, cols, codes, absmax, nested_absmax, offset })
}

/// [`quantize`]'s first step, for whole rows of a matrix: their codes and exact block maxima, which depend on
/// those rows alone (so a writer can stream a large matrix through it a slice of rows at a time).
pub fn encode_rows(values: &[f32], rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<f32>)> {
    check_shape(rows, cols)?;
    check_values(values, rows, cols)?;
    let mids = nf4_midpoints();
    let mut codes = vec![0u8; values.len() / 2];
    let mut absmax = Vec::with_capacity(values.len() / BLOCK);
    let mut u = [0u8; BLOCK];
    for (w, packed) in values.chunks_exact(BLOCK).zip(codes.chunks_exact_mut(BLOCK_BYTES)) {
        let a = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if a == 0.0 {
            u.fill(ZERO_CODE);
        } else {
            let inv = 1.0 / a;
            u.iter_mut().zip(w).for_each(|(u, &w)| *u = count_below(&mids, w * inv) as u8);
        }
        for (packed, u) in packed.chunks_exact_mut(16).zip(u.chunks_exact(32)) {
            (0..16).for_each(|j| packed[j] = u[j] | u[j + 16] << 4);
        }
        absmax.push(a);
    }
    Ok((codes, absmax))
}

/// [`quantize`]'s second step: the block maxima of the whole matrix, row-major, double quantized: their 8-bit
/// codes, the chunks' scales (little-endian f32 bytes) and the offset.
pub fn double_quantize(absmax: &[f32]) -> (Vec<u8>, Vec<u8>, [u8; 4]) {
    let offset = (absmax.iter().fold(0.0f64, |s, &a| s + f64::from(a)) / absmax.len().max(1) as f64) as f32;
    let dmids = dynamic_midpoints();
    let mut q = vec![0u8; absmax.len()];
    let mut nested = Vec::with_capacity(4 * absmax.len().div_ceil(NESTED_BLOCK));
    for (chunk, q) in absmax.chunks(NESTED_BLOCK).zip(q.chunks_mut(NESTED_BLOCK)) {
        let a2 = chunk.iter().fold(0.0f32, |m, &a| m.max((a - offset).abs()));
        if a2 == 0.0 {
            q.fill(DYNAMIC_ZERO);
        } else {
            let inv = 1.0 / a2;
            q.iter_mut().zip(chunk).for_each(|(q, &a)| *q = count_below(dmids, (a - offset) * inv) as u8);
        }
        nested.extend_from_slice(&a2.to_le_bytes());
    }
    (q, nested, offset.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_map_shape() {
        let m = dynamic_map();
        assert!(m.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
        assert_eq!((m[0], m[127], m[255]), (-0.992_968_75, 0.0, 1.0));
        // The smallest nonzero magnitude: 1e-6 · (0.1 + 1)/2.
        assert_eq!(m[128], 1e-6f32 * 0.55);
        assert_eq!(count_below(dynamic_midpoints(), 0.0), usize::from(DYNAMIC_ZERO));
    }

    #[test]
    fn codes_pick_the_nearest_value_ties_down() {
        let mids = nf4_midpoints();
        for (i, &t) in NF4.iter().enumerate() {
            assert_eq!(count_below(&mids, t), i);
        }
        for (i, &m) in mids.iter().enumerate() {
            assert_eq!(count_below(&mids, m), i, "at midpoint {i}");
            assert_eq!(count_below(&mids, m.next_up()), i + 1);
        }
    }

    #[test]
    fn round_trip_is_close_and_zero_blocks_are_exact() {
        // Row 0: a ramp whose block absmax values differ; row 1: zeros, then one block of ±0.5.
        let cols = 128;
        let mut x: Vec<f32> = (0..cols).map(|i| (i as f32 - 40.0) / 64.0).collect();
        x.extend((0..cols).map(|i| {
            if i < 64 {
                0.0
            } else if i % 2 == 0 {
                0.5
            } else {
                -0.5
            }
        }));
        let m = quantize(&x, 2, cols).unwrap();
        let v = m.view();
        let back = v.dequantize();
        assert!(back[cols..cols + 64].iter().all(|&b| b == 0.0), "a zero block stays exactly zero");
        // Each weight is within half the widest NF4 gap (0.304) of its block's scale, plus the scale's
        // own 8-bit error, from the original.
        for b in 0..4 {
            let a = x[b * 64..][..64].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = v.block_scale(b);
            let tol = 0.16 * a + (s - a).abs() * 1.0001;
            for i in b * 64..(b + 1) * 64 {
                assert!((back[i] - x[i]).abs() <= tol, "weight {i}: {} vs {}", back[i], x[i]);
            }
            if b != 2 {
                assert!((s - a).abs() <= 0.02 * a, "block {b}: scale {s} vs absmax {a}");
            }
        }
    }

    #[test]
    fn a_stack_reads_each_expert_as_its_own_matrix() {
        let (rows, cols) = (3, 128);
        let experts: Vec<Nf4Matrix> = (0..2)
            .map(|e| {
                let w: Vec<f32> =
                    (0..rows * cols).map(|i| ((i * 7 + e * 13) % 23) as f32 - 11.0 * (e + 1) as f32).collect();
                quantize(&w, rows, cols).unwrap()
            })
            .collect();
        let cat = |part: fn(&Nf4Matrix) -> &[u8]| experts.iter().flat_map(|m| part(m).to_vec()).collect::<Vec<u8>>();
        let (codes, absmax) = (cat(|m| &m.codes), cat(|m| &m.absmax));
        let (nested, offsets) = (cat(|m| &m.nested_absmax), cat(|m| &m.offset));
        let stack = Nf4Stack::new(2, rows, cols, &codes, &absmax, &nested, &offsets).unwrap();
        for (e, m) in experts.iter().enumerate() {
            assert_eq!(stack.expert(e).unwrap().dequantize(), m.view().dequantize(), "expert {e}");
        }
        assert!(experts[0].offset != experts[1].offset, "each expert has its own offset");
        assert_eq!(stack.stored_bytes(), codes.len() + absmax.len() + nested.len() + offsets.len());
        assert!(stack.expert(2).is_err());
        let err = |r: Result<Nf4Stack>| r.unwrap_err().to_string();
        assert!(err(Nf4Stack::new(2, rows, cols, &codes, &absmax[1..], &nested, &offsets)).contains("absmax"));
        assert!(err(Nf4Stack::new(3, rows, cols, &codes, &absmax, &nested, &offsets)).contains("codes"));
        assert!(err(Nf4Stack::new(usize::MAX, rows, cols, &codes, &absmax, &nested, &offsets)).contains("codes"));
        let mut bad = nested.clone();
        bad[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(err(Nf4Stack::new(2, rows, cols, &codes, &absmax, &bad, &offsets)).contains("non-finite"));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(quantize(&[0.0; 96], 1, 96).is_err());
        let mut x = [0.5f32; 64];
        x[9] = f32::INFINITY;
        assert!(quantize(&x, 1, 64).unwrap_err().to_string().contains("column 9"));
        let m = quantize(&[1.0; 128], 2, 64).unwrap();
        let ok = |codes: &[u8], absmax: &[u8], nested: &[u8], offset: &[u8]| {
            Nf4View::new(2, 64, codes, absmax, nested, offset).is_ok()
        };
        assert!(ok(&m.codes, &m.absmax, &m.nested_absmax, &m.offset));
        assert!(!ok(&m.codes[1..], &m.absmax, &m.nested_absmax, &m.offset));
        assert!(!ok(&m.codes, &m.absmax[1..], &m.nested_absmax, &m.offset));
        assert!(!ok(&m.codes, &m.absmax, &[], &m.offset));
        assert!(!ok(&m.codes, &m.absmax, &m.nested_absmax, &f32::NAN.to_le_bytes()));
    }
}
