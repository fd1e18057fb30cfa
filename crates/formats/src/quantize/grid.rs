//! The grid of a GGUF block type under fixed block parameters, for calibrated methods (GPTQ) that choose every code
//! themselves.
//!
//! A row's block parameters (scales, mins, super-block scales) are fitted by the type's own quantizer — llama.cpp's
//! weighted search when importance is given — and then held fixed: each value rounds to the nearest code of its
//! sub-block, and packing writes the codes of values on that grid into the fitted blocks. A sub-block's values are
//! computed exactly as `dequant` computes them (`k·step + offset` in f32, the step being ggml's `d·scale`), so a
//! packed row dequantizes to exactly the values rounding gave.
//!
//! The ternary types (TQ1_0, TQ2_0: one scale per 256 values, codes −1, 0, +1) start from each block's exact scale
//! (`super::ternary::exact_scale`) rather than llama.cpp's largest magnitude, which leaves most of a block at 0.

use std::array::from_fn;
use std::ops::Range;

use super::kquants::{pack_q3k_codes, pack_q6k_codes, pack_two_bits, q4k_block, q5k_block, ScaleMin};
use super::legacy::{pack_five_bits, pack_nibbles};
use super::ternary::{tq1_0_of, tq2_0_of};
use super::{exact_ternary_blocks, quantize_blocks, Block, QuantizeError};
use crate::dequant::{
    unpack_q3k_scales, unpack_scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ5_1, BlockQ6K, BlockQ8_0, BlockTQ1_0, BlockTQ2_0, QK_K,
};
use crate::dtype::DType;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GridError {
    #[error("{0} has no fixed-parameter grid (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K, TQ1_0 and TQ2_0 have)")]
    NoGrid(DType),
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error("{values} values for a row of {row_len}")]
    Length { values: usize, row_len: usize },
    #[error("column {column}: {value} is not a value of its block's grid")]
    OffGrid { column: usize, value: f32 },
}

/// One sub-block's grid: `k·step + offset` for codes `k` in `lo..=hi`.
#[derive(Clone, Copy, Debug)]
struct SubGrid {
    step: f32,
    /// −0.0 for the symmetric types: adding it leaves every product, −0.0 included, as `dequant` has it.
    offset: f32,
    lo: i32,
    hi: i32,
}

impl SubGrid {
    fn value(self, k: i32) -> f32 {
        k as f32 * self.step + self.offset
    }

    /// The code whose value is nearest to `w` (code 0 for a zero step, where every code has the same value).
    fn nearest(self, w: f32) -> i32 {
        let k = if self.step != 0.0 { ((w - self.offset) / self.step).round() } else { 0.0 };
        // A NaN (from a NaN weight) converts to 0.
        k.clamp(self.lo as f32, self.hi as f32) as i32
    }

    /// The code of `v`, a value of this grid.
    fn code_of(self, v: f32) -> Option<i32> {
        // Rounding (v − offset)/step can miss by one when |offset| dwarfs the step.
        let k = self.nearest(v);
        [k, k - 1, k + 1].into_iter().find(|&k| (self.lo..=self.hi).contains(&k) && self.value(k) == v)
    }
}

/// A block struct whose codes GPTQ chooses.
trait GridBlock: Block + Sized {
    /// Elements per sub-block (one scale), and the code range as `SubGrid` numbers it.
    const SUB: usize;
    const LO: i32;
    const HI: i32;
    fn read(bytes: &[u8]) -> Self;
    /// Appends each sub-block's (step, offset).
    fn grids(&self, out: &mut Vec<(f32, f32)>);
    /// The block with these parameters and the codes `codes` (one per element, in `LO..=HI`).
    fn with_codes(&self, codes: &[i32]) -> Self;
}

/// Stored codes: `k − lo`, the unsigned code the formats keep.
fn stored<const N: usize>(codes: &[i32], lo: i32) -> [u8; N] {
    from_fn(|j| (codes[j] - lo) as u8)
}

