//! lowbit's group-wise integer formats (INT8, INT4, INT3, INT2): the layout and its scalar reference
//! quantize (round to nearest, "RTN") and dequantize. This is the specification that the numpy golden
//! script (scripts/golden/gen_native_group.py) re-implements and the kernels (`lowbit_kernels::group`)
//! read.
//!
//! # Layout
//!
//! A matrix `[rows, cols]` is quantized row by row; `cols` must be a multiple of 32, because 32 codes
//! are the packing unit (a *sub-block*, matching the kernels' int8 activation blocks). Matrices whose
//! rows are not are left unquantized by the writer, as llama.cpp leaves rows no block type fits.
//!
//! Each row is cut into groups of `group` columns (a multiple of 32; `group = cols` is per output
//! channel). When `cols` is not a multiple of `group`, the last group of every row is *short*: it holds
//! the remaining `cols mod group` columns (itself a multiple of 32) and its scale is computed over those
//! columns alone. Nothing is padded: `n_groups = ceil(cols / group)`.
//!
//! Every weight is an unsigned code `u` of `bits` bits and decodes to `(u − z)·s`, with `s` the group's
//! f16 scale and `z` its zero point: `2^(bits−1)` for symmetric formats (not stored), one u8 per group
//! for asymmetric ones.
//!
//! Three tensors hold a quantized matrix: the codes (`rows × cols·bits/8` bytes), the scales (`rows ×
//! n_groups` f16, little-endian) and, when asymmetric, the zero points (`rows × n_groups` u8). Codes are
//! stored sub-block after sub-block along each row; within a sub-block of codes `u[0..32]`:
//!
//! | bits | bytes | byte `j` holds |
//! |---|---|---|
//! | 8 | 32 | `u[j]` |
//! | 4 | 16 | `u[j]` in the low nibble, `u[j+16]` in the high nibble (GGUF Q4_0's order) |
//! | 3 | 12 | bytes 0..8: the low two bits of `u[j], u[j+8], u[j+16], u[j+24]` at bits 0, 2, 4, 6; bytes 8..12: a little-endian u32 whose bit `i` is bit 2 of `u[i]` |
//! | 2 | 8 | `u[j], u[j+8], u[j+16], u[j+24]` at bits 0, 2, 4, 6 |
//!
//! These orders let a SIMD kernel expand a sub-block into 32 bytes in element order with one broadcast,
//! one variable shift and one mask.
//!
//! # Quantization (round to nearest)
//!
//! All arithmetic in f32; `round` is round-half-to-even (PyTorch's and numpy's `round`).
//!
//! * Symmetric (AWQ's `zero_point=False`): `qmax = 2^(bits−1) − 1`, `s = f16(max|x| / qmax)`,
//!   `u = clamp(round(x / s), −qmax − 1, qmax) + 2^(bits−1)`. So `+max|x|` is exact and the extra
//!   negative level is used only by rounding (INT4: `s = absmax/7`, codes −8..7).
//! * Asymmetric (GPTQ's range, which always contains 0, with AWQ's formulas): `lo = min(min x, 0)`,
//!   `hi = max(max x, 0)`, `s = f16((hi − lo) / (2^bits − 1))`, `z = clamp(round(−lo / s), 0, 2^bits − 1)`,
//!   `u = clamp(round(x / s) + z, 0, 2^bits − 1)`. Containing 0 makes 0 exact and `z` never clamp.
//!
//! With per-column importance weights `w` (an importance matrix's mean x² per input column), each group's scale
//! (and zero point) is searched instead: the round-to-nearest parameters of the group's range shrunk by
//! `1 − k/40` for `k = 0..20`, each also refitted as the weighted least-squares scale of its own codes
//! (`Σ w·x·q / Σ w·q²` with `q = u − z`, zero point kept), and the candidate with the smallest `Σ w·(x − x̂)²`
//! wins (ties: the earlier). The codes are then encoded as above with the chosen scale.
//!
//! The codes are computed with the stored (f16-rounded) scale, so dequantization reproduces exactly
//! what the rounding chose. A group whose scale is 0 (all zeros, or values so small that the scale
//! underflows f16) gets `u = z`, which decodes to 0. Non-finite inputs, and scales that overflow f16,
//! are errors.

use half::f16;

