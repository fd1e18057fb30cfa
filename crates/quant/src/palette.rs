//! Palettization by weighted k-means (coremltools' `OpPalettizerConfig(mode="kmeans")`), into the layout of
//! `lowbit_formats::native::palette`.
//!
//! Each palette serves a group of rows. With per-channel scales every row is first divided by its scale, the
//! f16 of its largest |w| (so palettes see values in [−1, 1]). The group's values `x` are clustered into `2^bits`
//! centres minimising `Σ v·(x − c)²`, where a value's weight `v` is its column's importance (mean x² of the
//! calibration inputs, as an importance matrix holds it; 1 without calibration) times its row scale squared, so
//! the error is the output error in the weights' own units:
//!
//! * k-means++ seeding: the first centre drawn with probability ∝ v, each next ∝ v·D² (D: distance to the
//!   nearest centre so far), from a SplitMix64 stream seeded per palette;
//! * Lloyd's iterations on the sorted values: in one dimension a cluster is the interval between the midpoints
//!   of its neighbouring centres, so an iteration is a binary search per boundary and a difference of prefix
//!   sums per cluster (a value exactly at a midpoint joins the lower cluster); an empty cluster keeps its centre;
//!   until no centre moves, at most [`MAX_ITERATIONS`];
//! * the centres are rounded to f16 and each weight takes the nearest stored value (`lut[u]·scale` as
//!   dequantization computes it; ties to the lower index), so the file reproduces the assignment exactly.
//!
//! A group with fewer distinct values than entries gets each of them once and repeats the last.

use half::f16;
use lowbit_formats::native::palette::{PaletteFormat, PaletteMatrix};
use lowbit_formats::{FormatError, Result};

use crate::calib_data::SplitMix64;

/// Lloyd's iterations at most (1-D k-means on a group settles in far fewer).
pub const MAX_ITERATIONS: usize = 100;

/// Palettizes the `rows × cols` matrix `values` (row-major) into `format`, weighting each column by
/// `importance` when given; `seed` fixes the k-means++ draws.
pub fn palettize(
    format: PaletteFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    seed: u64,
) -> Result<PaletteMatrix> {
    palettize_part(format, values, rows, cols, importance, seed, 0)
}

