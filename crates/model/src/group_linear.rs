//! Weights in lowbit's group-wise integer formats (a native directory's `int4-g128-sym` and kin) and
//! in NF4, multiplied natively by `lowbit_kernels::group` with int8-quantized activations.
//!
//! The codes are read where the native directory's file is memory-mapped, in the file's layout (the kernels
//! read it as is), so a build's weights sit in the page cache once; the f16 scales and u8 zero points become one interleaved f32 pair per group
//! ([`GroupParams`]: scale and the zero point's term folded into a "min"), so the kernel reads one
//! small stream of parameters beside the codes and converts nothing.
//!
//! NF4 runs on the same kernels as 4-bit codes through a table of signed bytes, `round(127·NF4[u])`,
//! with each block's double-quantized scale decoded once at load and divided by 127. The table is
//! exact at −1, 0 and 1 and within 0.5/127 (0.4%) of the block scale elsewhere, against NF4's own
//! rounding error of up to 15% of it; on SmolLM2 it raises the KL-divergence from the f32 model by
//! about 2% over running the dequantized f32 weights.
//!
//! A ternary matrix (2-bit codes 1..3 with zero point 2, as `--method absmean|ternary|ptbitnet` and trit-packed
//! builds hold them) also gets the look-up layout of `lowbit_kernels::ternary` where this CPU has its SIMD kernel,
//! and runs on it instead of its codes: no multiplications, and about 1.7× faster than the 2-bit codes on
//! SmolLM2's GEMVs (`cargo bench -p lowbit-kernels --bench group`). The layout is made at load (2 bits per
//! weight, the same as the codes), so these weights are the process's own memory rather than the file's pages.
//!
//! Palettes run the same way, a table per palette: its entries divided by their largest magnitude, ×127
//! and rounded, and each row's one group scale that magnitude (times the row's channel scale) over 127.
//! An entry is off by at most 0.4% of its palette's largest, a fraction of the spacing of even 4-bit
//! palettes (16 entries over that range).

use lowbit_formats::native::nf4::{self, NF4};
use lowbit_formats::native::{trits, GroupView, Nf4View, PaletteView, TritsView};
use lowbit_formats::source::{ModelSource, TensorRef};
use lowbit_formats::FormatError;
use lowbit_kernels::group::scalar::unpack;
use lowbit_kernels::group::{matmul_group_f32, Codebook, GroupLayout, GroupParams};
use lowbit_kernels::quant::QK;
use lowbit_kernels::ternary::{matmul_ternary_f32, TernaryMatrix};

use crate::linear::{Linear, LinearFactory};
use crate::mxfp4_linear::WeightBytes;
use crate::quant_linear::NativeFactory;

pub struct GroupLinear {
    bits: u8,
    group: usize,
    /// The tables codes stand for, and rows per table; `None`: codes are integers.
    tables: Option<(Vec<[i8; 16]>, usize)>,
    codes: WeightBytes,
    params: Vec<GroupParams>,
    rows: usize,
    cols: usize,
    /// The format's name, for reports.
    format: String,
    /// A calibrated static activation step; `None` quantizes activations per block at run time.
    act_scale: Option<f32>,
    /// A ternary matrix (2-bit codes 1..3, zero point 2) in the look-up layout, where this CPU has its SIMD
    /// kernel: it replaces the codes and parameters (left empty).
    lookup: Option<TernaryMatrix>,
}

impl GroupLinear {
    /// A copy of a checked view (`GroupView::new` validated every length against the shape), with the
    /// static activation step calibrated for its input, if any.
    /// A copy of the matrix `v`.
    pub fn from_view(v: &GroupView<'_>, act_scale: Option<f32>) -> GroupLinear {
        GroupLinear::with_codes(v, WeightBytes::Owned(v.codes.to_vec()), act_scale)
    }

    /// The matrix `v` of `source`, its codes read where the source maps them (a copy otherwise): a native
    /// build's weights stay in the page cache once, not also in the process's own memory.
    pub fn in_place(source: &ModelSource, v: &GroupView<'_>, act_scale: Option<f32>) -> GroupLinear {
        let codes = mapped_codes(source, v.codes);
        GroupLinear::with_codes(v, codes, act_scale)
    }

