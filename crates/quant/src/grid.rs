//! The grids calibrated methods round onto, one per storage family, as [`RowGrid`]s for GPTQ.

use half::f16;
use lowbit_formats::native::group::{encode, group_params, range_params, GroupFormat, GroupMatrix};
use lowbit_formats::native::{PaletteFormat, PaletteMatrix};
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
    /// Ternary weights in groups of `group` columns, stored in the 2-bit group format (`crate::ternary`).
    Ternary { group: usize },
    /// Look-up-table palettes (`crate::palette`), `seed` fixing the k-means draws.
    Palette { format: PaletteFormat, seed: u64 },
}

impl Target {
    pub fn name(&self) -> String {
        match self {
            Target::Group(f) => f.name(),
            Target::Gguf { dtype, weighted: true } => format!("{dtype} (importance-weighted blocks)"),
            Target::Gguf { dtype, weighted: false } => dtype.name().to_string(),
            Target::Ternary { group } => format!("ternary-g{group}"),
            Target::Palette { format, .. } => format.name(),
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
    Palette(PaletteMatrix),
}

impl Target {
    /// Round to nearest onto the target: each row's parameters fitted to the row (block parameters weighted by
    /// `importance` where the target is an importance-weighted GGUF type), every weight rounded under them.
    /// Returns the rounded values and the packed tensor.
    pub fn round(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        importance: Option<&[f32]>,
    ) -> std::result::Result<(Vec<f32>, Quantized), String> {
        match *self {
            Target::Group(f) => {
                let grid = GroupGrid(f);
                let (values, params) = round_rows(&grid, w, cols)?;
                let packed = grid.pack(&values, &params, rows, cols).map_err(|e| e.to_string())?;
                Ok((values, Quantized::Group(packed)))
            }
            Target::Gguf { dtype, weighted } => {
                let grid = BlockGrid { dtype, importance: importance.filter(|_| weighted).map(<[f32]>::to_vec) };
                let (values, params) = round_rows(&grid, w, cols)?;
                let bytes = grid.pack(&values, &params, cols).map_err(|e| e.to_string())?;
                Ok((values, Quantized::Gguf { dtype, bytes }))
            }
            Target::Ternary { group } => {
                let f = crate::ternary::format(group).map_err(|e| e.to_string())?;
                let (m, values) =
                    crate::ternary::quantize_exact(f, w, rows, cols, importance).map_err(|e| e.to_string())?;
                Ok((values, Quantized::Group(m)))
            }
            Target::Palette { format, seed } => {
                let m =
                    crate::palette::palettize(format, w, rows, cols, importance, seed).map_err(|e| e.to_string())?;
                Ok((m.view().dequantize(), Quantized::Palette(m)))
            }
        }
    }
}

impl Target {
    /// [`Target::round`]'s values alone, with unweighted block parameters: what a search over candidates compares.
    pub fn round_values(&self, w: &[f32], cols: usize) -> std::result::Result<Vec<f32>, String> {
        match *self {
            Target::Group(f) => round_rows(&GroupGrid(f), w, cols).map(|r| r.0),
            Target::Gguf { dtype, .. } => round_rows(&BlockGrid { dtype, importance: None }, w, cols).map(|r| r.0),
            Target::Ternary { group } => {
                let format = crate::ternary::format(group).map_err(|e| e.to_string())?;
                round_rows(&crate::ternary::TernaryGrid { format, importance: None }, w, cols).map(|r| r.0)
            }
            Target::Palette { format, seed } => {
                let rows = w.len() / cols.max(1);
                let m = crate::palette::palettize(format, w, rows, cols, None, seed).map_err(|e| e.to_string())?;
                Ok(m.view().dequantize())
            }
        }
    }
}

/// Every row fitted by `grid` and rounded onto it (the values and each row's parameters); errors name the row.
pub fn round_rows<G: RowGrid>(
    grid: &G,
    w: &[f32],
    cols: usize,
) -> std::result::Result<(Vec<f32>, Vec<G::Params>), String> {
    // Rows round independently: spread over the kernel threads (AWQ's search rounds whole expert stacks per α).
    let rows: Vec<&[f32]> = w.chunks_exact(cols.max(1)).collect();
    let mut values = vec![0f32; rows.len() * cols];
    let mut params: Vec<Option<std::result::Result<G::Params, String>>> = (0..rows.len()).map(|_| None).collect();
    let mut slots: Vec<(&mut [f32], &mut Option<_>)> = values.chunks_exact_mut(cols.max(1)).zip(&mut params).collect();
    lowbit_kernels::parallel_chunks_mut(&mut slots, 1, &|r, slot| {
        let (out, fitted) = &mut slot[0];
        let row = rows[r];
        **fitted = Some(grid.fit(row).inspect(|p| {
            out.iter_mut().zip(row).enumerate().for_each(|(c, (o, &v))| *o = grid.round(p, c, v));
        }));
    });
    let params = params
        .into_iter()
        .enumerate()
        .map(|(r, p)| p.expect("every row is fitted").map_err(|e| format!("row {r}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    Ok((values, params))
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
    /// Each group's range shrunk (AWQ's clip search) to whichever of `steps` factors `1, 1 − 1/(2·steps), …, > ½`
    /// gives the least output error `dᵀ·H_gg·d` (d: the group's rounding error, `H_gg`: its block of the input's
    /// second moments `h`, `cols × cols`), so clipping a few outlying weights is chosen where it lowers the error
    /// of the layer's output on the calibration inputs, not merely the weights' error. Returns each row's parameters.
    pub fn clip_search(
        &self,
        w: &[f32],
        cols: usize,
        h: &[f64],
        steps: usize,
    ) -> std::result::Result<Vec<GroupParams>, String> {
        let g = self.0.group;
        let blocks: Vec<Vec<f32>> = (0..cols.div_ceil(g))
            .map(|b| {
                let (c0, c1) = (b * g, ((b + 1) * g).min(cols));
                (c0..c1).flat_map(|i| (c0..c1).map(move |j| h[i * cols + j] as f32)).collect()
            })
            .collect();
        let rows: Vec<&[f32]> = w.chunks_exact(cols).collect();
        let mut out: Vec<std::result::Result<GroupParams, String>> = (0..rows.len()).map(|_| Ok(Vec::new())).collect();
        lowbit_kernels::parallel_chunks_mut(&mut out, 1, &|r, slot| {
            slot[0] = rows[r].chunks(g).zip(&blocks).map(|(x, hb)| self.clipped_params(x, hb, steps)).collect();
        });
        out.into_iter().enumerate().map(|(r, p)| p.map_err(|e| format!("row {r}: {e}"))).collect()
    }

    fn clipped_params(&self, x: &[f32], hb: &[f32], steps: usize) -> std::result::Result<(f16, u8), String> {
        let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
        let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
        let n = x.len();
        let mut d = vec![0f32; n];
        let mut best: Option<((f16, u8), f32)> = None;
        for k in 0..steps.max(1) {
            let shrink = 1.0 - k as f32 / (2 * steps.max(1)) as f32;
            let (s, z) = range_params(self.0, lo * shrink, hi * shrink)?;
            let s32 = s.to_f32();
            for (d, &v) in d.iter_mut().zip(x) {
                *d = v - (f32::from(encode(self.0, v, s32, z)) - f32::from(z)) * s32;
            }
            let e: f32 = hb.chunks_exact(n).zip(&d).map(|(row, &di)| di * lowbit_kernels::dot_f32(row, &d)).sum();
            if best.is_none_or(|(_, b)| e < b) {
                best = Some(((s, z), e));
            }
        }
        Ok(best.map(|(p, _)| p).expect("at least one step"))
    }

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