/// [`palettize`] of a slice of a matrix's rows whose first palette is the matrix's palette `first_palette`: the
/// slices of a matrix whose palettes they do not split, palettized one by one, are the whole matrix palettized.
pub fn palettize_part(
    format: PaletteFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
    seed: u64,
    first_palette: usize,
) -> Result<PaletteMatrix> {
    format.check_shape(rows, cols)?;
    if values.len() != rows * cols {
        return Err(FormatError::Invalid(format!("{} values are not a {rows}×{cols} matrix", values.len())));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let (r, c) = (i / cols, i % cols);
        return Err(FormatError::Invalid(format!("row {r}, column {c}: {} cannot be palettized", values[i])));
    }
    if let Some(w) = importance {
        if w.len() != cols || w.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(FormatError::Invalid(format!("importance: {} weights for {cols} columns, each ≥ 0", w.len())));
        }
    }
    let scales: Vec<f32> = match format.channel_scale {
        true => values
            .chunks_exact(cols)
            .map(|row| f16::from_f32(row.iter().fold(0f32, |m, v| m.max(v.abs()))).to_f32())
            .collect(),
        false => Vec::new(),
    };
    let scale = |r: usize| scales.get(r).copied().unwrap_or(1.0);
    let per = format.rows_per_palette(rows);
    // Palettes are independent: each is clustered on its own, groups of them across threads.
    let palette_of = |p: usize| -> (Vec<f32>, Vec<u8>) {
        let (r0, group) = (p * per, &values[p * per * cols..((p + 1) * per).min(rows) * cols]);
        let mut points = Vec::with_capacity(group.len());
        for (i, &w) in group.iter().enumerate() {
            let (r, c) = (r0 + i / cols, i % cols);
            let s = scale(r);
            let x = if s > 0.0 { w / s } else { 0.0 };
            points.push((x, importance.map_or(1.0, |imp| f64::from(imp[c])) * f64::from(s) * f64::from(s)));
        }
        let mut rng = SplitMix64(seed ^ ((first_palette + p) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let centres = kmeans(&mut points, format.entries(), &mut rng);
        let palette: Vec<f32> = centres.iter().map(|&c| f16::from_f32(c as f32).to_f32()).collect();
        let indices: Vec<u8> = group
            .iter()
            .enumerate()
            .map(|(i, &w)| nearest(&palette, scale(r0 + i / cols), format.channel_scale, w))
            .collect();
        (palette, indices)
    };
    let n = format.n_palettes(rows);
    let mut parts: Vec<(Vec<f32>, Vec<u8>)> = vec![Default::default(); n];
    let chunk = n.div_ceil(4 * lowbit_kernels::threads()).max(1);
    lowbit_kernels::parallel_chunks_mut(&mut parts, chunk, &|ci, slots| {
        for (j, slot) in slots.iter_mut().enumerate() {
            *slot = palette_of(ci * chunk + j);
        }
    });
    let mut lut = Vec::with_capacity(n * format.entries());
    let mut indices = Vec::with_capacity(values.len());
    for (palette, idx) in parts {
        lut.extend(palette);
        indices.extend(idx);
    }
    PaletteMatrix::from_indices(format, rows, cols, &indices, &lut, &scales)
}

/// The grid GPTQ rounds onto for palettes of one row each (`group_rows` 1, no channel scales): the row's palette
/// clustered (weighted by the input's importance, the Hessian diagonal, when given) from the row's weights when
/// the sweep starts, every weight then the nearest stored entry.
pub struct PaletteGrid {
    pub format: PaletteFormat,
    pub importance: Option<Vec<f32>>,
    pub seed: u64,
}

impl PaletteGrid {
    /// The grid of `format`, which must hold a palette per row without channel scales.
    pub fn new(format: PaletteFormat, importance: Option<Vec<f32>>, seed: u64) -> Result<PaletteGrid> {
        if format.group_rows != Some(1) || format.channel_scale {
            return Err(FormatError::Invalid(format!(
                "{}: GPTQ rounds onto a palette per row without channel scales",
                format.name()
            )));
        }
        Ok(PaletteGrid { format, importance, seed })
    }

    /// Packs values on the grid of `params` (GPTQ's output): each row's indices under its palette.
    pub fn pack(&self, values: &[f32], params: &[Vec<f32>], rows: usize, cols: usize) -> Result<PaletteMatrix> {
        let mut indices = Vec::with_capacity(values.len());
        for (row, palette) in values.chunks_exact(cols).zip(params) {
            indices.extend(row.iter().map(|&w| nearest(palette, 1.0, false, w)));
        }
        let lut: Vec<f32> = params.iter().flatten().copied().collect();
        PaletteMatrix::from_indices(self.format, rows, cols, &indices, &lut, &[])
    }
}

impl crate::gptq::RowGrid for PaletteGrid {
    type Params = Vec<f32>;

    fn fit(&self, row: &[f32]) -> std::result::Result<Vec<f32>, String> {
        let mut points: Vec<(f32, f64)> = row
            .iter()
            .enumerate()
            .map(|(c, &w)| (w, self.importance.as_ref().map_or(1.0, |imp| f64::from(imp[c]))))
            .collect();
        if points.iter().any(|p| !p.0.is_finite()) {
            return Err("a weight that is not finite".into());
        }
        let centres = kmeans(&mut points, self.format.entries(), &mut SplitMix64(self.seed));
        Ok(centres.iter().map(|&c| f16::from_f32(c as f32).to_f32()).collect())
    }

    fn group_start(&self, col: usize) -> bool {
        col == 0
    }

    fn refit_group(&self, params: &mut Vec<f32>, row: &[f32], _col: usize) -> std::result::Result<(), String> {
        *params = self.fit(row)?;
        Ok(())
    }

    fn round(&self, params: &Vec<f32>, _col: usize, w: f32) -> f32 {
        params[usize::from(nearest(params, 1.0, false, w))]
    }
}

/// The index whose stored value (`palette[u]·s` with per-channel scales) is nearest `w`; ties to the lower.
fn nearest(palette: &[f32], s: f32, scaled: bool, w: f32) -> u8 {
    let mut best = (f32::INFINITY, 0u8);
    for (u, &c) in palette.iter().enumerate() {
        let d = (w - if scaled { c * s } else { c }).abs();
        if d < best.0 {
            best = (d, u as u8);
        }
    }
    best.1
}

/// `k` centres, ascending, for the weighted 1-D points `(x, v)` (sorted here): k-means++ seeds, then Lloyd.
fn kmeans(points: &mut [(f32, f64)], k: usize, rng: &mut SplitMix64) -> Vec<f64> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    if points.iter().all(|p| p.1 == 0.0) {
        // No column carries weight (an unseen input): cluster the values as they are.
        points.iter_mut().for_each(|p| p.1 = 1.0);
    }
    let mut distinct: Vec<f64> = Vec::new();
    for p in points.iter() {
        if distinct.last() != Some(&f64::from(p.0)) {
            distinct.push(f64::from(p.0));
            if distinct.len() > k {
                break;
            }
        }
    }
    if distinct.len() <= k {
        let last = distinct.last().copied().unwrap_or(0.0);
        distinct.resize(k, last);
        return distinct;
    }
    let mut centres = seed_centres(points, k, rng);
    // Prefix sums of v and v·x over the sorted points: a cluster's mean is a difference of two of each.
    let (mut sw, mut swx) = (vec![0f64; points.len() + 1], vec![0f64; points.len() + 1]);
    for (i, &(x, v)) in points.iter().enumerate() {
        sw[i + 1] = sw[i] + v;
        swx[i + 1] = swx[i] + v * f64::from(x);
    }
    for _ in 0..MAX_ITERATIONS {
        let mut next = centres.clone();
        let mut start = 0;
        for j in 0..k {
            let end = match j + 1 < k {
                true => {
                    let mid = 0.5 * (centres[j] + centres[j + 1]);
                    points.partition_point(|p| f64::from(p.0) <= mid)
                }
                false => points.len(),
            };
            let end = end.max(start);
            let w = sw[end] - sw[start];
            if w > 0.0 {
                next[j] = (swx[end] - swx[start]) / w;
            }
            start = end;
        }
        next.sort_by(f64::total_cmp);
        if next == centres {
            break;
        }
        centres = next;
    }
    centres
}