use super::check_values;
use crate::error::{FormatError, Result};

/// Codes per sub-block, the packing unit of every bit width.
pub const SUB_BLOCK: usize = 32;

/// One group-wise integer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupFormat {
    /// 8, 4, 3 or 2.
    pub bits: u8,
    /// Columns per group, a positive multiple of 32; a group as long as the row is per-channel.
    pub group: usize,
    /// Symmetric (implied zero point `2^(bits−1)`) or asymmetric (a stored u8 zero point per group).
    pub sym: bool,
}

impl GroupFormat {
    pub const BITS: [u8; 4] = [8, 4, 3, 2];

    /// A checked format.
    pub fn new(bits: u8, group: usize, sym: bool) -> Result<GroupFormat> {
        if !Self::BITS.contains(&bits) {
            return Err(FormatError::Invalid(format!("{bits}-bit group format: 8, 4, 3 or 2 bits exist")));
        }
        if group == 0 || !group.is_multiple_of(SUB_BLOCK) {
            return Err(FormatError::Invalid(format!("group of {group}: groups are positive multiples of 32")));
        }
        Ok(GroupFormat { bits, group, sym })
    }

    /// Bytes of one sub-block of 32 codes.
    pub const fn sub_block_bytes(self) -> usize {
        SUB_BLOCK * self.bits as usize / 8
    }

    /// Groups per row of `cols` (the last one short when `group` does not divide `cols`).
    pub const fn n_groups(self, cols: usize) -> usize {
        cols.div_ceil(self.group)
    }

    /// Bytes of codes per row of `cols`.
    pub const fn row_bytes(self, cols: usize) -> usize {
        cols / SUB_BLOCK * self.sub_block_bytes()
    }

    /// The largest code, `2^bits − 1`.
    pub const fn max_code(self) -> u8 {
        ((1u16 << self.bits) - 1) as u8
    }

    /// The zero point of symmetric formats, `2^(bits−1)`.
    pub const fn mid_code(self) -> u8 {
        1 << (self.bits - 1)
    }

    /// `int4-g128-sym`-style name, also the `format` in quantization_config.json.
    pub fn name(self) -> String {
        format!("int{}-g{}-{}", self.bits, self.group, if self.sym { "sym" } else { "asym" })
    }

    /// Checks that a `[rows, cols]` matrix can take this format.
    pub fn check_shape(self, rows: usize, cols: usize) -> Result<()> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(SUB_BLOCK) {
            return Err(FormatError::Invalid(format!(
                "{rows}×{cols} matrix: {} needs rows of a positive multiple of 32 columns",
                self.name()
            )));
        }
        Ok(())
    }
}

/// A quantized matrix, as the three tensors of the layout hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMatrix {
    pub format: GroupFormat,
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<u8>,
    /// Little-endian f16 bytes, `rows × n_groups × 2`.
    pub scales: Vec<u8>,
    /// `rows × n_groups` when asymmetric, else empty.
    pub zeros: Vec<u8>,
}

/// Borrowed parts of a quantized matrix (e.g. from a memory-mapped file), checked for consistent sizes.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    pub format: GroupFormat,
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u8],
    /// Little-endian f16 bytes, `rows × n_groups × 2`.
    pub scales: &'a [u8],
    /// `rows × n_groups` when asymmetric, else empty.
    pub zeros: &'a [u8],
}

