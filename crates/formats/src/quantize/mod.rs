//! Reference (scalar) quantization into every GGUF storage type: the inverse of `dequant`.
//!
//! The quantizers write the same bytes as llama.cpp (`ggml-quants.c` at the commit named in
//! shared/baselines/llama-cpp.md). Without importance they follow `quantize_row_*_ref`, which is also what
//! `llama-quantize` runs when it has no `--imatrix`; with importance they follow the weighted searches of
//! `quantize_row_*_impl` that `--imatrix` selects. Byte equality needs ggml's f32 operations in ggml's order (it is
//! compiled for baseline x86-64: no FMA contraction, no reassociation), its `nearest_int` rounding trick and C's
//! float-to-small-integer conversions, so the code keeps ggml's expression order wherever rounding depends on it and
//! reproduces those two conversions below. The block layouts are `dequant`'s structs. TQ1_0, TQ2_0 and MXFP4 have
//! only ggml's reference quantizers (llama.cpp ignores importance for them); MXFP4's exponent needs log2f's rounding
//! (see `mxfp4`).

mod grid;
mod kquants;
mod legacy;
mod mxfp4;
mod ternary;

use std::ops::Range;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::FormatError;

pub use grid::{GridError, RowBlocks, GRID_TYPES};
pub use ternary::exact_scale;

/// Why values could not be quantized. Positions are within the values given; callers name the tensor.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    #[error("{0} has no quantizer")]
    NoQuantizer(DType),
    #[error("row length {row_len} is not a positive multiple of the {dtype} block length {}", dtype.block_len())]
    RowLength { dtype: DType, row_len: usize },
    #[error("{n_values} values are not a whole number of rows of {row_len}")]
    PartialRow { n_values: usize, row_len: usize },
    #[error("importance has {weights} weights, but rows have {row_len} columns")]
    ImportanceLength { weights: usize, row_len: usize },
    #[error("importance of column {column} is {weight}: weights must be finite and non-negative")]
    BadImportance { column: usize, weight: f32 },
    #[error("row {row}, column {column}: value {value} is not finite")]
    NonFinite { row: usize, column: usize, value: f32 },
    #[error("row {row}, column {column}: value {value} overflows {dtype}, whose largest magnitude is {limit}")]
    Overflow { row: usize, column: usize, value: f32, dtype: DType, limit: f32 },
    #[error(
        "row {row}, columns {}..{}: a block scale overflows f16 (largest |value| {largest}); values this large \
         cannot be stored as {dtype}",
        columns.start,
        columns.end
    )]
    ScaleOverflow { row: usize, columns: Range<usize>, largest: f32, dtype: DType },
}

impl From<QuantizeError> for FormatError {
    fn from(e: QuantizeError) -> Self {
        FormatError::Invalid(e.to_string())
    }
}

type Result<T> = std::result::Result<T, QuantizeError>;

/// Quantizes `values` (a whole number of rows of `row_len`, each a multiple of the block length) into `dtype` blocks.
///
/// `importance`: optional per-column weights (`row_len` of them, finite and non-negative), llama.cpp's importance
/// matrix for this tensor; with it the block types use llama.cpp's weighted scale search. Q8_0 and the plain types
/// (F32, F16, BF16) have no weighted search and ignore it, as llama.cpp does.
///
/// Rows are quantized independently, so a caller may split a tensor into row ranges, quantize them in parallel and
/// concatenate the results.
///
/// Errors (`QuantizeError`; the caller names the tensor): a NaN or infinite value (naming its row and column), a shape
/// that is not whole rows of whole blocks, importance of the wrong length or with a negative or non-finite weight, a
/// type without a quantizer (U8, I8), and values too large for the type. A value is too large when its magnitude
/// exceeds the largest the type can represent, or when a block's f16 scale or an F16/BF16 element would overflow:
/// llama.cpp writes infinities there, which its own `ggml_validate_row_data` then refuses.
pub fn quantize(dtype: DType, values: &[f32], row_len: usize, importance: Option<&[f32]>) -> Result<Vec<u8>> {
    quantize_blocks(dtype, values, row_len, importance, None)
}

