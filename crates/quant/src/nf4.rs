//! NF4 with double quantization (bitsandbytes' QLoRA storage, `lowbit_formats::native::nf4`): which
//! tensors get it.
//!
//! Every matrix whose rows are whole blocks of 64 is quantized, the embedding table included, as the
//! round-to-nearest schemes do; other matrices stay F16 and 1-D tensors F32.

use lowbit_formats::native::nf4::{self, Nf4Matrix};
use lowbit_formats::{FormatError, Result};

/// Whether a tensor of `shape` is stored as NF4.
pub fn quantizable(shape: &[usize]) -> bool {
    matches!(shape, [rows, cols] if *rows > 0 && *cols > 0 && cols.is_multiple_of(nf4::BLOCK))
}

/// Quantizes one tensor's values; errors name the tensor.
pub fn quantize_tensor(name: &str, values: &[f32], rows: usize, cols: usize) -> Result<Nf4Matrix> {
    nf4::quantize(values, rows, cols).map_err(|e| match e {
        FormatError::Invalid(what) => FormatError::Invalid(format!("tensor {name}: {what}")),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_of_whole_blocks() {
        assert!(quantizable(&[1536, 576]));
        assert!(quantizable(&[576, 1536]));
        assert!(!quantizable(&[576]));
        assert!(!quantizable(&[10, 96]), "rows of 96 are not whole blocks of 64");
        assert!(!quantizable(&[2, 3, 64]));
        let err = quantize_tensor("blk.0.ffn_up.weight", &[f32::NAN; 64], 1, 64).unwrap_err();
        assert!(err.to_string().contains("blk.0.ffn_up.weight"), "{err}");
    }
}