    /// A trit-packed matrix, unpacked into its 2-bit codes for the group kernels.
    pub fn from_trits(v: &TritsView<'_>) -> GroupLinear {
        let m = v.to_group();
        let linear = GroupLinear::with_codes(&m.view(), WeightBytes::Owned(m.codes.clone()), None);
        GroupLinear { format: trits::name(v.format.group), ..linear }.ternary_lookup()
    }

    fn with_codes(v: &GroupView<'_>, codes: WeightBytes, act_scale: Option<f32>) -> GroupLinear {
        let f = v.format;
        let ng = f.n_groups(v.cols);
        let params = (0..v.rows * ng)
            .map(|i| GroupParams::new(f.bits, v.scale(i / ng, i % ng), v.zero(i / ng, i % ng)))
            .collect();
        GroupLinear {
            bits: f.bits,
            group: f.group,
            tables: None,
            codes,
            params,
            rows: v.rows,
            cols: v.cols,
            format: f.name(),
            act_scale,
            lookup: None,
        }
    }

    /// This matrix on the ternary look-up kernel, if it is ternary (2-bit codes 1..3, zero point 2), takes
    /// dynamic activations and this CPU has the kernel's SIMD path; otherwise unchanged. Building the layout
    /// reads every code, so expert stacks (read a few experts at a time) are left on the group kernels.
    pub fn ternary_lookup(self) -> GroupLinear {
        let ternary = self.bits == 2
            && self.tables.is_none()
            && self.act_scale.is_none()
            && self.params.iter().all(|p| p.min == -2.0 * p.scale)
            && self.codes.iter().all(|&b| (0..4).all(|i| b >> (2 * i) & 3 != 0));
        if !ternary || lowbit_kernels::ternary::simd().is_none() {
            return self;
        }
        let (sbb, ng) = (QK / 4, self.cols.div_ceil(self.group));
        let trits: Vec<i8> =
            self.codes.chunks_exact(sbb).flat_map(|bytes| unpack(2, bytes).map(|u| u as i8 - 2)).collect();
        let lookup = TernaryMatrix::new(
            self.rows,
            self.cols,
            self.group,
            |r, i| trits[r * self.cols + i],
            |r, g| self.params[r * ng + g].scale,
        );
        // The codes' mapped pages are never read again and leave memory.
        GroupLinear { lookup: Some(lookup), codes: WeightBytes::Owned(Vec::new()), params: Vec::new(), ..self }
    }

    /// A copy of a checked NF4 view, its block scales decoded.
    pub fn from_nf4(v: &Nf4View<'_>) -> GroupLinear {
        GroupLinear::with_nf4_codes(v, WeightBytes::Owned(v.codes.to_vec()))
    }

    /// The NF4 matrix `v` of `source`, its codes read where the source maps them (a copy otherwise), as
    /// [`GroupLinear::in_place`].
    pub fn nf4_in_place(source: &ModelSource, v: &Nf4View<'_>) -> GroupLinear {
        let codes = mapped_codes(source, v.codes);
        GroupLinear::with_nf4_codes(v, codes)
    }

    fn with_nf4_codes(v: &Nf4View<'_>, codes: WeightBytes) -> GroupLinear {
        let params = (0..v.rows * v.row_blocks())
            .map(|b| GroupParams { scale: v.block_scale(b) / TABLE_SCALE, min: 0.0 })
            .collect();
        GroupLinear {
            bits: 4,
            group: nf4::BLOCK,
            tables: Some((vec![nf4_table()], usize::MAX)),
            codes,
            params,
            rows: v.rows,
            cols: v.cols,
            format: "nf4".into(),
            act_scale: None,
            lookup: None,
        }
    }
}

impl GroupLinear {
    /// A copy of a checked palette view, its tables made.
    pub fn from_palette(v: &PaletteView<'_>) -> GroupLinear {
        GroupLinear::with_palette_codes(v, WeightBytes::Owned(v.codes.to_vec()))
    }

    /// The palettized matrix `v` of `source`, its indices read where the source maps them (a copy otherwise).
    pub fn palette_in_place(source: &ModelSource, v: &PaletteView<'_>) -> GroupLinear {
        let codes = mapped_codes(source, v.codes);
        GroupLinear::with_palette_codes(v, codes)
    }

