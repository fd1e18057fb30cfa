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

use lowbit_formats::native::nf4::{self, NF4};
use lowbit_formats::native::{GroupView, Nf4View};
use lowbit_formats::source::{ModelSource, TensorRef};
use lowbit_formats::FormatError;
use lowbit_kernels::group::{matmul_group_f32, GroupLayout, GroupParams};

use crate::linear::{DenseF32, Linear, LinearFactory};
use crate::mxfp4_linear::WeightBytes;
use crate::quant_linear::NativeFactory;

pub struct GroupLinear {
    layout: GroupLayout,
    codes: WeightBytes,
    params: Vec<GroupParams>,
    rows: usize,
    cols: usize,
    /// The format's name, for reports.
    format: String,
    /// A calibrated static activation step; `None` quantizes activations per block at run time.
    act_scale: Option<f32>,
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
        let codes =
            source.mapped_range(v.codes).map_or_else(|| WeightBytes::Owned(v.codes.to_vec()), WeightBytes::Mapped);
        GroupLinear::with_codes(v, codes, act_scale)
    }

    fn with_codes(v: &GroupView<'_>, codes: WeightBytes, act_scale: Option<f32>) -> GroupLinear {
        let f = v.format;
        let ng = f.n_groups(v.cols);
        let params = (0..v.rows * ng)
            .map(|i| GroupParams::new(f.bits, v.scale(i / ng, i % ng), v.zero(i / ng, i % ng)))
            .collect();
        GroupLinear {
            layout: GroupLayout::new(f.bits, f.group),
            codes,
            params,
            rows: v.rows,
            cols: v.cols,
            format: f.name(),
            act_scale,
        }
    }

    /// A copy of a checked NF4 view, its block scales decoded.
    pub fn from_nf4(v: &Nf4View<'_>) -> GroupLinear {
        GroupLinear::with_nf4_codes(v, WeightBytes::Owned(v.codes.to_vec()))
    }

    /// The NF4 matrix `v` of `source`, its codes read where the source maps them (a copy otherwise), as
    /// [`GroupLinear::in_place`].
    pub fn nf4_in_place(source: &ModelSource, v: &Nf4View<'_>) -> GroupLinear {
        let codes =
            source.mapped_range(v.codes).map_or_else(|| WeightBytes::Owned(v.codes.to_vec()), WeightBytes::Mapped);
        GroupLinear::with_nf4_codes(v, codes)
    }

    fn with_nf4_codes(v: &Nf4View<'_>, codes: WeightBytes) -> GroupLinear {
        let params = (0..v.rows * v.row_blocks())
            .map(|b| GroupParams { scale: v.block_scale(b) / NF4_TABLE_SCALE, min: 0.0 })
            .collect();
        GroupLinear {
            layout: GroupLayout::table4(nf4::BLOCK, nf4_table()),
            codes,
            params,
            rows: v.rows,
            cols: v.cols,
            format: "nf4".into(),
            act_scale: None,
        }
    }
}

/// What the kernel's NF4 table is scaled by.
const NF4_TABLE_SCALE: f32 = 127.0;

/// NF4's values as the kernel's signed bytes.
pub fn nf4_table() -> [i8; 16] {
    NF4.map(|t| (NF4_TABLE_SCALE * t).round() as i8)
}

impl Linear for GroupLinear {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        matmul_group_f32(self.layout, &self.codes, &self.params, x, out, n, self.cols, self.rows, self.act_scale);
    }

    fn storage(&self) -> String {
        match self.act_scale {
            Some(_) => format!("{} (static int8 activations)", self.format),
            None => self.format.clone(),
        }
    }

    fn weight_bytes(&self) -> usize {
        self.codes.len() + self.params.len() * std::mem::size_of::<GroupParams>()
    }
}

/// Runs a native directory's group-quantized and NF4 tensors as [`GroupLinear`]s and everything else
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
            return Ok(Box::new(GroupLinear::in_place(self.source, &v, self.source.act_scale(tensor.name))));
        }
        if let Some(v) = self.source.nf4_view(tensor.name) {
            return Ok(Box::new(GroupLinear::nf4_in_place(self.source, &v)));
        }
        // Palettes have no look-up-table kernel yet: their matrices run dequantized, in f32.
        if let Some(v) = self.source.palette_view(tensor.name) {
            return Ok(Box::new(DenseF32::new(v.dequantize().into(), v.rows, v.cols)));
        }
        NativeFactory::default().build(tensor)
    }
}
