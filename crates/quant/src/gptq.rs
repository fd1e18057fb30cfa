//! GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
//! Transformers", 2022): round a weight matrix one input column at a time and push each column's rounding
//! error onto the columns not yet rounded, weighted by the inverse Hessian of the layer's inputs, so the
//! layer's output on the calibration data changes as little as the grid allows.
//!
//! Every row of `W` is an independent least-squares problem sharing one Hessian, so the sweep runs over
//! tiles of rows in parallel, each tile column by column with the full update (the reference code's lazy
//! 128-column batches are a GPU memory-traffic device that gives the same result up to float rounding).
//! Dead columns (no calibration signal: `H_ii = 0`) are zeroed, `percdamp · mean(diag H)` damps the
//! diagonal (multiplied by 10 and retried when the Hessian is still not positive definite), and act-order
//! sweeps the columns by descending `H_ii`. What a column rounds to is the [`RowGrid`]'s business: with
//! act-order the grid parameters are fixed from the original weights before the sweep ("static groups",
//! so groups stay contiguous for the kernels); in column order each group is re-fitted from the weights as
//! they stand when the sweep reaches it, as the reference code does.

use serde::Serialize;

use crate::hessian::Hessian;
use crate::linalg::inverse_cholesky_upper;

/// GPTQ's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GptqOptions {
    /// Damping as a fraction of the mean Hessian diagonal (the reference's `percdamp`, 0.01).
    pub damp: f64,
    /// Sweep columns by descending Hessian diagonal, with grid parameters fixed beforehand.
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions { damp: 0.01, act_order: false }
    }
}

/// How one row of weights is rounded: the grid of a storage format.
pub trait RowGrid: Sync {
    /// A row's grid parameters (a scale and zero point per group, say).
    type Params: Send;
    /// The parameters of a whole row, fitted to its values.
    fn fit(&self, row: &[f32]) -> Result<Self::Params, String>;
    /// Whether a group begins at column `col` (where the column-order sweep re-fits).
    fn group_start(&self, col: usize) -> bool;
    /// Re-fits the group beginning at `col` to the row as it stands.
    fn refit_group(&self, params: &mut Self::Params, row: &[f32], col: usize) -> Result<(), String>;
    /// The grid value of column `col` nearest to `w`.
    fn round(&self, params: &Self::Params, col: usize, w: f32) -> f32;
}

