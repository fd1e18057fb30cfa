//! Weights kept as 16-bit floats (F16, BF16) and multiplied by `lowbit_kernels::half`: the FP16
//! runtime that quantized builds are measured against. Half the memory traffic of f32 in decode.

use lowbit_formats::source::TensorRef;
use lowbit_formats::{DType, FormatError};
use lowbit_kernels::half::{matmul_half, HalfType};

use crate::linear::{matrix_shape, Linear, LinearFactory};

/// A `[rows, cols]` matrix of 16-bit floats, row-major.
pub struct HalfLinear {
    ty: HalfType,
    weight: Vec<u16>,
    rows: usize,
    cols: usize,
}

impl HalfLinear {
    /// A copy of a stored F16/BF16 matrix, or `None` for other storage types. Errors name the tensor.
    pub fn from_tensor(tensor: &TensorRef<'_>) -> Result<Option<HalfLinear>, FormatError> {
        let ty = match tensor.dtype {
            DType::F16 => HalfType::F16,
            DType::BF16 => HalfType::BF16,
            _ => return Ok(None),
        };
        let (rows, cols) = matrix_shape(tensor)?;
        if rows.checked_mul(cols).and_then(|n| n.checked_mul(2)) != Some(tensor.data.len()) {
            return Err(FormatError::Invalid(format!(
                "tensor {}: {rows}×{cols} {} takes {} bytes, found {}",
                tensor.name,
                ty.name(),
                rows.saturating_mul(cols).saturating_mul(2),
                tensor.data.len()
            )));
        }
        Ok(Some(HalfLinear { ty, weight: halves(tensor.data), rows, cols }))
    }
}

fn halves(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
}

/// Every projection as F16, whatever its storage (dequantized, then rounded to F16): the FP16 build of a model,
/// made in memory, that a quantized build's speed and size are measured against.
pub struct F16Factory;

impl LinearFactory for F16Factory {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError> {
        if tensor.dtype == DType::F16 {
            if let Some(h) = HalfLinear::from_tensor(tensor)? {
                return Ok(Box::new(h));
            }
        }
        let (rows, cols) = matrix_shape(tensor)?;
        let w = lowbit_formats::dequant::dequantize(tensor.dtype, tensor.data, rows * cols)?;
        let bytes = lowbit_formats::quantize::quantize(DType::F16, &w, cols, None)
            .map_err(|e| FormatError::Invalid(format!("tensor {}: {e}", tensor.name)))?;
        Ok(Box::new(HalfLinear { ty: HalfType::F16, weight: halves(&bytes), rows, cols }))
    }
}

impl Linear for HalfLinear {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        matmul_half(self.ty, x, &self.weight, out, n, self.cols, self.rows);
    }

    fn storage(&self) -> String {
        self.ty.name().into()
    }

    fn weight_bytes(&self) -> usize {
        self.weight.len() * 2
    }
}