/// `quantize`, writing only the blocks `select` (indices within each row; all when `None`) of the block types, each
/// exactly as `quantize` writes it within the whole row. The plain types ignore `select`.
fn quantize_blocks(
    dtype: DType,
    values: &[f32],
    row_len: usize,
    importance: Option<&[f32]>,
    select: Option<Range<usize>>,
) -> Result<Vec<u8>> {
    check_shape(dtype, values.len(), row_len)?;
    if let Some(importance) = importance {
        check_importance(importance, row_len)?;
    }
    check_values(dtype, values, row_len)?;
    // Every type stores at most 4 bytes per value, so this is bounded by the input's own size.
    let mut out = Vec::with_capacity(values.len() / dtype.block_len() * dtype.block_bytes());
    let rows = Rows { values, row_len, importance, select };
    match dtype {
        DType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => plain(values, row_len, dtype, &mut out, |v| {
            let h = f16::from_f32(v);
            h.is_finite().then(|| h.to_le_bytes())
        })?,
        DType::BF16 => plain(values, row_len, dtype, &mut out, |v| {
            let h = bf16::from_f32(v);
            h.is_finite().then(|| h.to_le_bytes())
        })?,
        DType::Q4_0 => blocks(&rows, dtype, &mut out, legacy::q4_0, legacy::q4_0_weighted)?,
        DType::Q4_1 => blocks(&rows, dtype, &mut out, legacy::q4_1, legacy::q4_1_weighted)?,
        DType::Q5_0 => blocks(&rows, dtype, &mut out, legacy::q5_0, legacy::q5_0_weighted)?,
        DType::Q5_1 => blocks(&rows, dtype, &mut out, legacy::q5_1, legacy::q5_1_weighted)?,
        // llama.cpp's `quantize_q8_0` ignores its importance argument.
        DType::Q8_0 => blocks(&rows, dtype, &mut out, legacy::q8_0, |x, _| legacy::q8_0(x))?,
        DType::Q2K => blocks(&rows, dtype, &mut out, kquants::q2k, kquants::q2k_weighted)?,
        DType::Q3K => blocks(&rows, dtype, &mut out, kquants::q3k, kquants::q3k_weighted)?,
        DType::Q4K => blocks(&rows, dtype, &mut out, kquants::q4k, kquants::q4k_weighted)?,
        DType::Q5K => blocks(&rows, dtype, &mut out, kquants::q5k, kquants::q5k_weighted)?,
        DType::Q6K => blocks(&rows, dtype, &mut out, kquants::q6k, kquants::q6k_weighted)?,
        // llama.cpp's `quantize_tq1_0`, `quantize_tq2_0` and `quantize_mxfp4` ignore their importance argument.
        DType::TQ1_0 => blocks(&rows, dtype, &mut out, ternary::tq1_0, |x, _| ternary::tq1_0(x))?,
        DType::TQ2_0 => blocks(&rows, dtype, &mut out, ternary::tq2_0, |x, _| ternary::tq2_0(x))?,
        DType::MXFP4 => blocks(&rows, dtype, &mut out, mxfp4::mxfp4, |x, _| mxfp4::mxfp4(x))?,
        // check_shape has already refused them.
        DType::U8 | DType::I8 => {}
    }
    Ok(out)
}

/// A ternary type's blocks under their exact scales (`ternary::exact_scale`, weighted by `importance` when given)
/// instead of llama.cpp's largest magnitude: where calibrated methods' grids start.
fn exact_ternary_blocks(
    dtype: DType,
    values: &[f32],
    importance: Option<&[f32]>,
    select: Option<Range<usize>>,
) -> Result<Vec<u8>> {
    check_shape(dtype, values.len(), values.len())?;
    if let Some(importance) = importance {
        check_importance(importance, values.len())?;
    }
    check_values(dtype, values, values.len())?;
    let mut out = Vec::with_capacity(values.len() / dtype.block_len() * dtype.block_bytes());
    let rows = Rows { values, row_len: values.len(), importance, select };
    match dtype {
        DType::TQ1_0 => blocks(&rows, dtype, &mut out, ternary::tq1_0_exact, ternary::tq1_0_exact_weighted)?,
        DType::TQ2_0 => blocks(&rows, dtype, &mut out, ternary::tq2_0_exact, ternary::tq2_0_exact_weighted)?,
        other => return Err(QuantizeError::NoQuantizer(other)),
    }
    Ok(out)
}