    fn with_palette_codes(v: &PaletteView<'_>, codes: WeightBytes) -> GroupLinear {
        let per = v.format.rows_per_palette(v.rows);
        let (mut tables, mut magnitudes) = (Vec::new(), Vec::new());
        for p in 0..v.format.n_palettes(v.rows) {
            let entries = v.palette(p);
            let largest = entries.iter().fold(0.0f32, |m, e| m.max(e.abs()));
            let step = if largest > 0.0 { largest / TABLE_SCALE } else { 0.0 };
            let mut table = [0i8; 16];
            for (t, e) in table.iter_mut().zip(&entries) {
                *t = if step > 0.0 { (e / step).round() as i8 } else { 0 };
            }
            tables.push(table);
            magnitudes.push(step);
        }
        let params = (0..v.rows).map(|r| GroupParams { scale: magnitudes[r / per] * v.scale(r), min: 0.0 }).collect();
        GroupLinear {
            bits: v.format.bits,
            group: v.cols,
            tables: Some((tables, per)),
            codes,
            params,
            rows: v.rows,
            cols: v.cols,
            format: v.format.name(),
            act_scale: None,
            lookup: None,
        }
    }

    fn layout(&self) -> GroupLayout<'_> {
        match &self.tables {
            Some((tables, per)) => GroupLayout::with_codebook(self.bits, self.group, Codebook::per_rows(tables, *per)),
            None => GroupLayout::new(self.bits, self.group),
        }
    }
}

/// `codes` where `source` maps them, or a copy when it does not.
fn mapped_codes(source: &ModelSource, codes: &[u8]) -> WeightBytes {
    source.mapped_range(codes).map_or_else(|| WeightBytes::Owned(codes.to_vec()), WeightBytes::Mapped)
}

/// What the kernel's tables (NF4's, palettes') are scaled by.
const TABLE_SCALE: f32 = 127.0;

/// NF4's values as the kernel's signed bytes.
pub fn nf4_table() -> [i8; 16] {
    NF4.map(|t| (TABLE_SCALE * t).round() as i8)
}

impl Linear for GroupLinear {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        if let Some(w) = &self.lookup {
            return matmul_ternary_f32(w, x, out, n);
        }
        matmul_group_f32(self.layout(), &self.codes, &self.params, x, out, n, self.cols, self.rows, self.act_scale);
    }

    fn storage(&self) -> String {
        match self.act_scale {
            Some(_) => format!("{} (static int8 activations)", self.format),
            None => self.format.clone(),
        }
    }

    fn weight_bytes(&self) -> usize {
        let tables = self.tables.as_ref().map_or(0, |(t, _)| t.len() * 16);
        let lookup = self.lookup.as_ref().map_or(0, TernaryMatrix::bytes);
        self.codes.len() + self.params.len() * std::mem::size_of::<GroupParams>() + tables + lookup
    }
}

/// Runs a native directory's group-quantized, NF4, palettized and trit-packed tensors as [`GroupLinear`]s and everything else
/// as [`NativeFactory`] does (GGUF blocks natively, other types in f32).
pub struct GroupFactory<'a> {
    source: &'a ModelSource,
}

impl<'a> GroupFactory<'a> {
    pub fn new(source: &'a ModelSource) -> GroupFactory<'a> {
        GroupFactory { source }
    }
}

impl LinearFactory for GroupFactory<'_> {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError> {
        if let Some(v) = self.source.group_view(tensor.name) {
            let linear = GroupLinear::in_place(self.source, &v, self.source.act_scale(tensor.name));
            return Ok(Box::new(linear.ternary_lookup()));
        }
        if let Some(v) = self.source.nf4_view(tensor.name) {
            return Ok(Box::new(GroupLinear::nf4_in_place(self.source, &v)));
        }
        if let Some(v) = self.source.palette_view(tensor.name) {
            return Ok(Box::new(GroupLinear::palette_in_place(self.source, &v)));
        }
        if let Some(v) = self.source.trits_view(tensor.name) {
            return Ok(Box::new(GroupLinear::from_trits(&v)));
        }
        NativeFactory::default().build(tensor)
    }
}