impl GridBlock for BlockQ4_0 {
    const SUB: usize = 32;
    const LO: i32 = -8;
    const HI: i32 = 7;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        out.push((self.d.to_f32(), -0.0));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        BlockQ4_0 { d: self.d, qs: pack_nibbles(&stored(codes, Self::LO)) }
    }
}

impl GridBlock for BlockQ4_1 {
    const SUB: usize = 32;
    const LO: i32 = 0;
    const HI: i32 = 15;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        out.push((self.d.to_f32(), self.m.to_f32()));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        BlockQ4_1 { d: self.d, m: self.m, qs: pack_nibbles(&stored(codes, Self::LO)) }
    }
}

impl GridBlock for BlockQ5_0 {
    const SUB: usize = 32;
    const LO: i32 = -16;
    const HI: i32 = 15;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        out.push((self.d.to_f32(), -0.0));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        let (qh, qs) = pack_five_bits(&stored(codes, Self::LO));
        BlockQ5_0 { d: self.d, qh, qs }
    }
}

impl GridBlock for BlockQ5_1 {
    const SUB: usize = 32;
    const LO: i32 = 0;
    const HI: i32 = 31;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        out.push((self.d.to_f32(), self.m.to_f32()));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        let (qh, qs) = pack_five_bits(&stored(codes, Self::LO));
        BlockQ5_1 { d: self.d, m: self.m, qh, qs }
    }
}

impl GridBlock for BlockQ8_0 {
    const SUB: usize = 32;
    // ggml's quantizer never writes −128, and the AVX2 dot products negate codes, which −128 would overflow.
    const LO: i32 = -127;
    const HI: i32 = 127;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        out.push((self.d.to_f32(), -0.0));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        BlockQ8_0 { d: self.d, qs: from_fn(|j| codes[j] as i8) }
    }
}

impl GridBlock for BlockQ2K {
    const SUB: usize = 16;
    const LO: i32 = 0;
    const HI: i32 = 3;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        out.extend(self.scales.iter().map(|&s| (d * f32::from(s & 0x0F), -(dmin * f32::from(s >> 4)))));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        BlockQ2K { scales: self.scales, qs: pack_two_bits(&stored(codes, Self::LO)), d: self.d, dmin: self.dmin }
    }
}

impl GridBlock for BlockQ3K {
    const SUB: usize = 16;
    const LO: i32 = -4;
    const HI: i32 = 3;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        let d = self.d.to_f32();
        out.extend(unpack_q3k_scales(&self.scales).iter().map(|&s| (d * f32::from(s), -0.0)));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        let (hmask, qs) = pack_q3k_codes(stored(codes, Self::LO));
        BlockQ3K { hmask, qs, scales: self.scales, d: self.d }
    }
}

/// Q4_K/Q5_K sub-blocks: `d·scale` and `−dmin·min`.
fn scale_min_grids(d: half::f16, dmin: half::f16, packed: &[u8; 12], out: &mut Vec<(f32, f32)>) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    let (scales, mins) = unpack_scale_min_k4(packed);
    out.extend(scales.iter().zip(&mins).map(|(&s, &m)| (d * f32::from(s), -(dmin * f32::from(m)))));
}

impl GridBlock for BlockQ4K {
    const SUB: usize = 32;
    const LO: i32 = 0;
    const HI: i32 = 15;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        scale_min_grids(self.d, self.dmin, &self.scales, out);
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        q4k_block(ScaleMin { d: self.d, dmin: self.dmin, scales: self.scales, codes: stored(codes, Self::LO) })
    }
}

impl GridBlock for BlockQ5K {
    const SUB: usize = 32;
    const LO: i32 = 0;
    const HI: i32 = 31;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        scale_min_grids(self.d, self.dmin, &self.scales, out);
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        q5k_block(ScaleMin { d: self.d, dmin: self.dmin, scales: self.scales, codes: stored(codes, Self::LO) })
    }
}

