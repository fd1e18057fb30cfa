//! Ternary weights ({−α, 0, +α} per group, 1.58 bits of information per weight): BitNet b1.58's absmean rule as the
//! baseline, the exact per-group fit, and the grid GPTQ rounds onto for the PT-BitNet-style method.
//!
//! Storage. A ternary matrix is stored in the symmetric 2-bit group format (`int2-gG-sym`: codes packed four per
//! byte as bitnet.cpp's I2_S packs them, an f16 scale per group, implied zero point 2), using only the codes 1, 2
//! and 3, which decode to −α, 0 and +α. The group kernels run it as they run any 2-bit matrix.
//!
//! Fits (W a group of weights w_i, optional importance c_i ≥ 0, the error Σ c_i (w_i − α t_i)²):
//! - **absmean** (BitNet b1.58, per tensor): γ = mean |W| over the whole tensor, t = clip(round(w/γ), −1, 1),
//!   α = γ. No calibration; on an ordinary model it collapses, which is the point of the baseline.
//! - **exact** (per group): the least-squares {−α, 0, α} fit, found exactly in one sorted pass
//!   (`lowbit_formats::quantize::exact_scale`, which the GGUF ternary grids share).

use half::f16;
use lowbit_formats::native::group::{GroupFormat, GroupMatrix};
use lowbit_formats::native::Storage;
use lowbit_formats::Result;

use crate::gptq::RowGrid;

/// How a ternary build fits its scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TernaryRule {
    /// BitNet b1.58: one mean |w| per tensor.
    Absmean,
    /// The exact fit per group (by GPTQ's sweep when calibrated).
    Exact,
}

/// `--method absmean|ternary|ptbitnet`: which matrices are ternary and how. The token embedding and the output
/// projection stay at 8 bits per channel (their error reaches every token; BitNet keeps them wide too); routers,
/// norms and biases stay wide as under every scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TernaryScheme {
    pub rule: TernaryRule,
    /// Columns per scale for [`TernaryRule::Exact`] (absmean has one per tensor, stored per row).
    pub group: usize,
    /// Store ternary matrices five trits per byte (`trits-gG`, 1.6 bits per weight) rather than as 2-bit codes.
    pub packed: bool,
}

impl TernaryScheme {
    /// The stored format of tensor `name` of `shape`, or `None` when it stays unquantized.
    pub fn format_for(&self, name: &str, shape: &[usize]) -> Option<GroupFormat> {
        let cols = crate::rtn::quantized_cols(name, shape)?;
        if crate::rtn::is_embedding(name) {
            return GroupFormat::new(8, cols, true).ok();
        }
        match self.rule {
            TernaryRule::Absmean => format(cols).ok(),
            TernaryRule::Exact => format(self.group).ok(),
        }
    }

    /// How tensor `name` of `shape` is stored: [`Self::format_for`]'s format, its ternary matrices as trits
    /// when packed.
    pub fn storage_for(&self, name: &str, shape: &[usize]) -> Option<Storage> {
        let f = self.format_for(name, shape)?;
        Some(match (self.packed && f.bits == 2, shape) {
            (true, [_, _]) => Storage::Trits { group: f.group },
            _ => Storage::group(f),
        })
    }

    /// `ternary-absmean`, `ternary-g128`, `ternary-g128-trits`.
    pub fn name(&self) -> String {
        let name = match self.rule {
            TernaryRule::Absmean => "ternary-absmean".into(),
            TernaryRule::Exact => format!("ternary-g{}", self.group),
        };
        if self.packed {
            name + "-trits"
        } else {
            name
        }
    }

    /// Whether tensor `name` is ternary under this scheme (rather than kept wider).
    pub fn is_ternary(&self, name: &str, shape: &[usize]) -> bool {
        self.format_for(name, shape).is_some_and(|f| f.bits == 2)
    }
}

/// The one 2-bit format of a ternary matrix with groups of `group` columns.
pub fn format(group: usize) -> Result<GroupFormat> {
    GroupFormat::new(2, group, true)
}

