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
use lowbit_kernels::quant::{matmul_quant_f32, ActRounding, QuantType};

use crate::half_linear::HalfLinear;
use crate::linear::{matrix_shape, F32Factory, Linear, LinearFactory};

/// The kernels' format for a storage type, if they multiply it natively: the one of the same ggml name.
///
/// `QuantType` and `DType` each list the GGUF block formats because neither crate may depend on the
/// other: the kernels are the compute leaf (no file parsing, serde or mmap), and lowbit-formats'
/// dequantizers are the independent reading the kernels are tested against. This is the one place
/// that relates them; the test below checks that the two lists agree, format by format.
pub fn native_type(dtype: DType) -> Option<QuantType> {
    QuantType::ALL.into_iter().find(|ty| ty.name() == dtype.name())
}

/// A `[rows, cols]` weight matrix stored as GGUF blocks (each row cols / ty.block_elems() blocks).
pub struct QuantLinear {
    ty: QuantType,
    rounding: ActRounding,
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
        Ok(QuantLinear { ty, rounding: ActRounding::default(), blocks, rows, cols })
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

    /// The same matrix with its activations rounded as `rounding` says.
    pub fn with_rounding(self, rounding: ActRounding) -> QuantLinear {
        QuantLinear { rounding, ..self }
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
        matmul_quant_f32(self.ty, self.rounding, &self.blocks, x, out, n, self.cols, self.rows);
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
/// types to f32 ([`F32Factory`]). `rounding` is how the block formats' activations are rounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeFactory {
    pub rounding: ActRounding,
}

impl LinearFactory for NativeFactory {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError> {
        if let Some(q) = QuantLinear::from_tensor(tensor)? {
            return Ok(Box::new(q.with_rounding(self.rounding)));
        }
        match HalfLinear::from_tensor(tensor)? {
            Some(h) => Ok(Box::new(h)),
            None => F32Factory.build(tensor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every storage type GGUF files carry, and U8 (which has no ggml id).
    fn all_dtypes() -> Vec<DType> {
        (0..=u8::MAX.into()).filter_map(DType::from_ggml).chain([DType::U8]).collect()
    }

    /// The two lists of block formats agree: every kernel format is the native type of exactly one
    /// storage type, with the same block geometry, and every storage type made of blocks has one.
    #[test]
    fn kernel_formats_and_storage_block_types_agree() {
        let dtypes = all_dtypes();
        for ty in QuantType::ALL {
            let stored: Vec<DType> = dtypes.iter().copied().filter(|&d| native_type(d) == Some(ty)).collect();
            assert_eq!(stored.len(), 1, "{}: storage types {stored:?}", ty.name());
            let d = stored[0];
            assert_eq!((d.block_len(), d.block_bytes()), (ty.block_elems(), ty.block_bytes()), "{}", ty.name());
        }
        for d in dtypes {
            assert_eq!(native_type(d).is_some(), d.block_len() > 1, "{d}: a block format without a kernel format");
        }
    }
}