/// What llama.cpp's weighted searches see of one block besides its values.
struct Weighted<'a, const LEN: usize> {
    /// The importance of each of the block's columns.
    importance: &'a [f32; LEN],
    /// Mean of x² over the whole row. The 32-element formats scale their weights with it; the k-quants use their
    /// super-block's own instead, as llama.cpp does.
    row_mean_square: f32,
}

/// A `dequant` block struct written back as its on-disk bytes.
trait Block {
    /// Appends the fields in declaration order, little-endian, which is their `#[repr(C)]` layout: every field is a
    /// byte array or an f16 at an even offset, so there is no padding.
    fn write(&self, out: &mut Vec<u8>);

    /// Whether every f16 scale is finite.
    fn scales_finite(&self) -> bool;
}

/// ggml's `nearest_int`: adding 1.5·2²³ leaves the rounded integer (ties to even) in the low mantissa bits. Beyond
/// ±2²² the result wraps instead of saturating; ggml's does too, so bytes still agree on such degenerate blocks.
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// C's float-to-integer conversion as x86-64 executes it (`cvttss2si`): truncation toward zero, and `i32::MIN` for
/// NaN and out-of-range values, where Rust's `as` saturates. ggml narrows the result to 8 bits, and NaN or infinite
/// intermediates do occur in its legacy quantizers when a block's values are so small that 1/d overflows.
fn c_trunc(v: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    }
}

/// `1/d`, or 0 for a zero scale, as ggml's `d ? 1.0f/d : 0.0f`.
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The value of largest magnitude, the first of equals (ggml's `amax < fabsf(v)` scan); 0 for all-zero input.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Sub-array `j` of `N` elements; callers only pass `N` dividing the length.
fn part<const N: usize>(a: &[f32], j: usize) -> &[f32; N] {
    a[N * j..N * (j + 1)].try_into().expect("a range of N elements")
}

/// Mutable sub-array `j` of `N` codes; callers only pass `N` dividing the length.
fn part_mut<const N: usize>(a: &mut [u8], j: usize) -> &mut [u8; N] {
    (&mut a[N * j..N * (j + 1)]).try_into().expect("a range of N elements")
}

fn check_shape(dtype: DType, n_values: usize, row_len: usize) -> Result<()> {
    if matches!(dtype, DType::U8 | DType::I8) {
        return Err(QuantizeError::NoQuantizer(dtype));
    }
    if row_len == 0 || !row_len.is_multiple_of(dtype.block_len()) {
        return Err(QuantizeError::RowLength { dtype, row_len });
    }
    if !n_values.is_multiple_of(row_len) {
        return Err(QuantizeError::PartialRow { n_values, row_len });
    }
    Ok(())
}

fn check_importance(importance: &[f32], row_len: usize) -> Result<()> {
    if importance.len() != row_len {
        return Err(QuantizeError::ImportanceLength { weights: importance.len(), row_len });
    }
    // llama-quantize refuses non-finite importance too; a negative weight would turn the least-squares searches
    // into maximizations.
    match importance.iter().position(|w| !w.is_finite() || *w < 0.0) {
        Some(column) => Err(QuantizeError::BadImportance { column, weight: importance[column] }),
        None => Ok(()),
    }
}

/// The largest magnitude a block of `dtype` can represent: the f16 maximum times the largest integer scale times the
/// largest code, plus the largest min for the formats with one. Refusing larger values up front also keeps ggml's
/// searches, which square values, away from the overflow to infinity after which they would quietly write a finite
/// but meaningless block.
fn largest_magnitude(dtype: DType) -> f32 {
    let f16_max = f32::from(f16::MAX);
    let multiple = match dtype {
        DType::Q4_0 => 8.0,
        DType::Q4_1 | DType::Q5_0 => 16.0,
        DType::Q5_1 => 32.0,
        DType::Q8_0 | DType::Q3K => 128.0,
        DType::Q2K => 15.0 * 3.0 + 15.0,
        DType::Q4K => 63.0 * 15.0 + 63.0,
        DType::Q5K => 63.0 * 31.0 + 63.0,
        DType::Q6K => 128.0 * 32.0,
        DType::TQ1_0 | DType::TQ2_0 => 1.0,
        // The largest code, 12, times the largest scale that keeps it finite, 2^124 (exponent byte 252). ggml would
        // give larger values exponent 253, whose codes from 8 up dequantize to infinity.
        DType::MXFP4 => return 12.0 * 2f32.powi(124),
        // Checked element by element when converting.
        DType::F32 | DType::F16 | DType::BF16 | DType::U8 | DType::I8 => return f32::MAX,
    };
    f16_max * multiple
}

fn check_values(dtype: DType, values: &[f32], row_len: usize) -> Result<()> {
    let limit = largest_magnitude(dtype);
    match values.iter().position(|v| !v.is_finite() || v.abs() > limit) {
        Some(i) => {
            let (row, column, value) = (i / row_len, i % row_len, values[i]);
            Err(if value.is_finite() {
                QuantizeError::Overflow { row, column, value, dtype, limit }
            } else {
                QuantizeError::NonFinite { row, column, value }
            })
        }
        None => Ok(()),
    }
}

/// Converts element by element, refusing values the narrower type cannot hold. (`half` rounds to nearest even, as
/// ggml's F16 and BF16 conversions do, subnormals included.)
fn plain(
    values: &[f32],
    row_len: usize,
    dtype: DType,
    out: &mut Vec<u8>,
    convert: impl Fn(f32) -> Option<[u8; 2]>,
) -> Result<()> {
    let limit = if dtype == DType::F16 { f32::from(f16::MAX) } else { f32::from(bf16::MAX) };
    for (i, &value) in values.iter().enumerate() {
        let (row, column) = (i / row_len, i % row_len);
        let bytes = convert(value).ok_or(QuantizeError::Overflow { row, column, value, dtype, limit })?;
        out.extend_from_slice(&bytes);
    }
    Ok(())
}

/// What `blocks` quantizes: whole rows of `row_len`, their importance, and which blocks of each row (all when `None`).
struct Rows<'a> {
    values: &'a [f32],
    row_len: usize,
    importance: Option<&'a [f32]>,
    select: Option<Range<usize>>,
}