impl<'a> GroupView<'a> {
    /// Checks every part's length against the shape and format (before anything reads them).
    pub fn new(
        format: GroupFormat,
        rows: usize,
        cols: usize,
        codes: &'a [u8],
        scales: &'a [u8],
        zeros: &'a [u8],
    ) -> Result<GroupView<'a>> {
        format.check_shape(rows, cols)?;
        let ng = format.n_groups(cols);
        let expect = |what: &str, got: usize, per_row: usize| match rows.checked_mul(per_row) {
            Some(want) if want == got => Ok(()),
            _ => Err(FormatError::Invalid(format!(
                "{} {rows}×{cols}: {what} has {got} bytes, want {rows}×{per_row}",
                format.name()
            ))),
        };
        expect("codes", codes.len(), format.row_bytes(cols))?;
        expect("scales", scales.len(), 2 * ng)?;
        expect("zeros", zeros.len(), if format.sym { 0 } else { ng })?;
        Ok(GroupView { format, rows, cols, codes, scales, zeros })
    }

    /// The scale of group `g` of row `r`, as f32.
    pub fn scale(&self, r: usize, g: usize) -> f32 {
        let i = 2 * (r * self.format.n_groups(self.cols) + g);
        f16::from_le_bytes([self.scales[i], self.scales[i + 1]]).to_f32()
    }

    /// The zero point of group `g` of row `r`.
    pub fn zero(&self, r: usize, g: usize) -> u8 {
        if self.format.sym {
            self.format.mid_code()
        } else {
            self.zeros[r * self.format.n_groups(self.cols) + g]
        }
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let f = self.format;
        let row = &self.codes[r * f.row_bytes(self.cols)..][..f.row_bytes(self.cols)];
        let mut u = [0u8; SUB_BLOCK];
        for (sb, (bytes, out)) in row.chunks_exact(f.sub_block_bytes()).zip(out.chunks_exact_mut(SUB_BLOCK)).enumerate()
        {
            let g = sb * SUB_BLOCK / f.group;
            let (s, z) = (self.scale(r, g), f32::from(self.zero(r, g)));
            unpack(f.bits, bytes, &mut u);
            out.iter_mut().zip(u).for_each(|(o, u)| *o = (f32::from(u) - z) * s);
        }
    }

    /// Rows `r0..r1` as a matrix of their own (one expert of a stack of experts); `None` outside the matrix.
    pub fn rows(&self, r0: usize, r1: usize) -> Option<GroupView<'a>> {
        if r0 > r1 || r1 > self.rows {
            return None;
        }
        let (rb, ng) = (self.format.row_bytes(self.cols), self.format.n_groups(self.cols));
        let zeros = if self.format.sym { self.zeros } else { &self.zeros[r0 * ng..r1 * ng] };
        Some(GroupView {
            rows: r1 - r0,
            codes: &self.codes[r0 * rb..r1 * rb],
            scales: &self.scales[2 * r0 * ng..2 * r1 * ng],
            zeros,
            ..*self
        })
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

impl GroupMatrix {
    pub fn view(&self) -> GroupView<'_> {
        GroupView {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            codes: &self.codes,
            scales: &self.scales,
            zeros: &self.zeros,
        }
    }
}

/// Quantizes `values`, `rows × cols` row-major, into `format` (round to nearest; rules in the module
/// documentation). Errors name the row and column of a non-finite value or an overflowing scale.
pub fn quantize(format: GroupFormat, values: &[f32], rows: usize, cols: usize) -> Result<GroupMatrix> {
    quantize_rows(format, values, rows, cols, None)
}

/// [`quantize`] with each group's scale searched to minimise the error weighted by `importance`, one non-negative
/// weight per column (module documentation).
pub fn quantize_weighted(
    format: GroupFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    importance: &[f32],
) -> Result<GroupMatrix> {
    if importance.len() != cols || importance.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        return Err(FormatError::Invalid(format!(
            "importance: {} weights for {cols} columns, each must be finite and non-negative",
            importance.len()
        )));
    }
    quantize_rows(format, values, rows, cols, Some(importance))
}

fn quantize_rows(
    format: GroupFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
) -> Result<GroupMatrix> {
    format.check_shape(rows, cols)?;
    check_values(values, rows, cols)?;
    let ng = format.n_groups(cols);
    let mut m = GroupMatrix {
        format,
        rows,
        cols,
        codes: vec![0; rows * format.row_bytes(cols)],
        scales: vec![0; 2 * rows * ng],
        zeros: if format.sym { Vec::new() } else { vec![0; rows * ng] },
    };
    let mut u = vec![0u8; cols];
    for (r, x) in values.chunks_exact(cols).enumerate() {
        for (g, xg) in x.chunks(format.group).enumerate() {
            let wg = importance.map(|w| &w[g * format.group..][..xg.len()]);
            let (s, z) = quantize_group(format, xg, wg, &mut u[g * format.group..][..xg.len()])
                .map_err(|what| FormatError::Invalid(format!("row {r}, group {g}: {what}")))?;
            m.scales[2 * (r * ng + g)..][..2].copy_from_slice(&s.to_le_bytes());
            if !format.sym {
                m.zeros[r * ng + g] = z;
            }
        }
        let row = &mut m.codes[r * format.row_bytes(cols)..][..format.row_bytes(cols)];
        for (bytes, u) in row.chunks_exact_mut(format.sub_block_bytes()).zip(u.chunks_exact(SUB_BLOCK)) {
            pack(format.bits, u.try_into().expect("whole sub-blocks"), bytes);
        }
    }
    Ok(m)
}