/// The exact ternary scale of a group: the α of the best {−α, 0, α} fit of `x` under weights `c` (all 1 when
/// `None`), rounded to f16 (the stored scale). 0 for an all-zero group.
pub fn exact_scale(x: &[f32], c: Option<&[f32]>) -> f16 {
    f16::from_f32(lowbit_formats::quantize::exact_scale(x, c))
}

/// The code (−1, 0 or 1) nearest to `w / alpha`.
pub fn trit(w: f32, alpha: f32) -> i8 {
    if alpha == 0.0 {
        return 0;
    }
    (w / alpha).round_ties_even().clamp(-1.0, 1.0) as i8
}

/// BitNet b1.58's per-tensor scale: mean |w|, rounded to f16.
pub fn absmean_scale(values: &[f32]) -> f16 {
    let sum: f64 = values.iter().map(|&v| f64::from(v.abs())).sum();
    f16::from_f64(sum / values.len().max(1) as f64)
}

/// Packs ternary codes `t` (row-major) under per-group scales (`rows × n_groups`) into the 2-bit format.
pub fn pack(f: GroupFormat, t: &[i8], scales: &[f16], rows: usize, cols: usize) -> Result<GroupMatrix> {
    let codes: Vec<u8> = t.iter().map(|&t| (t + 2) as u8).collect();
    GroupMatrix::from_codes(f, rows, cols, &codes, scales, &[])
}

/// A matrix ternarized to nearest under the scales `scale_of(row, group values)`; returns it and its values.
fn ternarize(
    f: GroupFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    scale_of: &dyn Fn(usize, &[f32]) -> f16,
) -> Result<(GroupMatrix, Vec<f32>)> {
    let mut scales = Vec::with_capacity(rows * f.n_groups(cols));
    let mut t = Vec::with_capacity(values.len());
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(cols) {
        for (gi, g) in row.chunks(f.group).enumerate() {
            let a = scale_of(gi * f.group, g);
            let a32 = a.to_f32();
            scales.push(a);
            for &v in g {
                let q = trit(v, a32);
                t.push(q);
                out.push(f32::from(q) * a32);
            }
        }
    }
    Ok((pack(f, &t, &scales, rows, cols)?, out))
}

/// Every group fitted exactly (weighted by the per-column `importance` when given).
pub fn quantize_exact(
    f: GroupFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
) -> Result<(GroupMatrix, Vec<f32>)> {
    ternarize(f, values, rows, cols, &|c0, g| exact_scale(g, importance.map(|w| &w[c0..c0 + g.len()])))
}

/// BitNet b1.58's absmean: one scale `gamma` for the whole tensor (see [`absmean_scale`]).
pub fn quantize_absmean(
    f: GroupFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    gamma: f16,
) -> Result<(GroupMatrix, Vec<f32>)> {
    ternarize(f, values, rows, cols, &|_, _| gamma)
}

/// The ternary grid GPTQ rounds onto: a scale per group, fitted exactly to the group's weights as they stand
/// (weighted by the input's importance, the Hessian diagonal, when given).
pub struct TernaryGrid {
    pub format: GroupFormat,
    pub importance: Option<Vec<f32>>,
}

impl TernaryGrid {
    fn fit_group(&self, row: &[f32], c0: usize) -> f16 {
        let end = (c0 + self.format.group).min(row.len());
        exact_scale(&row[c0..end], self.importance.as_deref().map(|w| &w[c0..end]))
    }

    /// Packs values on the grid of `params` (GPTQ's output).
    pub fn pack(&self, values: &[f32], params: &[Vec<f16>], rows: usize, cols: usize) -> Result<GroupMatrix> {
        let g = self.format.group;
        let mut t = Vec::with_capacity(values.len());
        for (row, p) in values.chunks_exact(cols).zip(params) {
            t.extend(row.iter().enumerate().map(|(c, &v)| trit(v, p[c / g].to_f32())));
        }
        let scales: Vec<f16> = params.iter().flatten().copied().collect();
        pack(self.format, &t, &scales, rows, cols)
    }
}