impl GridBlock for BlockQ6K {
    const SUB: usize = 16;
    const LO: i32 = -32;
    const HI: i32 = 31;
    fn read(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes.try_into().expect("one block's bytes"))
    }
    fn grids(&self, out: &mut Vec<(f32, f32)>) {
        let d = self.d.to_f32();
        out.extend(self.scales.iter().map(|&s| (d * f32::from(s), -0.0)));
    }
    fn with_codes(&self, codes: &[i32]) -> Self {
        let (ql, qh) = pack_q6k_codes(&stored(codes, Self::LO));
        BlockQ6K { ql, qh, scales: self.scales, d: self.d }
    }
}

/// The ternary blocks: one scale per 256 values, codes −1, 0, +1, packed by `$of(trits, d)`.
macro_rules! ternary_grid_block {
    ($T:ty, $of:ident) => {
        impl GridBlock for $T {
            const SUB: usize = QK_K;
            const LO: i32 = -1;
            const HI: i32 = 1;
            fn read(bytes: &[u8]) -> Self {
                Self::from_bytes(bytes.try_into().expect("one block's bytes"))
            }
            fn grids(&self, out: &mut Vec<(f32, f32)>) {
                out.push((self.d.to_f32(), -0.0));
            }
            fn with_codes(&self, codes: &[i32]) -> Self {
                $of(&stored(codes, Self::LO), self.d)
            }
        }
    };
}

ternary_grid_block!(BlockTQ1_0, tq1_0_of);
ternary_grid_block!(BlockTQ2_0, tq2_0_of);

/// Runs `$body` with `$T` the block struct of `$dtype`, or returns `NoGrid`.
macro_rules! with_block {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::Q4_0 => {
                type $T = BlockQ4_0;
                $body
            }
            DType::Q4_1 => {
                type $T = BlockQ4_1;
                $body
            }
            DType::Q5_0 => {
                type $T = BlockQ5_0;
                $body
            }
            DType::Q5_1 => {
                type $T = BlockQ5_1;
                $body
            }
            DType::Q8_0 => {
                type $T = BlockQ8_0;
                $body
            }
            DType::Q2K => {
                type $T = BlockQ2K;
                $body
            }
            DType::Q3K => {
                type $T = BlockQ3K;
                $body
            }
            DType::Q4K => {
                type $T = BlockQ4K;
                $body
            }
            DType::Q5K => {
                type $T = BlockQ5K;
                $body
            }
            DType::Q6K => {
                type $T = BlockQ6K;
                $body
            }
            DType::TQ1_0 => {
                type $T = BlockTQ1_0;
                $body
            }
            DType::TQ2_0 => {
                type $T = BlockTQ2_0;
                $body
            }
            other => return Err(GridError::NoGrid(other)),
        }
    };
}

/// The block types that have a fixed-parameter grid (what `with_block!` dispatches on).
pub const GRID_TYPES: [DType; 12] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::TQ1_0,
    DType::TQ2_0,
];

/// The blocks a row's grid starts from (`select`: only those blocks): the type's own quantizer's, or for the ternary
/// types the exact scales'.
fn fitted_blocks(
    dtype: DType,
    row: &[f32],
    importance: Option<&[f32]>,
    select: Option<Range<usize>>,
) -> Result<Vec<u8>, QuantizeError> {
    match dtype {
        DType::TQ1_0 | DType::TQ2_0 => exact_ternary_blocks(dtype, row, importance, select),
        _ => quantize_blocks(dtype, row, row.len(), importance, select),
    }
}

/// Elements per sub-block of `dtype`.
fn sub_len(dtype: DType) -> Result<usize, GridError> {
    with_block!(dtype, T => Ok(T::SUB))
}

/// One row of a block type: its blocks as the type's quantizer fitted them, and each sub-block's grid.
#[derive(Clone, Debug)]
pub struct RowBlocks {
    dtype: DType,
    bytes: Vec<u8>,
    grids: Vec<SubGrid>,
    sub_len: usize,
}