/// Quantizes each block of each row with `unweighted`, or with `weighted` when there is importance.
fn blocks<const LEN: usize, B: Block>(
    rows: &Rows,
    dtype: DType,
    out: &mut Vec<u8>,
    unweighted: impl Fn(&[f32; LEN]) -> B,
    weighted: impl Fn(&[f32; LEN], Weighted<LEN>) -> B,
) -> Result<()> {
    let Rows { values, row_len, importance, ref select } = *rows;
    for (r, row) in values.chunks_exact(row_len).enumerate() {
        // ggml's sigma2 of the legacy formats: x² summed in order over the row, divided by the row length.
        let row_importance = importance.map(|w| (w, row.iter().fold(0.0f32, |s, &v| s + v * v) / row_len as f32));
        for b in select.clone().unwrap_or(0..row_len / LEN) {
            let x = part::<LEN>(row, b);
            let block = match row_importance {
                Some((w, row_mean_square)) => weighted(x, Weighted { importance: part(w, b), row_mean_square }),
                None => unweighted(x),
            };
            if !block.scales_finite() {
                let largest = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                return Err(QuantizeError::ScaleOverflow { row: r, columns: b * LEN..(b + 1) * LEN, largest, dtype });
            }
            block.write(out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (0.49999997, 0), (-7.6, -8)];
        for (v, want) in cases {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn c_trunc_gives_the_x86_indefinite_value_where_rust_would_saturate() {
        assert_eq!(c_trunc(-7.9), -7);
        assert_eq!(c_trunc(f32::INFINITY), i32::MIN);
        assert_eq!(c_trunc(f32::NAN), i32::MIN);
        assert_eq!(c_trunc(3e9), i32::MIN);
        // Narrowed to a byte, as ggml does, all of these become 0.
        assert_eq!(c_trunc(f32::INFINITY) as u8, 0);
    }

    #[test]
    fn signed_absmax_keeps_the_sign_and_the_first_of_equals() {
        assert_eq!(signed_absmax(&[1.0, -3.0, 3.0, 2.0]), -3.0);
        assert_eq!(signed_absmax(&[0.0, 0.0]), 0.0);
    }
}
