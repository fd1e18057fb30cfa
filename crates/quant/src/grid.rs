//! The grids calibrated methods round onto, one per storage family, as [`RowGrid`]s for GPTQ.

use half::f16;
use lowbit_formats::native::group::{encode, group_params, GroupFormat, GroupMatrix};
use lowbit_formats::quantize::{GridError, RowBlocks};
use lowbit_formats::{DType, Result};

use crate::gptq::RowGrid;

/// What a calibrated method rounds a tensor onto.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// A native group format.
    Group(GroupFormat),
    /// A GGUF block type; `weighted`: block parameters fitted with the layer's importance (see [`BlockGrid`]).
    Gguf { dtype: DType, weighted: bool },
}

impl Target {
    pub fn name(&self) -> String {
        match self {
            Target::Group(f) => f.name(),
            Target::Gguf { dtype, weighted: true } => format!("{dtype} (importance-weighted blocks)"),
            Target::Gguf { dtype, weighted: false } => dtype.name().to_string(),
        }
    }
}

/// A tensor rounded onto its [`Target`].
#[derive(Clone, Debug)]
pub enum Quantized {
    Group(GroupMatrix),
    /// The tensor's GGUF bytes in `dtype`.
    Gguf {
        dtype: DType,
        bytes: Vec<u8>,
    },
}

/// A group-wise integer format: per group an f16 scale and a zero point, fitted as round to nearest fits them.
pub struct GroupGrid(pub GroupFormat);

/// One row's `(scale, zero point)` per group.
pub type GroupParams = Vec<(f16, u8)>;

impl RowGrid for GroupGrid {
    type Params = GroupParams;

    fn fit(&self, row: &[f32]) -> std::result::Result<GroupParams, String> {
        row.chunks(self.0.group).map(|g| group_params(self.0, g)).collect()
    }

    fn group_start(&self, col: usize) -> bool {
        col.is_multiple_of(self.0.group)
    }

    fn refit_group(&self, params: &mut GroupParams, row: &[f32], col: usize) -> std::result::Result<(), String> {
        let end = (col + self.0.group).min(row.len());
        params[col / self.0.group] = group_params(self.0, &row[col..end])?;
        Ok(())
    }

    fn round(&self, params: &GroupParams, col: usize, w: f32) -> f32 {
        let (s, z) = params[col / self.0.group];
        let s = s.to_f32();
        (f32::from(encode(self.0, w, s, z)) - f32::from(z)) * s
    }
}

impl GroupGrid {
    /// Packs values that lie on the grid of `params` (GPTQ's output) into the format's tensors.
    pub fn pack(&self, values: &[f32], params: &[GroupParams], rows: usize, cols: usize) -> Result<GroupMatrix> {
        let f = self.0;
        let mut codes = Vec::with_capacity(values.len());
        for (row, p) in values.chunks_exact(cols).zip(params) {
            for (c, &v) in row.iter().enumerate() {
                let (s, z) = p[c / f.group];
                codes.push(encode(f, v, s.to_f32(), z));
            }
        }
        let scales: Vec<f16> = params.iter().flat_map(|p| p.iter().map(|&(s, _)| s)).collect();
        let zeros: Vec<u8> = params.iter().flat_map(|p| p.iter().map(|&(_, z)| z)).collect();
        GroupMatrix::from_codes(f, rows, cols, &codes, &scales, &zeros)
    }
}

/// A GGUF block type: each row's block parameters fitted by llama.cpp's quantizer for the type, weighted by
/// `importance` (the Hessian diagonal over 2: mean x² per column, what llama-imatrix collects) when given, so the
/// parameters are those of an imatrix build; GPTQ then chooses the codes.
pub struct BlockGrid {
    pub dtype: DType,
    pub importance: Option<Vec<f32>>,
}

impl RowGrid for BlockGrid {
    type Params = RowBlocks;

    fn fit(&self, row: &[f32]) -> std::result::Result<RowBlocks, String> {
        RowBlocks::fit(self.dtype, row, self.importance.as_deref()).map_err(|e| e.to_string())
    }

    fn group_start(&self, col: usize) -> bool {
        // Column order re-fits a whole block (256 columns for the k-quants, 32 for the others): its super-block
        // scales depend on all its sub-blocks.
        col.is_multiple_of(self.dtype.block_len())
    }

    fn refit_group(&self, params: &mut RowBlocks, row: &[f32], col: usize) -> std::result::Result<(), String> {
        params.refit_block(row, col, self.importance.as_deref()).map_err(|e| e.to_string())
    }

    fn round(&self, params: &RowBlocks, col: usize, w: f32) -> f32 {
        params.round(col, w)
    }
}

impl BlockGrid {
    /// The tensor's bytes in the type, from values on the grid of `params` (GPTQ's output), row after row.
    pub fn pack(&self, values: &[f32], params: &[RowBlocks], cols: usize) -> std::result::Result<Vec<u8>, GridError> {
        let mut out = Vec::with_capacity(self.dtype.storage_bytes(values.len() as u64).unwrap_or(0) as usize);
        for (row, p) in values.chunks_exact(cols).zip(params) {
            out.extend(p.pack(row)?);
        }
        Ok(out)
    }
}