impl RowBlocks {
    /// Whether `dtype` has such a grid: the block types with a scale (and min) per sub-block.
    pub fn has_grid(dtype: DType) -> bool {
        sub_len(dtype).is_ok()
    }

    /// Fits a row's block parameters with the type's quantizer, weighted by `importance` (one weight per column)
    /// when given, as `quantize` would write the row (the ternary types: each block's exact scale).
    pub fn fit(dtype: DType, row: &[f32], importance: Option<&[f32]>) -> Result<RowBlocks, GridError> {
        let sub_len = sub_len(dtype)?;
        let bytes = fitted_blocks(dtype, row, importance, None)?;
        let mut blocks = RowBlocks { dtype, bytes, grids: Vec::with_capacity(row.len() / sub_len), sub_len };
        blocks.grids = blocks.decode(0..row.len() / dtype.block_len())?;
        Ok(blocks)
    }

    /// The block type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether a block begins at column `col`.
    pub fn block_start(&self, col: usize) -> bool {
        col.is_multiple_of(self.dtype.block_len())
    }

    /// Re-fits the block holding column `col` to `row` as it stands now (the quantizer sees the whole row, as the
    /// 32-element types' weighted search scales its weights by the row's mean square).
    pub fn refit_block(&mut self, row: &[f32], col: usize, importance: Option<&[f32]>) -> Result<(), GridError> {
        let (len, size) = (self.dtype.block_len(), self.dtype.block_bytes());
        let b = col / len;
        let fresh = fitted_blocks(self.dtype, row, importance, Some(b..b + 1))?;
        self.bytes[b * size..(b + 1) * size].copy_from_slice(&fresh);
        let grids = self.decode(b..b + 1)?;
        let per_block = len / self.sub_len;
        self.grids[b * per_block..(b + 1) * per_block].copy_from_slice(&grids);
        Ok(())
    }

    /// The grid value of column `col` nearest to `w`.
    pub fn round(&self, col: usize, w: f32) -> f32 {
        let g = self.grids[col / self.sub_len];
        g.value(g.nearest(w))
    }

    /// The row's blocks holding `values`, which must lie on the grid (values `round` gave).
    pub fn pack(&self, values: &[f32]) -> Result<Vec<u8>, GridError> {
        let row_len = self.grids.len() * self.sub_len;
        if values.len() != row_len {
            return Err(GridError::Length { values: values.len(), row_len });
        }
        let (len, size) = (self.dtype.block_len(), self.dtype.block_bytes());
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut codes = vec![0i32; len];
        for (b, block) in self.bytes.chunks_exact(size).enumerate() {
            for (j, code) in codes.iter_mut().enumerate() {
                let (column, value) = (b * len + j, values[b * len + j]);
                *code = self.grids[column / self.sub_len].code_of(value).ok_or(GridError::OffGrid { column, value })?;
            }
            with_block!(self.dtype, T => T::read(block).with_codes(&codes).write(&mut out));
        }
        Ok(out)
    }

