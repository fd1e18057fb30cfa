//! Palettized matrices (Core ML's look-up-table compression, coremltools' `OpPalettizerConfig` with
//! `granularity="per_grouped_channel"`): every weight is an index into a table (the palette) of `2^bits` values
//! shared by a group of output channels, optionally times a scale per output channel
//! (`enable_per_channel_scale`). This is the layout and its scalar reference dequantization; the palettes come
//! from k-means (`lowbit_quant::palette`).
//!
//! # Values
//!
//! A matrix `[rows, cols]` (`cols` a multiple of 32, the packing unit of the group formats) has one palette per
//! `group_rows` consecutive rows (the last group may be shorter; `group_rows = rows` is one palette per tensor).
//! Weight `(r, c)` with index `u` decodes to `lut[r / group_rows][u]` in f32, times `scale[r]` (both f16-stored,
//! multiplied in f32) when the format has per-channel scales.
//!
//! # Layout
//!
//! | tensor | dtype | shape | holds |
//! |---|---|---|---|
//! | `NAME.qweight` | U8 | `[rows, cols·bits/8]` | the indices, packed as the group formats' codes of the same width (`super::group::pack`) |
//! | `NAME.lut` | F16 | `[ceil(rows / group_rows), 2^bits]` | the palettes |
//! | `NAME.channel_scale` | F16 | `[rows]` | per-row scales, only with `channel_scale` |
//!
//! Packing the indices as the group formats pack their codes lets the same SIMD unpacking serve both; a palette
//! entry then takes the place of `(u − z)·s`.

use half::f16;

use super::group::{pack, unpack, SUB_BLOCK};
use crate::error::{FormatError, Result};

/// One palettization layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PaletteFormat {
    /// Bits per index: 2, 3 or 4.
    pub bits: u8,
    /// Rows sharing a palette; `None`: one palette for the whole matrix.
    pub group_rows: Option<usize>,
    /// A scale per output channel multiplies its row.
    pub channel_scale: bool,
}

impl PaletteFormat {
    pub fn new(bits: u8, group_rows: Option<usize>, channel_scale: bool) -> Result<PaletteFormat> {
        if !matches!(bits, 2..=4) {
            return Err(FormatError::Invalid(format!("palettes of {bits}-bit indices (2, 3 or 4 exist)")));
        }
        if group_rows == Some(0) {
            return Err(FormatError::Invalid("palettes shared by groups of 0 rows".into()));
        }
        Ok(PaletteFormat { bits, group_rows, channel_scale })
    }

    /// Entries per palette.
    pub const fn entries(self) -> usize {
        1 << self.bits
    }

    /// Rows per palette in a matrix of `rows` rows.
    pub fn rows_per_palette(self, rows: usize) -> usize {
        self.group_rows.unwrap_or(rows).clamp(1, rows.max(1))
    }

    /// Palettes of a matrix of `rows` rows.
    pub fn n_palettes(self, rows: usize) -> usize {
        rows.div_ceil(self.rows_per_palette(rows))
    }

    /// Bytes of one row's packed indices.
    pub const fn row_bytes(self, cols: usize) -> usize {
        cols / SUB_BLOCK * SUB_BLOCK * self.bits as usize / 8
    }

    /// `lut2-g16`, `lut4-tensor-cs` (per-channel scales).
    pub fn name(self) -> String {
        let group = self.group_rows.map_or("tensor".to_string(), |g| format!("g{g}"));
        format!("lut{}-{group}{}", self.bits, if self.channel_scale { "-cs" } else { "" })
    }

    /// Checks that a `rows × cols` matrix can be stored.
    pub fn check_shape(self, rows: usize, cols: usize) -> Result<()> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(SUB_BLOCK) {
            return Err(FormatError::Invalid(format!(
                "{}: a {rows}×{cols} matrix (rows must be whole sub-blocks of {SUB_BLOCK})",
                self.name()
            )));
        }
        rows.checked_mul(cols).ok_or_else(|| FormatError::Invalid(format!("{rows}×{cols}: too large")))?;
        Ok(())
    }
}