impl RowGrid for TernaryGrid {
    type Params = Vec<f16>;

    fn fit(&self, row: &[f32]) -> std::result::Result<Vec<f16>, String> {
        Ok((0..row.len()).step_by(self.format.group).map(|c0| self.fit_group(row, c0)).collect())
    }

    fn group_start(&self, col: usize) -> bool {
        col.is_multiple_of(self.format.group)
    }

    fn refit_group(&self, params: &mut Vec<f16>, row: &[f32], col: usize) -> std::result::Result<(), String> {
        params[col / self.format.group] = self.fit_group(row, col);
        Ok(())
    }

    fn round(&self, params: &Vec<f16>, col: usize, w: f32) -> f32 {
        let a = params[col / self.format.group].to_f32();
        f32::from(trit(w, a)) * a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact fit against a brute force over every threshold, weighted and not; and never worse than TWN's
    /// rule or absmean on the same group.
    #[test]
    fn the_exact_fit_is_the_best_threshold() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for case in 0..50 {
            let x: Vec<f32> = (0..64).map(|i| next() * if i % 13 == case % 13 { 4.0 } else { 1.0 }).collect();
            let c: Vec<f32> = (0..64).map(|_| next().abs() + 0.05).collect();
            for weights in [None, Some(&c[..])] {
                let w = |i: usize| weights.map_or(1.0, |c| c[i]);
                let err = |a: f32| -> f64 {
                    x.iter()
                        .enumerate()
                        .map(|(i, &v)| w(i) as f64 * ((v - f32::from(trit(v, a)) * a) as f64).powi(2))
                        .sum()
                };
                let a = exact_scale(&x, weights).to_f32();
                // Brute force: every nonzero set {|w| ≥ τ} and its best α.
                let best = x
                    .iter()
                    .map(|t| {
                        let keep: Vec<usize> = (0..64).filter(|&i| x[i].abs() >= t.abs()).collect();
                        let s: f64 = keep.iter().map(|&i| w(i) as f64 * x[i].abs() as f64).sum();
                        let cs: f64 = keep.iter().map(|&i| w(i) as f64).sum();
                        err((s / cs) as f32)
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!(err(a) <= best * (1.0 + 1e-3) + 1e-9, "case {case}: {} vs {best}", err(a));
                let twn = 0.7 * x.iter().map(|v| v.abs()).sum::<f32>() / 64.0;
                let twn_alpha = {
                    let nz: Vec<f32> = x.iter().map(|v| v.abs()).filter(|&v| v > twn).collect();
                    nz.iter().sum::<f32>() / nz.len() as f32
                };
                assert!(err(a) <= err(twn_alpha) * (1.0 + 1e-3), "case {case}: TWN beats the exact fit");
                assert!(err(a) <= err(absmean_scale(&x).to_f32()) * (1.0 + 1e-3), "case {case}: absmean beats it");
            }
        }
    }

    #[test]
    fn ternary_matrices_decode_to_their_values() {
        let f = format(64).unwrap();
        let (rows, cols) = (3, 128);
        let v: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        for (m, values) in [
            quantize_exact(f, &v, rows, cols, None).unwrap(),
            quantize_absmean(f, &v, rows, cols, absmean_scale(&v)).unwrap(),
        ] {
            assert_eq!(m.view().dequantize(), values);
            let distinct: std::collections::BTreeSet<i32> =
                values.iter().map(|x| (x * 1e4).round() as i32).filter(|&x| x != 0).map(i32::abs).collect();
            assert!(distinct.len() <= rows * 2, "one magnitude per group: {distinct:?}");
        }
        assert_eq!(trit(0.3, 0.0), 0);
        assert_eq!(exact_scale(&[0.0; 32], None).to_f32(), 0.0);
    }
}