/// k-means++: the first centre ∝ v, each next ∝ v·D².
fn seed_centres(points: &[(f32, f64)], k: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let uniform = |rng: &mut SplitMix64| (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let draw = |weights: &mut dyn Iterator<Item = f64>, total: f64, rng: &mut SplitMix64| {
        let target = uniform(rng) * total;
        let mut acc = 0.0;
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            acc += w;
            last = i;
            if acc > target {
                return i;
            }
        }
        last
    };
    let total: f64 = points.iter().map(|p| p.1).sum();
    let first = draw(&mut points.iter().map(|p| p.1), total, rng);
    let mut centres = vec![f64::from(points[first].0)];
    let mut d2: Vec<f64> = points.iter().map(|p| (f64::from(p.0) - centres[0]).powi(2)).collect();
    while centres.len() < k {
        let total: f64 = points.iter().zip(&d2).map(|(p, d)| p.1 * d).sum();
        if total <= 0.0 {
            break;
        }
        let i = draw(&mut points.iter().zip(&d2).map(|(p, d)| p.1 * d), total, rng);
        let c = f64::from(points[i].0);
        centres.push(c);
        d2.iter_mut().zip(points).for_each(|(d, p)| *d = d.min((f64::from(p.0) - c).powi(2)));
    }
    // Fewer distinct draws than entries (every weighted point already a centre): repeat the last.
    let last = *centres.last().unwrap_or(&0.0);
    centres.resize(k, last);
    centres.sort_by(f64::total_cmp);
    centres
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowbit_formats::native::group;

    /// Deterministic roughly Gaussian values (sum of four uniforms).
    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|_| (0..4).map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).sum::<f32>() * 0.05)
            .collect()
    }

    fn weighted_error(a: &[f32], b: &[f32], cols: usize, w: Option<&[f32]>) -> f64 {
        a.iter()
            .zip(b)
            .enumerate()
            .map(|(i, (x, y))| f64::from(w.map_or(1.0, |w| w[i % cols])) * f64::from(x - y).powi(2))
            .sum::<f64>()
    }

    #[test]
    fn separated_clusters_are_found_exactly() {
        let levels = [-0.5f32, -0.125, 0.25, 1.0];
        let (rows, cols) = (4, 64);
        let values: Vec<f32> = (0..rows * cols).map(|i| levels[(i * 5 + i / 7) % 4]).collect();
        let f = PaletteFormat::new(2, None, false).unwrap();
        let m = palettize(f, &values, rows, cols, None, 1).unwrap();
        assert_eq!(m.view().dequantize(), values);
        assert_eq!(m.view().palette(0), levels);
    }

    #[test]
    fn error_falls_with_bits_and_beats_uniform_levels() {
        let (rows, cols) = (32, 256);
        let values = gaussian(rows * cols, 7);
        let mut last = f64::INFINITY;
        for bits in [2u8, 3, 4] {
            let f = PaletteFormat::new(bits, Some(8), true).unwrap();
            let lut = palettize(f, &values, rows, cols, None, 0).unwrap().view().dequantize();
            let err = weighted_error(&values, &lut, cols, None);
            // Round to nearest on uniform levels, a scale per 64 weights (more scale bits than the palettes have).
            let g = group::GroupFormat::new(bits, 64, true).unwrap();
            let rtn = group::quantize(g, &values, rows, cols).unwrap().view().dequantize();
            let rtn_err = weighted_error(&values, &rtn, cols, None);
            println!("{bits} bits: k-means {err:.4e}, RTN g64 {rtn_err:.4e}");
            assert!(err < last, "{bits} bits: {err} not below {last}");
            assert!(err < rtn_err, "{bits} bits: k-means {err} against RTN {rtn_err}");
            last = err;
        }
    }

    #[test]
    fn importance_lowers_the_weighted_error() {
        let (rows, cols) = (16, 128);
        let values = gaussian(rows * cols, 3);
        let imp: Vec<f32> = (0..cols).map(|c| if c % 8 == 0 { 50.0 } else { 1.0 }).collect();
        let f = PaletteFormat::new(2, Some(16), false).unwrap();
        let plain = palettize(f, &values, rows, cols, None, 0).unwrap().view().dequantize();
        let weighted = palettize(f, &values, rows, cols, Some(&imp), 0).unwrap().view().dequantize();
        let (a, b) =
            (weighted_error(&values, &plain, cols, Some(&imp)), weighted_error(&values, &weighted, cols, Some(&imp)));
        assert!(b < a, "weighted {b} against unweighted {a}");
    }

    #[test]
    fn seeded_runs_repeat_and_degenerate_groups_work() {
        let (rows, cols) = (4, 32);
        let values = gaussian(rows * cols, 11);
        let f = PaletteFormat::new(3, Some(2), true).unwrap();
        assert_eq!(
            palettize(f, &values, rows, cols, None, 5).unwrap(),
            palettize(f, &values, rows, cols, None, 5).unwrap()
        );
        let zeros = vec![0f32; rows * cols];
        assert_eq!(palettize(f, &zeros, rows, cols, None, 0).unwrap().view().dequantize(), zeros);
        let two: Vec<f32> = (0..rows * cols).map(|i| if i % 3 == 0 { 0.5 } else { -0.25 }).collect();
        assert_eq!(palettize(f, &two, rows, cols, Some(&[0.0; 32]), 0).unwrap().view().dequantize(), two);
    }

    /// Slices that do not split a palette, palettized one by one, are the whole matrix palettized (how exports
    /// stream a matrix).
    #[test]
    fn slices_palettize_as_the_whole() {
        let (rows, cols) = (12, 64);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0).powi(3)).collect();
        for group_rows in [1, 4] {
            let f = PaletteFormat::new(2, Some(group_rows), true).unwrap();
            let whole = palettize(f, &w, rows, cols, None, 9).unwrap();
            let (mut codes, mut lut, mut scales) = (Vec::new(), Vec::new(), Vec::new());
            for r0 in (0..rows).step_by(8) {
                let r1 = (r0 + 8).min(rows);
                let part =
                    palettize_part(f, &w[r0 * cols..r1 * cols], r1 - r0, cols, None, 9, r0 / group_rows).unwrap();
                codes.extend(part.codes);
                lut.extend(part.lut);
                scales.extend(part.scales);
            }
            assert_eq!((codes, lut, scales), (whole.codes, whole.lut, whole.scales), "{}", f.name());
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let f = PaletteFormat::new(2, None, false).unwrap();
        let mut values = vec![0.1f32; 64];
        assert!(palettize(f, &values, 2, 32, Some(&[1.0; 31]), 0).is_err());
        assert!(palettize(f, &values, 2, 32, Some(&[-1.0; 32]), 0).is_err());
        assert!(palettize(f, &values, 3, 32, None, 0).is_err());
        values[40] = f32::NAN;
        let err = palettize(f, &values, 2, 32, None, 0).unwrap_err().to_string();
        assert!(err.contains("row 1, column 8"), "{err}");
    }
}
