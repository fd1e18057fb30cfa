//! Weights in lowbit's group-wise integer formats (a native directory's `int4-g128-sym` and kin),
//! multiplied natively by `lowbit_kernels::group` with int8-quantized activations.
//!
//! The codes are copied once from the memory-mapped file, in the file's layout (the kernels read it
//! as is); the f16 scales and u8 zero points become one interleaved f32 pair per group
//! ([`GroupParams`]: scale and the zero point's term folded into a "min"), so the kernel reads one
//! small stream of parameters beside the codes and converts nothing.


use lowbit_formats::native::GroupView;
use lowbit_formats::source::{ModelSource, TensorRef};
use lowbit_formats::FormatError;
use lowbit_kernels::group::{matmul_group_f32, GroupLayout, GroupParams};

use crate::linear::{Linear, LinearFactory};
use crate::quant_linear::NativeFactory;

pub struct GroupLinear {
    layout: GroupLayout,
    codes: Vec<u8>,
    params: Vec<GroupParams>,
    rows: usize,
    cols: usize,
    /// The format's name, for reports.
    format: String,
}

impl GroupLinear {
    /// A copy of a checked view (`GroupView::new` validated every length against the shape).
    pub fn from_view(v: &GroupView<'_>) -> GroupLinear {
        let f = v.format;
        let ng = f.n_groups(v.cols);
        let params = (0..v.rows * ng)
            .map(|i| GroupParams::new(f.bits, v.scale(i / ng, i % ng), v.zero(i / ng, i % ng)))
            .collect();
        GroupLinear {
            layout: GroupLayout::new(f.bits, f.group),
            codes: v.codes.to_vec(),
            params,
            rows: v.rows,
            cols: v.cols,
            format: f.name(),
        }
    }
}

impl Linear for GroupLinear {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        matmul_group_f32(self.layout, &self.codes, &self.params, x, out, n, self.cols, self.rows);
    }

    fn storage(&self) -> String {
        self.format.clone()
    }

    fn weight_bytes(&self) -> usize {
        self.codes.len() + self.params.len() * std::mem::size_of::<GroupParams>()
    }
}

/// Runs a native directory's group-quantized tensors as [`GroupLinear`]s and everything else as
/// [`NativeFactory`] does (GGUF blocks natively, other types in f32).
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
        match self.source.group_view(tensor.name) {
            Some(v) => Ok(Box::new(GroupLinear::from_view(&v))),
            None => NativeFactory.build(tensor),
        }
    }
}
