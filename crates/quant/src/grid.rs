//! The grids calibrated methods round onto, one per storage family, as [`RowGrid`]s for GPTQ.

use half::f16;
use lowbit_formats::native::group::{encode, group_params, GroupFormat, GroupMatrix};
use lowbit_formats::Result;

use crate::gptq::RowGrid;

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