/// One group's codes into `u`, with the scale searched when the group has importance weights `w`; returns its
/// scale and zero point.
fn quantize_group(
    f: GroupFormat,
    x: &[f32],
    w: Option<&[f32]>,
    u: &mut [u8],
) -> std::result::Result<(f16, u8), String> {
    let (s, z) = match w {
        None => group_params(f, x)?,
        Some(w) => weighted_group_params(f, x, w)?,
    };
    let s32 = s.to_f32();
    u.iter_mut().zip(x).for_each(|(u, &v)| *u = encode(f, v, s32, z));
    Ok((s, z))
}

/// The f16 scale and the zero point that round to nearest gives a group of values (rules in the module
/// documentation). Calibrated methods (GPTQ) call it on the weights as they stand when a group begins.
pub fn group_params(f: GroupFormat, x: &[f32]) -> std::result::Result<(f16, u8), String> {
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
    range_params(f, lo, hi)
}

/// Round to nearest's scale and zero point for values spanning `lo ≤ 0 ≤ hi` (symmetric: `max(hi, −lo)`).
pub fn range_params(f: GroupFormat, lo: f32, hi: f32) -> std::result::Result<(f16, u8), String> {
    let max_code = f32::from(f.max_code());
    let scale = if f.sym { hi.max(-lo) / f32::from(f.mid_code() - 1) } else { (hi - lo) / max_code };
    let s = f16::from_f32(scale);
    if !s.is_finite() {
        return Err(format!("scale {scale} overflows f16"));
    }
    let s32 = s.to_f32();
    let z = if f.sym {
        f.mid_code()
    } else if s32 == 0.0 {
        0
    } else {
        (-lo / s32).round_ties_even().clamp(0.0, max_code) as u8
    };
    Ok((s, z))
}

/// Shrink steps of the weighted search: ranges `1 − k·SHRINK` for `k < SHRINK_STEPS`.
const SHRINK_STEPS: usize = 21;
const SHRINK: f32 = 1.0 / 40.0;

/// The scale and zero point minimising the `w`-weighted squared error of the group (module documentation).
fn weighted_group_params(f: GroupFormat, x: &[f32], w: &[f32]) -> std::result::Result<(f16, u8), String> {
    let error = |(s, z): (f16, u8)| {
        let s32 = s.to_f32();
        x.iter().zip(w).fold(0.0f32, |e, (&v, &w)| {
            let d = v - (f32::from(encode(f, v, s32, z)) - f32::from(z)) * s32;
            e + w * d * d
        })
    };
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let mut best = range_params(f, lo, hi)?;
    let mut best_error = error(best);
    for k in 0..SHRINK_STEPS {
        let shrink = 1.0 - k as f32 * SHRINK;
        let plain = range_params(f, lo * shrink, hi * shrink)?;
        for c in [Some(plain), refit(f, x, w, plain)].into_iter().flatten() {
            let e = error(c);
            if e < best_error {
                (best, best_error) = (c, e);
            }
        }
    }
    Ok(best)
}

/// The weighted least-squares scale of the codes `(s, z)` gives the group, with `z` kept; `None` when degenerate.
fn refit(f: GroupFormat, x: &[f32], w: &[f32], (s, z): (f16, u8)) -> Option<(f16, u8)> {
    let s32 = s.to_f32();
    let (num, den) = x.iter().zip(w).fold((0.0f64, 0.0f64), |(n, d), (&v, &w)| {
        let q = f64::from(f32::from(encode(f, v, s32, z)) - f32::from(z));
        (n + f64::from(w) * f64::from(v) * q, d + f64::from(w) * q * q)
    });
    let fit = f16::from_f32((num / den) as f32);
    (den > 0.0 && fit.is_finite() && fit.to_f32() > 0.0).then_some((fit, z))
}