/// A rounded matrix: its values on the grid (row-major, original column order) and each row's parameters.
pub struct GptqOutput<P> {
    pub values: Vec<f32>,
    pub params: Vec<P>,
    /// GPTQ's loss, `Σ (w − q)² / Hinv_ii² / 2` over every weight.
    pub loss: f64,
    /// The damping fraction that made the Hessian invertible.
    pub damp: f64,
    /// Columns without calibration signal, set to zero.
    pub dead_columns: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GptqError {
    #[error("the Hessian is not positive definite even with damping {0}")]
    NotPositiveDefinite(f64),
    #[error("the Hessian has {got} columns, the weight {want}")]
    Shape { got: usize, want: usize },
    #[error("the Hessian has seen no calibration tokens")]
    NoData,
    #[error("weight row {row}, column {col} is {value}")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("row {row}: {what}")]
    Grid { row: usize, what: String },
}

/// Rows rounded together, so each row of the inverse Hessian factor is read once per tile.
const TILE: usize = 8;
/// Damping retries, each ten times the last.
const DAMP_RETRIES: usize = 4;

/// GPTQ of `weight` (`rows × cols`, row-major) with the Hessian of its input.
pub fn gptq<G: RowGrid>(
    grid: &G,
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    opts: GptqOptions,
) -> Result<GptqOutput<G::Params>, GptqError> {
    if hessian.dim() != cols || weight.len() != rows * cols {
        return Err(GptqError::Shape { got: hessian.dim(), want: cols });
    }
    if hessian.tokens() == 0 {
        return Err(GptqError::NoData);
    }
    if let Some(i) = weight.iter().position(|v| !v.is_finite()) {
        return Err(GptqError::NonFinite { row: i / cols, col: i % cols, value: weight[i] });
    }
    let mut h = hessian.matrix();
    let mut w = weight.to_vec();
    let mut dead_columns = 0;
    for i in 0..cols {
        if h[i * cols + i] == 0.0 {
            h[i * cols + i] = 1.0;
            w.iter_mut().skip(i).step_by(cols).for_each(|v| *v = 0.0);
            dead_columns += 1;
        }
    }
    let mut perm: Vec<usize> = (0..cols).collect();
    if opts.act_order {
        perm.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
    }
    let mut hp: Vec<f64> = (0..cols * cols).map(|k| h[perm[k / cols] * cols + perm[k % cols]]).collect();
    let mean_diag = (0..cols).map(|i| hp[i * cols + i]).sum::<f64>() / cols as f64;
    let mut damp = opts.damp;
    let mut added = 0.0;
    let u = loop {
        let step = damp * mean_diag - added;
        (0..cols).for_each(|i| hp[i * cols + i] += step);
        added += step;
        if let Some(u) = inverse_cholesky_upper(&hp, cols) {
            break u;
        }
        if damp >= opts.damp * 10f64.powi(DAMP_RETRIES as i32) {
            return Err(GptqError::NotPositiveDefinite(damp));
        }
        damp *= 10.0;
    };
    let u: Vec<f32> = u.iter().map(|&v| v as f32).collect();

    let mut tiles: Vec<Tile<G::Params>> = w
        .chunks(TILE * cols)
        .enumerate()
        .map(|(t, chunk)| Tile { first_row: t * TILE, w: chunk.to_vec(), params: Vec::new(), loss: 0.0, err: None })
        .collect();
    drop(w);
    let sweep = |_: usize, tile: &mut [Tile<G::Params>]| {
        let tile = &mut tile[0];
        if let Err(e) = sweep_tile(grid, tile, cols, &perm, &u, opts.act_order) {
            tile.err = Some(e);
        }
    };
    lowbit_kernels::parallel_chunks_mut(&mut tiles, 1, &sweep);

    let mut out =
        GptqOutput { values: Vec::with_capacity(rows * cols), params: Vec::new(), loss: 0.0, damp, dead_columns };
    for tile in tiles {
        if let Some(e) = tile.err {
            return Err(e);
        }
        out.values.extend(tile.w);
        out.params.extend(tile.params);
        out.loss += tile.loss;
    }
    Ok(out)
}

/// A few rows and their sweep's results: `w` ends as the rounded values, in original column order.
struct Tile<P> {
    first_row: usize,
    w: Vec<f32>,
    params: Vec<P>,
    loss: f64,
    err: Option<GptqError>,
}

fn sweep_tile<G: RowGrid>(
    grid: &G,
    tile: &mut Tile<G::Params>,
    cols: usize,
    perm: &[usize],
    u: &[f32],
    act_order: bool,
) -> Result<(), GptqError> {
    let n = tile.w.len() / cols;
    let grid_err = |r: usize| move |what| GptqError::Grid { row: r, what };
    for (r, row) in tile.w.chunks(cols).enumerate() {
        tile.params.push(grid.fit(row).map_err(grid_err(tile.first_row + r))?);
    }
    // The rows in sweep order, updated in place; `q` collects the rounded values in original order.
    let mut wp: Vec<f32> = (0..n * cols).map(|k| tile.w[k / cols * cols + perm[k % cols]]).collect();
    let mut err = [0f32; TILE];
    for p in 0..cols {
        let c = perm[p];
        let d = u[p * cols + p];
        for r in 0..n {
            let row = &mut wp[r * cols..(r + 1) * cols];
            if !act_order && grid.group_start(c) {
                // Column order: `row` is in original order, with the columns before `c` already rounded.
                grid.refit_group(&mut tile.params[r], row, c).map_err(grid_err(tile.first_row + r))?;
            }
            let w = row[p];
            let q = grid.round(&tile.params[r], c, w);
            tile.w[r * cols + c] = q;
            tile.loss += f64::from((w - q) * (w - q) / (d * d)) / 2.0;
            err[r] = (w - q) / d;
            row[p] = q;
        }
        let spread = &u[p * cols + p + 1..(p + 1) * cols];
        for (r, e) in err.iter().enumerate().take(n) {
            let rest = &mut wp[r * cols + p + 1..(r + 1) * cols];
            lowbit_kernels::axpy_f32(-e, spread, rest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use lowbit_formats::native::group::{quantize, GroupFormat};

    use super::*;
    use crate::grid::GroupGrid;

    fn noise(seed: u64, n: usize) -> Vec<f32> {
        lowbit_testdata::Rng::new(seed).units(n)
    }

    /// `n` tokens of `dim` inputs with strongly correlated neighbouring channels and uneven scales.
    fn inputs(n: usize, dim: usize) -> Vec<f32> {
        let z = noise(7, n * dim);
        let mut x = vec![0f32; n * dim];
        for t in 0..n {
            for i in 0..dim {
                let prev = if i > 0 { x[t * dim + i - 1] } else { 0.0 };
                x[t * dim + i] = 0.8 * prev + z[t * dim + i] * (1.0 + (i % 5) as f32);
            }
        }
        x
    }

    fn output_error(x: &[f32], w: &[f32], q: &[f32], rows: usize, cols: usize) -> f64 {
        let n = x.len() / cols;
        let mut e = 0.0;
        for t in 0..n {
            for r in 0..rows {
                let d: f32 = (0..cols).map(|c| x[t * cols + c] * (w[r * cols + c] - q[r * cols + c])).sum();
                e += f64::from(d * d);
            }
        }
        e
    }

    #[test]
    fn diagonal_hessian_is_round_to_nearest() {
        // Uncorrelated inputs: nothing to compensate, so every code is RTN's.
        let (rows, cols, f) = (5, 96, GroupFormat::new(4, 64, false).unwrap());
        let w = noise(1, rows * cols);
        let mut h = Hessian::new(cols);
        for i in 0..cols {
            let mut e = vec![0f32; cols];
            e[i] = 1.0 + i as f32 / 10.0;
            h.add(&e, 1);
        }
        let grid = GroupGrid(f);
        let out = gptq(&grid, &w, rows, cols, &h, GptqOptions::default()).unwrap();
        let packed = grid.pack(&out.values, &out.params, rows, cols).unwrap();
        assert_eq!(packed, quantize(f, &w, rows, cols).unwrap());
        assert_eq!(packed.view().dequantize(), out.values);
    }

    #[test]
    fn correlated_inputs_lose_less_than_round_to_nearest() {
        let (rows, cols, n) = (12, 128, 512);
        let x = inputs(n, cols);
        let mut h = Hessian::new(cols);
        h.add(&x, n);
        let w = noise(2, rows * cols);
        for (f, act_order) in
            [(GroupFormat::new(4, 32, true).unwrap(), false), (GroupFormat::new(3, 64, false).unwrap(), true)]
        {
            let grid = GroupGrid(f);
            let out = gptq(&grid, &w, rows, cols, &h, GptqOptions { act_order, ..Default::default() }).unwrap();
            let packed = grid.pack(&out.values, &out.params, rows, cols).unwrap();
            assert_eq!(packed.view().dequantize(), out.values, "values lie on the stored grid");
            let rtn = quantize(f, &w, rows, cols).unwrap().view().dequantize();
            let (e_gptq, e_rtn) =
                (output_error(&x, &w, &out.values, rows, cols), output_error(&x, &w, &rtn, rows, cols));
            assert!(e_gptq < 0.7 * e_rtn, "{} act_order={act_order}: GPTQ {e_gptq} vs RTN {e_rtn}", f.name());
            if act_order {
                // Static groups: the scales are RTN's, fitted to the original weights.
                assert_eq!(packed.scales, quantize(f, &w, rows, cols).unwrap().scales);
            }
        }
    }

    /// GPTQ onto the ternary grid and onto per-row palettes: the values lie on the stored grid and the output
    /// error is well below the same grid's rounding to nearest (the exact ternary fit, k-means palettes).
    #[test]
    fn ternary_and_palette_grids_lose_less_than_their_rounding() {
        use lowbit_formats::native::PaletteFormat;
        let (rows, cols, n) = (12, 128, 512);
        let x = inputs(n, cols);
        let mut h = Hessian::new(cols);
        h.add(&x, n);
        let w = noise(3, rows * cols);
        let opts = GptqOptions::default();

        let f = crate::ternary::format(64).unwrap();
        let grid = crate::ternary::TernaryGrid { format: f, importance: None };
        let out = gptq(&grid, &w, rows, cols, &h, opts).unwrap();
        assert_eq!(grid.pack(&out.values, &out.params, rows, cols).unwrap().view().dequantize(), out.values);
        let rtn = crate::ternary::quantize_exact(f, &w, rows, cols, None).unwrap().1;
        let (e_gptq, e_rtn) = (output_error(&x, &w, &out.values, rows, cols), output_error(&x, &w, &rtn, rows, cols));
        assert!(e_gptq < 0.7 * e_rtn, "ternary: GPTQ {e_gptq} vs exact fit {e_rtn}");

        let f = PaletteFormat::new(2, Some(1), false).unwrap();
        let grid = crate::palette::PaletteGrid::new(f, None, 0).unwrap();
        let out = gptq(&grid, &w, rows, cols, &h, opts).unwrap();
        assert_eq!(grid.pack(&out.values, &out.params, rows, cols).unwrap().view().dequantize(), out.values);
        let rtn = crate::palette::palettize(f, &w, rows, cols, None, 0).unwrap().view().dequantize();
        let (e_gptq, e_rtn) = (output_error(&x, &w, &out.values, rows, cols), output_error(&x, &w, &rtn, rows, cols));
        assert!(e_gptq < 0.7 * e_rtn, "palettes: GPTQ {e_gptq} vs k-means {e_rtn}");
        assert!(crate::palette::PaletteGrid::new(PaletteFormat::new(2, Some(8), false).unwrap(), None, 0).is_err());
    }

    #[test]
    fn gguf_blocks_hold_exactly_gptqs_values_and_lose_less_than_the_imatrix_rounding() {
        use lowbit_formats::dequant::dequantize;
        use lowbit_formats::quantize::quantize;

        use crate::grid::BlockGrid;
        let (rows, cols, n) = (6, 512, 1024);
        let x = inputs(n, cols);
        let mut h = Hessian::new(cols);
        h.add(&x, n);
        let w = noise(4, rows * cols);
        let importance = h.importance();
        for dtype in lowbit_formats::quantize::GRID_TYPES {
            let grid = BlockGrid { dtype, importance: Some(importance.clone()) };
            let imatrix = dequantize(dtype, &quantize(dtype, &w, cols, Some(&importance)).unwrap(), w.len()).unwrap();
            let e_imatrix = output_error(&x, &w, &imatrix, rows, cols);
            for act_order in [false, true] {
                let out = gptq(&grid, &w, rows, cols, &h, GptqOptions { act_order, ..Default::default() }).unwrap();
                let packed = grid.pack(&out.values, &out.params, cols).unwrap();
                assert_eq!(dequantize(dtype, &packed, w.len()).unwrap(), out.values, "{dtype} act_order={act_order}");
                let e_gptq = output_error(&x, &w, &out.values, rows, cols);
                assert!(e_gptq < e_imatrix, "{dtype} act_order={act_order}: GPTQ {e_gptq} vs imatrix {e_imatrix}");
            }
        }
    }

    #[test]
    fn dead_columns_are_zeroed_and_bad_weights_refused() {
        let (rows, cols) = (3, 32);
        let mut x = inputs(64, cols);
        x.iter_mut().skip(5).step_by(cols).for_each(|v| *v = 0.0);
        let mut h = Hessian::new(cols);
        h.add(&x, 64);
        let mut w = noise(3, rows * cols);
        let grid = GroupGrid(GroupFormat::new(8, 32, true).unwrap());
        let out = gptq(&grid, &w, rows, cols, &h, GptqOptions::default()).unwrap();
        assert_eq!(out.dead_columns, 1);
        assert!((0..rows).all(|r| out.values[r * cols + 5] == 0.0));
        w[40] = f32::NAN;
        assert!(matches!(
            gptq(&grid, &w, rows, cols, &h, GptqOptions::default()),
            Err(GptqError::NonFinite { row: 1, col: 8, .. })
        ));
        assert!(matches!(
            gptq(&grid, &w, rows, cols, &Hessian::new(cols), GptqOptions::default()),
            Err(GptqError::NoData)
        ));
    }
}