/// A palettized matrix, as the layout's tensors hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct PaletteMatrix {
    pub format: PaletteFormat,
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<u8>,
    /// Little-endian f16 bytes, `n_palettes × 2^bits × 2`.
    pub lut: Vec<u8>,
    /// Little-endian f16 bytes, `rows × 2` with per-channel scales, else empty.
    pub scales: Vec<u8>,
}

impl PaletteMatrix {
    /// Packs `indices` (one per weight, row-major, each below `2^bits`) with the palettes `lut` (`n_palettes ×
    /// 2^bits`, already f16-representable or rounded here) and per-row `scales` (with `channel_scale`).
    pub fn from_indices(
        format: PaletteFormat,
        rows: usize,
        cols: usize,
        indices: &[u8],
        lut: &[f32],
        scales: &[f32],
    ) -> Result<PaletteMatrix> {
        format.check_shape(rows, cols)?;
        let invalid = |what: String| Err(FormatError::Invalid(format!("{}: {what}", format.name())));
        if indices.len() != rows * cols {
            return invalid(format!("{} indices for a {rows}×{cols} matrix", indices.len()));
        }
        if let Some(i) = indices.iter().position(|&u| usize::from(u) >= format.entries()) {
            return invalid(format!("index {} at weight {i}", indices[i]));
        }
        if lut.len() != format.n_palettes(rows) * format.entries() {
            return invalid(format!(
                "{} palette entries, want {}",
                lut.len(),
                format.n_palettes(rows) * format.entries()
            ));
        }
        let want_scales = if format.channel_scale { rows } else { 0 };
        if scales.len() != want_scales {
            return invalid(format!("{} channel scales, want {want_scales}", scales.len()));
        }
        let to_f16 = |values: &[f32], what: &str| -> Result<Vec<u8>> {
            let mut out = Vec::with_capacity(2 * values.len());
            for (i, &v) in values.iter().enumerate() {
                let h = f16::from_f32(v);
                if !h.is_finite() {
                    return Err(FormatError::Invalid(format!("{}: {what} {i} = {v} is not an f16", format.name())));
                }
                out.extend_from_slice(&h.to_le_bytes());
            }
            Ok(out)
        };
        let mut codes = vec![0u8; rows * format.row_bytes(cols)];
        let sub_bytes = SUB_BLOCK * format.bits as usize / 8;
        let mut u = [0u8; SUB_BLOCK];
        for (src, dst) in indices.chunks_exact(SUB_BLOCK).zip(codes.chunks_exact_mut(sub_bytes)) {
            u.copy_from_slice(src);
            pack(format.bits, &u, dst);
        }
        Ok(PaletteMatrix {
            format,
            rows,
            cols,
            codes,
            lut: to_f16(lut, "palette entry")?,
            scales: to_f16(scales, "scale")?,
        })
    }

    pub fn view(&self) -> PaletteView<'_> {
        PaletteView {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            codes: &self.codes,
            lut: &self.lut,
            scales: &self.scales,
        }
    }
}

/// Borrowed parts of a palettized matrix (e.g. from a memory-mapped file), checked for consistent sizes.
#[derive(Clone, Copy, Debug)]
pub struct PaletteView<'a> {
    pub format: PaletteFormat,
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u8],
    pub lut: &'a [u8],
    pub scales: &'a [u8],
}

