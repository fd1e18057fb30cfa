//! Weights kept as 16-bit floats (F16, BF16) and multiplied by `lowbit_kernels::half`: the FP16
//! runtime that quantized builds are measured against. Half the memory traffic of f32 in decode.

use lowbit_formats::source::TensorRef;
use lowbit_formats::{DType, FormatError};
use lowbit_kernels::half::{matmul_half, HalfType};

use crate::linear::{matrix_shape, Linear};

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
        let weight = tensor.data.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        Ok(Some(HalfLinear { ty, weight, rows, cols }))
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