/// The code of `v` in a group of scale `s` (the f16 scale as f32) and zero point `z`: round to nearest,
/// clamped to the format's codes; a zero scale gives `z`, which decodes to 0.
pub fn encode(f: GroupFormat, v: f32, s: f32, z: u8) -> u8 {
    if s == 0.0 {
        return z;
    }
    ((v / s).round_ties_even() + f32::from(z)).clamp(0.0, f32::from(f.max_code())) as u8
}

impl GroupMatrix {
    /// Packs codes chosen elsewhere (one `u8` per weight, row-major, each at most `max_code`) with their
    /// per-group f16 scales and zero points (`rows × n_groups`; zero points ignored when symmetric).
    pub fn from_codes(
        format: GroupFormat,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f16],
        zeros: &[u8],
    ) -> Result<GroupMatrix> {
        format.check_shape(rows, cols)?;
        let ng = format.n_groups(cols);
        if codes.len() != rows * cols || scales.len() != rows * ng || (!format.sym && zeros.len() != rows * ng) {
            return Err(FormatError::Invalid(format!("{} {rows}×{cols}: parts of the wrong size", format.name())));
        }
        if let Some(i) = codes.iter().position(|&u| u > format.max_code()) {
            return Err(FormatError::Invalid(format!("code {} at {i} exceeds {} bits", codes[i], format.bits)));
        }
        let mut packed = vec![0u8; rows * format.row_bytes(cols)];
        for (bytes, u) in packed.chunks_exact_mut(format.sub_block_bytes()).zip(codes.chunks_exact(SUB_BLOCK)) {
            pack(format.bits, u.try_into().expect("whole sub-blocks"), bytes);
        }
        Ok(GroupMatrix {
            format,
            rows,
            cols,
            codes: packed,
            scales: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            zeros: if format.sym { Vec::new() } else { zeros.to_vec() },
        })
    }
}

/// Packs 32 codes of `bits` bits into one sub-block (table in the module documentation).
pub fn pack(bits: u8, u: &[u8; SUB_BLOCK], out: &mut [u8]) {
    match bits {
        8 => out.copy_from_slice(u),
        4 => (0..16).for_each(|j| out[j] = u[j] | u[j + 16] << 4),
        3 => {
            (0..8)
                .for_each(|j| out[j] = (u[j] & 3) | (u[j + 8] & 3) << 2 | (u[j + 16] & 3) << 4 | (u[j + 24] & 3) << 6);
            let high = (0..SUB_BLOCK).fold(0u32, |h, i| h | u32::from(u[i] >> 2) << i);
            out[8..12].copy_from_slice(&high.to_le_bytes());
        }
        _ => (0..8).for_each(|j| out[j] = u[j] | u[j + 8] << 2 | u[j + 16] << 4 | u[j + 24] << 6),
    }
}