impl<'a> PaletteView<'a> {
    /// Checks every part's length against the shape, and that every palette entry and scale is finite.
    pub fn new(
        format: PaletteFormat,
        rows: usize,
        cols: usize,
        codes: &'a [u8],
        lut: &'a [u8],
        scales: &'a [u8],
    ) -> Result<PaletteView<'a>> {
        format.check_shape(rows, cols)?;
        let want = [
            ("indices", codes.len(), rows.checked_mul(format.row_bytes(cols))),
            ("palettes", lut.len(), Some(2 * format.n_palettes(rows) * format.entries())),
            ("channel scales", scales.len(), Some(if format.channel_scale { 2 * rows } else { 0 })),
        ];
        for (what, got, want) in want {
            if Some(got) != want {
                return Err(FormatError::Invalid(format!(
                    "{} {rows}×{cols}: {what} have {got} bytes, want {want:?}",
                    format.name()
                )));
            }
        }
        let finite = |bytes: &[u8]| bytes.chunks_exact(2).all(|b| f16::from_le_bytes([b[0], b[1]]).is_finite());
        if !finite(lut) || !finite(scales) {
            return Err(FormatError::Invalid(format!(
                "{} {rows}×{cols}: a non-finite palette entry or scale",
                format.name()
            )));
        }
        Ok(PaletteView { format, rows, cols, codes, lut, scales })
    }

    /// Palette `p`'s entries in f32.
    pub fn palette(&self, p: usize) -> Vec<f32> {
        let n = self.format.entries();
        self.lut[2 * p * n..2 * (p + 1) * n]
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    }

    /// Row `r`'s scale (1 without per-channel scales).
    pub fn scale(&self, r: usize) -> f32 {
        match self.format.channel_scale {
            true => f16::from_le_bytes([self.scales[2 * r], self.scales[2 * r + 1]]).to_f32(),
            false => 1.0,
        }
    }

    /// Row `r`'s indices.
    pub fn indices(&self, r: usize) -> Vec<u8> {
        let rb = self.format.row_bytes(self.cols);
        let sub_bytes = SUB_BLOCK * self.format.bits as usize / 8;
        let mut u = [0u8; SUB_BLOCK];
        let mut out = Vec::with_capacity(self.cols);
        for bytes in self.codes[r * rb..(r + 1) * rb].chunks_exact(sub_bytes) {
            unpack(self.format.bits, bytes, &mut u);
            out.extend_from_slice(&u);
        }
        out
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let lut = self.palette(r / self.format.rows_per_palette(self.rows));
        let s = self.scale(r);
        for (o, u) in out.iter_mut().zip(self.indices(r)) {
            *o = match self.format.channel_scale {
                true => lut[usize::from(u)] * s,
                false => lut[usize::from(u)],
            };
        }
    }

    /// Rows `r0..r1` as a matrix of their own (an expert of a stack): `None` unless they are whole palettes' rows.
    pub fn rows(&self, r0: usize, r1: usize) -> Option<PaletteView<'a>> {
        let per = self.format.rows_per_palette(self.rows);
        let whole = r0 < r1 && r1 <= self.rows && r0.is_multiple_of(per) && (r1 == self.rows || r1.is_multiple_of(per));
        if !whole {
            return None;
        }
        let (rb, n) = (self.format.row_bytes(self.cols), 2 * self.format.entries());
        // A sub-view's palettes keep their rows: the format names them (one palette per tensor: all of r0..r1).
        let format = PaletteFormat { group_rows: Some(per), ..self.format };
        Some(PaletteView {
            format,
            rows: r1 - r0,
            codes: &self.codes[r0 * rb..r1 * rb],
            lut: &self.lut[r0 / per * n..r1.div_ceil(per) * n],
            scales: if self.format.channel_scale { &self.scales[2 * r0..2 * r1] } else { self.scales },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_palettes_round_trip() {
        for bits in [2u8, 3, 4] {
            for (group_rows, channel_scale) in [(None, false), (Some(2), true), (Some(3), false)] {
                let f = PaletteFormat::new(bits, group_rows, channel_scale).unwrap();
                let (rows, cols) = (5, 64);
                let indices: Vec<u8> = (0..rows * cols).map(|i| ((i * 7 + i / 3) % f.entries()) as u8).collect();
                let lut: Vec<f32> = (0..f.n_palettes(rows) * f.entries()).map(|i| (i as f32 - 5.0) * 0.25).collect();
                let scales: Vec<f32> = if channel_scale { (0..rows).map(|r| 0.5 + r as f32).collect() } else { vec![] };
                let m = PaletteMatrix::from_indices(f, rows, cols, &indices, &lut, &scales).unwrap();
                let v = PaletteView::new(f, rows, cols, &m.codes, &m.lut, &m.scales).unwrap();
                let values = v.dequantize();
                for r in 0..rows {
                    assert_eq!(v.indices(r), indices[r * cols..(r + 1) * cols], "{} row {r}", f.name());
                    let p = r / f.rows_per_palette(rows);
                    let s = if channel_scale { scales[r] } else { 1.0 };
                    for c in 0..cols {
                        let want = lut[p * f.entries() + usize::from(indices[r * cols + c])] * s;
                        assert_eq!(values[r * cols + c], want, "{} ({r}, {c})", f.name());
                    }
                }
            }
        }
    }

    #[test]
    fn whole_palettes_rows_are_a_matrix_of_their_own() {
        let f = PaletteFormat::new(2, Some(2), true).unwrap();
        let (rows, cols) = (6, 32);
        let indices: Vec<u8> = (0..rows * cols).map(|i| (i % 4) as u8).collect();
        let lut: Vec<f32> = (0..f.n_palettes(rows) * 4).map(|i| i as f32 * 0.5 - 3.0).collect();
        let scales: Vec<f32> = (0..rows).map(|r| 1.0 + r as f32).collect();
        let m = PaletteMatrix::from_indices(f, rows, cols, &indices, &lut, &scales).unwrap();
        let v = m.view();
        let all = v.dequantize();
        let part = v.rows(2, 6).unwrap();
        assert_eq!(part.dequantize(), all[2 * cols..]);
        assert!(v.rows(1, 4).is_none() && v.rows(2, 5).is_none() && v.rows(4, 8).is_none() && v.rows(2, 2).is_none());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(PaletteFormat::new(1, None, false).is_err());
        assert!(PaletteFormat::new(5, None, false).is_err());
        assert!(PaletteFormat::new(2, Some(0), false).is_err());
        let f = PaletteFormat::new(2, Some(2), true).unwrap();
        let lut = vec![0.0f32; 8];
        assert!(
            PaletteMatrix::from_indices(f, 3, 48, &[0; 144], &lut, &[1.0; 3]).is_err(),
            "cols not whole sub-blocks"
        );
        assert!(PaletteMatrix::from_indices(f, 3, 32, &[4; 96], &lut, &[1.0; 3]).is_err(), "index beyond the palette");
        assert!(PaletteMatrix::from_indices(f, 3, 32, &[0; 96], &lut[1..], &[1.0; 3]).is_err());
        assert!(PaletteMatrix::from_indices(f, 3, 32, &[0; 96], &lut, &[1.0; 2]).is_err());
        assert!(PaletteMatrix::from_indices(f, 3, 32, &[0; 96], &[1e6; 8], &[1.0; 3]).is_err(), "beyond f16");
        let m = PaletteMatrix::from_indices(f, 3, 32, &[1; 96], &lut, &[1.0; 3]).unwrap();
        assert!(PaletteView::new(f, 3, 32, &m.codes[1..], &m.lut, &m.scales).is_err());
        assert!(PaletteView::new(f, 3, 32, &m.codes, &m.lut, &m.scales[2..]).is_err());
        assert!(PaletteView::new(f, usize::MAX, 32, &m.codes, &m.lut, &m.scales).is_err());
        let mut nan = m.lut.clone();
        nan[..2].copy_from_slice(&f16::NAN.to_le_bytes());
        assert!(PaletteView::new(f, 3, 32, &m.codes, &nan, &m.scales).is_err());
    }
}
