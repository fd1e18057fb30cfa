//! NF4 with double quantization (bitsandbytes' QLoRA storage, `lowbit_formats::native::nf4`): which
//! tensors get it.
//!
//! Every matrix whose rows are whole blocks of 64 is quantized, the embedding table included, as the
//! round-to-nearest schemes do, and so is every mixture-of-experts stack of such matrices, expert by expert; the
//! router and biases stay wide as there (`crate::rtn::RtnScheme::format_for`), other matrices stay F16 and 1-D
//! tensors F32.

use lowbit_formats::native::nf4;
use lowbit_formats::{FormatError, Result};

/// Whether the tensor `name` of `shape` is stored as NF4.
pub fn quantizable(name: &str, shape: &[usize]) -> bool {
    let rows = shape.iter().rev().skip(1).product::<usize>();
    crate::rtn::quantized_cols(name, shape).is_some_and(|cols| rows > 0 && cols.is_multiple_of(nf4::BLOCK))
}

/// The codes and exact block maxima of whole rows of a matrix (`nf4::encode_rows`); errors name `what` (the
/// tensor and which of its rows these are).
pub fn encode_rows(what: &str, values: &[f32], rows: usize, cols: usize) -> Result<(Vec<u8>, Vec<f32>)> {
    nf4::encode_rows(values, rows, cols).map_err(|e| match e {
        FormatError::Invalid(why) => FormatError::Invalid(format!("tensor {what}: {why}")),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_of_whole_blocks() {
        assert!(quantizable("blk.0.ffn_up.weight", &[1536, 576]));
        assert!(quantizable("blk.0.ffn_down.weight", &[576, 1536]));
        assert!(!quantizable("blk.0.attn_norm.weight", &[576]));
        assert!(!quantizable("blk.0.ffn_up.weight", &[10, 96]), "rows of 96 are not whole blocks of 64");
        assert!(!quantizable("blk.0.attn_q.weight", &[2, 3, 64]));
        assert!(quantizable("blk.0.ffn_gate_up_exps.weight", &[32, 5760, 2880]));
        assert!(!quantizable("blk.0.ffn_gate_up_exps.bias", &[32, 5760]));
        assert!(!quantizable("blk.0.ffn_gate_inp.weight", &[32, 2880]));
        let err = encode_rows("blk.0.ffn_up.weight", &[f32::NAN; 64], 1, 64).unwrap_err();
        assert!(err.to_string().contains("blk.0.ffn_up.weight"), "{err}");
    }
}
