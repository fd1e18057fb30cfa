//! Weights kept in their GGUF block format and multiplied natively by the quantized kernels
//! (`lowbit_kernels::quant`), llama.cpp's way: each forward quantizes the activation rows to int8
//! blocks once, then every output is a sum of integer block dot products times their scales.
//!
//! The blocks are copied once out of the memory-mapped file into a `Vec` owned by the layer. Borrowing
//! them instead would tie every `Linear` (and so the `Model`) to the lifetime of the `ModelSource`, which
//! the `Linear` seam does not carry; the copy costs one read of the file at load (~30 ms for SmolLM2)
//! and the same memory the mapped pages would occupy once touched. Alignment buys nothing here: blocks
//! are 18, 20 or 34 bytes, so no block after the first is aligned in any layout the file uses, and the
//! kernels load them unaligned. Repacking into a kernel-friendly layout (scales apart, rows
//! interleaved) would start from this owned copy.

use lowbit_formats::source::TensorRef;
use lowbit_formats::{DType, FormatError};
use lowbit_kernels::quant::{matmul_quant_f32, QuantType, QK};

use crate::half_linear::HalfLinear;
use crate::linear::{matrix_shape, F32Factory, Linear, LinearFactory};

/// The kernels' format for a storage type, if they multiply it natively.
pub fn native_type(dtype: DType) -> Option<QuantType> {
    match dtype {
        DType::Q4_0 => Some(QuantType::Q4_0),
        DType::Q4_1 => Some(QuantType::Q4_1),
        DType::Q8_0 => Some(QuantType::Q8_0),
        _ => None,
    }
}

/// A `[rows, cols]` weight matrix stored as GGUF blocks (each row cols/32 blocks).
pub struct QuantLinear {
    ty: QuantType,
    blocks: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl QuantLinear {
    /// Takes the blocks of a `[rows, cols]` matrix; cols must be a multiple of 32 (rows made of whole
    /// blocks) and `blocks` exactly rows·cols/32 blocks long.
    pub fn new(ty: QuantType, blocks: Vec<u8>, rows: usize, cols: usize) -> Result<QuantLinear, FormatError> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(QK) {
            return Err(FormatError::Invalid(format!(
                "{} matrix of {rows}×{cols}: rows must be whole blocks of {QK}",
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

    /// A copy of a stored Q4_0/Q4_1/Q8_0 matrix, or `None` for other storage types. Errors name the
    /// tensor.
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

/// Keeps Q4_0, Q4_1 and Q8_0 weights in their blocks ([`QuantLinear`]), F16/BF16 as they are
/// ([`HalfLinear`]), and dequantizes every other storage type to f32 ([`F32Factory`]).
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
