//! Weights kept in their GGUF block format and multiplied natively by the quantized kernels
//! (`lowbit_kernels::quant`), llama.cpp's way: each forward quantizes the activation rows to int8
//! blocks once, then every output is a sum of integer block dot products times their scales.
//!
//! The blocks are copied once out of the memory-mapped file into a `Vec` owned by the layer. Borrowing
//! them instead would tie every `Linear` (and so the `Model`) to the lifetime of the `ModelSource`, which
//! the `Linear` seam does not carry; the copy costs one read of the file at load (~30 ms for SmolLM2)
//! and the same memory the mapped pages would occupy once touched. Alignment buys nothing here: blocks
//! are 17 to 210 bytes, mostly not multiples of 32, so no layout the file uses aligns them, and the
//! kernels load them unaligned.
//!
//! The blocks stay in the file's layout, with no repacking at load: decode (one token) streams each
//! row once, for which the file layout is as good as any; prefill decodes panels of 8 interleaved rows
//! per call inside the kernel (`lowbit_kernels::quant`), which costs 2–10% of the products of the
//! 128-token block it serves, and keeps one copy of the weights in memory instead of two.

use lowbit_formats::source::TensorRef;
use lowbit_formats::{DType, FormatError};
use lowbit_kernels::quant::{matmul_quant_f32, QuantType};

use crate::half_linear::HalfLinear;
use crate::linear::{matrix_shape, F32Factory, Linear, LinearFactory};

/// The kernels' format for a storage type, if they multiply it natively.
pub fn native_type(dtype: DType) -> Option<QuantType> {
    match dtype {
        DType::Q4_0 => Some(QuantType::Q4_0),
        DType::Q4_1 => Some(QuantType::Q4_1),
        DType::Q5_0 => Some(QuantType::Q5_0),
        DType::Q5_1 => Some(QuantType::Q5_1),
        DType::Q8_0 => Some(QuantType::Q8_0),
        DType::Q2K => Some(QuantType::Q2K),
        DType::Q3K => Some(QuantType::Q3K),
        DType::Q4K => Some(QuantType::Q4K),
        DType::Q5K => Some(QuantType::Q5K),
        DType::Q6K => Some(QuantType::Q6K),
        DType::TQ1_0 => Some(QuantType::TQ1_0),
        DType::TQ2_0 => Some(QuantType::TQ2_0),
        DType::MXFP4 => Some(QuantType::MXFP4),
        DType::F32 | DType::F16 | DType::BF16 | DType::U8 | DType::I8 => None,
    }
}

/// A `[rows, cols]` weight matrix stored as GGUF blocks (each row cols / ty.block_elems() blocks).
pub struct QuantLinear {
    ty: QuantType,
    blocks: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl QuantLinear {
    /// Takes the blocks of a `[rows, cols]` matrix; cols must be a multiple of the format's block (32 or
    /// 256 elements: rows made of whole blocks) and `blocks` exactly rows·cols/block blocks long.
    pub fn new(ty: QuantType, blocks: Vec<u8>, rows: usize, cols: usize) -> Result<QuantLinear, FormatError> {
        let block = ty.block_elems();
        if rows == 0 || cols == 0 || !cols.is_multiple_of(block) {
            return Err(FormatError::Invalid(format!(
                "{} matrix of {rows}×{cols}: rows must be whole blocks of {block}",
                ty.name()
            )));
        }
        let want = rows.checked_mul(ty.row_bytes(cols));
        if want != Some(blocks.len()) {
            return Err(FormatError::Invalid(format!(
                "{} matrix of {rows}×{cols} takes {} bytes, got {}",
                ty.name(),
                rows.saturating_mul(ty.row_bytes(cols)),
                blocks.len()
            )));
        }
        Ok(QuantLinear { ty, blocks, rows, cols })
    }

    /// A copy of a stored matrix in a format the kernels multiply natively ([`native_type`]), or `None`
    /// for other storage types. Errors name the tensor.
    pub fn from_tensor(tensor: &TensorRef<'_>) -> Result<Option<QuantLinear>, FormatError> {
        let Some(ty) = native_type(tensor.dtype) else { return Ok(None) };
        let (rows, cols) = matrix_shape(tensor)?;
        QuantLinear::new(ty, tensor.data.to_vec(), rows, cols)
            .map(Some)
            .map_err(|e| FormatError::Invalid(format!("tensor {}: {e}", tensor.name)))
    }

    pub fn quant_type(&self) -> QuantType {
        self.ty
    }

    /// The blocks, row after row, as stored in the file.
    pub fn blocks(&self) -> &[u8] {
        &self.blocks
    }
}

impl Linear for QuantLinear {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        matmul_quant_f32(self.ty, &self.blocks, x, out, n, self.cols, self.rows);
    }

    fn storage(&self) -> String {
        self.ty.name().into()
    }

    fn weight_bytes(&self) -> usize {
        self.blocks.len()
    }
}

/// Keeps weights of every GGUF block format the kernels know ([`native_type`]) in their blocks
/// ([`QuantLinear`]), F16/BF16 as they are ([`HalfLinear`]), and dequantizes the other float storage
/// types to f32 ([`F32Factory`]).
pub struct NativeFactory;

impl LinearFactory for NativeFactory {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError> {
        if let Some(q) = QuantLinear::from_tensor(tensor)? {
            return Ok(Box::new(q));
        }
        match HalfLinear::from_tensor(tensor)? {
            Some(h) => Ok(Box::new(h)),
            None => F32Factory.build(tensor),
        }
    }
}