    /// The sub-block grids of blocks `blocks`.
    fn decode(&self, blocks: Range<usize>) -> Result<Vec<SubGrid>, GridError> {
        let size = self.dtype.block_bytes();
        let mut steps = Vec::new();
        let (lo, hi) = with_block!(self.dtype, T => {
            for b in blocks {
                T::read(&self.bytes[b * size..(b + 1) * size]).grids(&mut steps);
            }
            (T::LO, T::HI)
        });
        Ok(steps.into_iter().map(|(step, offset)| SubGrid { step, offset, lo, hi }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;

    fn row(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32 * 2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0 + (i % 7) as f32 * 0.03)
            .collect()
    }

    #[test]
    fn rounding_the_fitted_row_gives_what_the_quantizer_wrote() {
        // The k-quants end by rounding every code to nearest against the stored scales. (The legacy types round
        // against the scale before its f16 conversion, so some of their codes are not the nearest.)
        let x = row(512, 7);
        for dtype in [DType::Q2K, DType::Q3K, DType::Q4K, DType::Q5K, DType::Q6K] {
            let fitted = RowBlocks::fit(dtype, &x, None).unwrap();
            let rounded: Vec<f32> = x.iter().enumerate().map(|(c, &w)| fitted.round(c, w)).collect();
            let want = dequantize(dtype, &fitted.bytes, x.len()).unwrap();
            assert_eq!(rounded, want, "{dtype}");
        }
    }

    #[test]
    fn packed_values_dequantize_to_exactly_the_rounded_values() {
        for dtype in GRID_TYPES {
            let x = row(768, 3);
            let importance: Vec<f32> = (0..x.len()).map(|i| 0.1 + (i % 13) as f32).collect();
            let mut fitted = RowBlocks::fit(dtype, &x, Some(&importance)).unwrap();
            // Values well off the original row, as GPTQ's updates leave them, and a refitted block.
            let moved: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v * 1.3 - 0.2 * ((i % 5) as f32 - 2.0)).collect();
            fitted.refit_block(&moved, 256, Some(&importance)).unwrap();
            let q: Vec<f32> = moved.iter().enumerate().map(|(c, &w)| fitted.round(c, w)).collect();
            let packed = fitted.pack(&q).unwrap();
            assert_eq!(packed.len(), dtype.storage_bytes(x.len() as u64).unwrap() as usize);
            let back = dequantize(dtype, &packed, x.len()).unwrap();
            assert!(back.iter().zip(&q).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype}");
            // The refitted block is the fit's for the moved row.
            let (size, b) = (dtype.block_bytes(), 256 / dtype.block_len());
            let whole = fitted_blocks(dtype, &moved, Some(&importance), None).unwrap();
            assert_eq!(fitted.bytes[b * size..(b + 1) * size], whole[b * size..(b + 1) * size], "{dtype}");
        }
    }

    /// The ternary grids: every rounded row packs into blocks that dequantize to exactly it, the fitted scale is the
    /// exact one (its rounding error never above llama.cpp's largest-magnitude scale's), and TQ1_0 and TQ2_0 hold
    /// the same values.
    #[test]
    fn ternary_grids_start_from_the_exact_scale() {
        let x = row(512, 11);
        let mut both = Vec::new();
        for dtype in [DType::TQ1_0, DType::TQ2_0] {
            let fitted = RowBlocks::fit(dtype, &x, None).unwrap();
            let rounded: Vec<f32> = x.iter().enumerate().map(|(c, &w)| fitted.round(c, w)).collect();
            let bytes = fitted.pack(&rounded).unwrap();
            assert_eq!(dequantize(dtype, &bytes, x.len()).unwrap(), rounded, "{dtype}");
            let absmax = dequantize(dtype, &quantize_blocks(dtype, &x, x.len(), None, None).unwrap(), x.len()).unwrap();
            let err = |v: &[f32]| x.iter().zip(v).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
            assert!(err(&rounded) < err(&absmax), "{dtype}: exact {} vs absmax {}", err(&rounded), err(&absmax));
            both.push(rounded);
        }
        assert_eq!(both[0], both[1]);
    }

    #[test]
    fn values_off_the_grid_and_types_without_one_are_refused() {
        let x = row(256, 1);
        let fitted = RowBlocks::fit(DType::Q4K, &x, None).unwrap();
        let mut q: Vec<f32> = x.iter().enumerate().map(|(c, &w)| fitted.round(c, w)).collect();
        q[17] += 1e-3;
        assert!(matches!(fitted.pack(&q), Err(GridError::OffGrid { column: 17, .. })));
        assert!(matches!(fitted.pack(&q[1..]), Err(GridError::Length { .. })));
        for dtype in [DType::F16, DType::MXFP4, DType::F32] {
            assert!(!RowBlocks::has_grid(dtype));
            assert_eq!(RowBlocks::fit(dtype, &x, None).unwrap_err(), GridError::NoGrid(dtype));
        }
        assert!(GRID_TYPES.iter().all(|&d| RowBlocks::has_grid(d)));
    }
}