/// Unpacks one sub-block of `bits`-bit codes.
pub fn unpack(bits: u8, bytes: &[u8], u: &mut [u8; SUB_BLOCK]) {
    match bits {
        8 => u.copy_from_slice(&bytes[..SUB_BLOCK]),
        4 => (0..16).for_each(|j| (u[j], u[j + 16]) = (bytes[j] & 15, bytes[j] >> 4)),
        _ => {
            for (i, u) in u.iter_mut().enumerate() {
                *u = bytes[i % 8] >> (2 * (i / 8)) & 3;
            }
            if bits == 3 {
                let high = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                u.iter_mut().enumerate().for_each(|(i, u)| *u |= ((high >> i & 1) as u8) << 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_every_width() {
        for bits in GroupFormat::BITS {
            let max = (1u16 << bits) - 1;
            let u: [u8; 32] = std::array::from_fn(|i| ((i as u16 * 7 + 3) % (max + 1)) as u8);
            let mut bytes = vec![0u8; 32 * bits as usize / 8];
            pack(bits, &u, &mut bytes);
            let mut back = [0u8; 32];
            unpack(bits, &bytes, &mut back);
            assert_eq!(back, u, "{bits} bits");
        }
    }

    #[test]
    fn symmetric_int4_follows_awq() {
        // absmax 7 makes s = 1 exactly: codes are round(x) + 8, clamped to 0..15.
        let mut x = [0.0f32; 32];
        (x[0], x[1], x[2], x[3], x[4]) = (7.0, -7.0, 2.5, -3.5, 0.49);
        let m = quantize(GroupFormat::new(4, 32, true).unwrap(), &x, 1, 32).unwrap();
        assert_eq!(m.view().scale(0, 0), 1.0);
        let mut u = [0u8; 32];
        unpack(4, &m.codes, &mut u);
        assert_eq!(u[..6], [15, 1, 10, 4, 8, 8]);
        assert_eq!(m.view().dequantize()[..5], [7.0, -7.0, 2.0, -4.0, 0.0]);
    }

    #[test]
    fn asymmetric_range_contains_zero() {
        // All positive: lo = 0, so z = 0 and s = max/15.
        let x: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 0.25).collect();
        let m = quantize(GroupFormat::new(4, 32, false).unwrap(), &x, 1, 64).unwrap();
        assert_eq!(m.zeros, [0, 0]);
        let back = m.view().dequantize();
        for g in 0..2 {
            let s = m.view().scale(0, g);
            for i in g * 32..(g + 1) * 32 {
                assert!((back[i] - x[i]).abs() <= s / 2.0 * 1.0001, "{i}");
            }
        }
    }

    #[test]
    fn short_last_group_and_zero_groups() {
        // 96 columns in groups of 64: the second group holds 32 columns and its own scale.
        let mut x = vec![0.0f32; 2 * 96];
        x[64] = 3.0;
        x[96 + 5] = -1.0;
        let f = GroupFormat::new(2, 64, true).unwrap();
        let m = quantize(f, &x, 2, 96).unwrap();
        let v = m.view();
        let s: Vec<f32> = (0..4).map(|i| v.scale(i / 2, i % 2)).collect();
        assert_eq!(s, [0.0, 3.0, 1.0, 0.0]);
        assert_eq!(m.view().dequantize(), x);
    }

    #[test]
    fn weighted_search_lowers_the_weighted_error() {
        // One large weight in a column of little importance: plain RTN spends its range on it.
        let mut x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 40.0).collect();
        x[5] = 6.0;
        let mut w = vec![1.0f32; 64];
        w[5] = 0.001;
        for sym in [true, false] {
            let f = GroupFormat::new(4, 64, sym).unwrap();
            let err = |m: &GroupMatrix| {
                let y = m.view().dequantize();
                x.iter().zip(&y).zip(&w).map(|((a, b), w)| w * (a - b) * (a - b)).sum::<f32>()
            };
            let plain = quantize(f, &x, 1, 64).unwrap();
            let weighted = quantize_weighted(f, &x, 1, 64, &w).unwrap();
            assert!(err(&weighted) < 0.5 * err(&plain), "sym {sym}: {} vs {}", err(&weighted), err(&plain));
            // Equal weights never do worse than round to nearest, which is the first candidate.
            let flat = quantize_weighted(f, &x, 1, 64, &[1.0; 64]).unwrap();
            let ones = |m: &GroupMatrix| {
                let y = m.view().dequantize();
                x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
            };
            assert!(ones(&flat) <= ones(&plain));
        }
        let f = GroupFormat::new(4, 32, true).unwrap();
        assert!(quantize_weighted(f, &x, 2, 32, &[1.0; 31]).is_err());
        assert!(quantize_weighted(f, &x, 2, 32, &[-1.0; 32]).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let f = GroupFormat::new(4, 32, true).unwrap();
        assert!(GroupFormat::new(5, 32, true).is_err());
        assert!(GroupFormat::new(4, 48, true).is_err());
        assert!(quantize(f, &[0.0; 40], 1, 40).is_err());
        let mut x = [0.0f32; 32];
        x[3] = f32::NAN;
        assert!(quantize(f, &x, 1, 32).unwrap_err().to_string().contains("column 3"));
        x[3] = 1e9;
        assert!(quantize(f, &x, 1, 32).unwrap_err().to_string().contains("overflows"));
        let m = quantize(f, &[1.0; 64], 2, 32).unwrap();
        assert!(GroupView::new(f, 2, 32, &m.codes, &m.scales, &[]).is_ok());
        assert!(GroupView::new(f, 2, 32, &m.codes[1..], &m.scales, &[]).is_err());
        assert!(GroupView::new(f, 2, 32, &m.codes, &m.scales, &[0, 0]).is_err());
    }
}
