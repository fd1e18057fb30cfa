//! Round-to-nearest (RTN) quantization into the native group formats: which tensors get which format.
//!
//! Every matrix whose rows are whole sub-blocks of 32 is quantized, the embedding table included (in
//! small models it is the largest tensor, and a tied output projection multiplies with it); other
//! matrices are stored as F16 and 1-D tensors (norms, biases) as F32, as llama.cpp keeps them.

use lowbit_formats::native::group::{self, SUB_BLOCK};
use lowbit_formats::native::GroupFormat;
use lowbit_formats::{FormatError, Result};

/// `--bits B [--group G] [--sym|--asym]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtnScheme {
    pub bits: u8,
    /// Columns per group; `None` is one group per output channel (the whole row).
    pub group: Option<usize>,
    pub sym: bool,
    /// Bits of the token embedding and output projection when they are kept wider than the rest (8: per
    /// output channel; fewer: the scheme's groups). llama.cpp's mixes keep them at 6–8 bits, as their error
    /// reaches every token.
    pub embedding_bits: Option<u8>,
    /// Blocks whose matrices are kept at 8 bits per output channel (bit `l` set: block `l`): mixed precision,
    /// for the blocks a build is most sensitive to.
    pub wide_blocks: u128,
}

/// The most blocks [`RtnScheme::with_wide_blocks`] can name.
pub const MAX_WIDE_BLOCK: usize = u128::BITS as usize;

/// The block a tensor belongs to (`blk.7.ffn_down.weight`: 7).
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The tensors `embedding_bits` applies to: the token embedding (also the output projection when tied) and
/// the untied output projection.
pub fn is_embedding(name: &str) -> bool {
    matches!(name, "token_embd.weight" | "output.weight")
}

/// The row width of a tensor the native schemes quantize: a matrix (or a stack of expert matrices) whose rows are
/// whole sub-blocks of 32. Mixture-of-experts weights are stacks of matrices, quantized matrix by matrix; their
/// biases (2-D too) stay wide, and so does the router: tiny, and it decides which weights run at all.
pub fn quantized_cols(name: &str, shape: &[usize]) -> Option<usize> {
    let cols = match shape[..] {
        [_, cols] => cols,
        [_, _, cols] if is_expert_stack(name) => cols,
        _ => return None,
    };
    let wide = name.ends_with(".bias") || name.contains(".ffn_gate_inp.");
    (!wide && cols > 0 && cols.is_multiple_of(SUB_BLOCK)).then_some(cols)
}

/// A mixture of experts' weights, `[experts, rows, cols]` (`blk.3.ffn_gate_up_exps.weight`).
pub fn is_expert_stack(name: &str) -> bool {
    name.ends_with("_exps.weight")
}

impl RtnScheme {
    /// Checks bits and group; the format of each tensor comes from [`RtnScheme::format_for`].
    pub fn new(bits: u8, group: Option<usize>, sym: bool) -> Result<RtnScheme> {
        GroupFormat::new(bits, group.unwrap_or(SUB_BLOCK), sym)?;
        Ok(RtnScheme { bits, group, sym, embedding_bits: None, wide_blocks: 0 })
    }

    /// The scheme with the embedding and output projection at `bits`.
    pub fn with_embedding_bits(self, bits: u8) -> Result<RtnScheme> {
        GroupFormat::new(bits, self.group.unwrap_or(SUB_BLOCK), self.sym)?;
        Ok(RtnScheme { embedding_bits: Some(bits), ..self })
    }

    /// The scheme with the matrices of `blocks` at 8 bits per output channel.
    pub fn with_wide_blocks(self, blocks: &[usize]) -> Result<RtnScheme> {
        let mut wide = 0u128;
        for &b in blocks {
            if b >= MAX_WIDE_BLOCK {
                return Err(FormatError::Invalid(format!(
                    "block {b}: mixed precision names blocks below {MAX_WIDE_BLOCK}"
                )));
            }
            wide |= 1 << b;
        }
        Ok(RtnScheme { wide_blocks: wide, ..self })
    }

    /// The blocks kept at 8 bits, ascending.
    pub fn wide_block_list(&self) -> Vec<usize> {
        (0..MAX_WIDE_BLOCK).filter(|b| self.wide_blocks & (1 << b) != 0).collect()
    }

    /// The format of tensor `name` of `shape`, or `None` when it stays unquantized.
    pub fn format_for(&self, name: &str, shape: &[usize]) -> Option<GroupFormat> {
        let cols = quantized_cols(name, shape)?;
        if block_of(name).is_some_and(|b| b < MAX_WIDE_BLOCK && self.wide_blocks & (1 << b) != 0) {
            return GroupFormat::new(8, cols, self.sym).ok();
        }
        match self.embedding_bits.filter(|_| is_embedding(name)) {
            Some(8) => GroupFormat::new(8, cols, self.sym).ok(),
            Some(bits) => GroupFormat::new(bits, self.group.unwrap_or(cols), self.sym).ok(),
            None => GroupFormat::new(self.bits, self.group.unwrap_or(cols), self.sym).ok(),
        }
    }

    /// `int4-g128-sym`, `int8-channel-sym`; `int4-g128-sym-emb8` with a wider embedding; `int4-g128-sym-blk8-3-17`
    /// with blocks 3 and 17 at 8 bits.
    pub fn name(&self) -> String {
        let group = self.group.map_or("channel".to_string(), |g| format!("g{g}"));
        let emb = self.embedding_bits.map_or(String::new(), |b| format!("-emb{b}"));
        let wide: String = self.wide_block_list().iter().map(|b| format!("-{b}")).collect();
        let wide = if wide.is_empty() { wide } else { format!("-blk8{wide}") };
        format!("int{}-{group}-{}{emb}{wide}", self.bits, if self.sym { "sym" } else { "asym" })
    }
}

/// Quantizes one tensor's values, with the scale search weighted by per-column `importance` when given (see
/// `lowbit_formats::native::group`); errors name the tensor.
pub fn quantize_tensor(
    name: &str,
    format: GroupFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
) -> Result<lowbit_formats::native::GroupMatrix> {
    let quantized = match importance {
        Some(w) => group::quantize_weighted(format, values, rows, cols, w),
        None => group::quantize(format, values, rows, cols),
    };
    quantized.map_err(|e| match e {
        FormatError::Invalid(what) => FormatError::Invalid(format!("tensor {name}: {what}")),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_per_shape() {
        let s = RtnScheme::new(4, Some(128), true).unwrap();
        assert_eq!(s.format_for("w", &[1536, 576]), Some(GroupFormat { bits: 4, group: 128, sym: true }));
        assert_eq!(s.format_for("w", &[576]), None);
        assert_eq!(s.format_for("w", &[10, 100]), None);
        let c = RtnScheme::new(8, None, true).unwrap();
        assert_eq!(c.format_for("w", &[576, 1536]), Some(GroupFormat { bits: 8, group: 1536, sym: true }));
        let e = s.with_embedding_bits(8).unwrap();
        assert_eq!(
            e.format_for("token_embd.weight", &[49152, 576]),
            Some(GroupFormat { bits: 8, group: 576, sym: true })
        );
        assert_eq!(e.format_for("blk.0.ffn_up.weight", &[1536, 576]), s.format_for("w", &[1536, 576]));
        assert_eq!(e.name(), "int4-g128-sym-emb8");
        assert_eq!(c.name(), "int8-channel-sym");
        let expert = Some(GroupFormat { bits: 4, group: 128, sym: true });
        assert_eq!(s.format_for("blk.0.ffn_gate_up_exps.weight", &[32, 5760, 2880]), expert);
        assert_eq!(s.format_for("blk.0.ffn_gate_up_exps.bias", &[32, 5760]), None);
        assert_eq!(s.format_for("blk.0.ffn_gate_inp.weight", &[32, 2880]), None);
        assert_eq!(s.format_for("blk.0.attn_q.weight", &[2, 64, 64]), None);
        assert!(RtnScheme::new(5, None, true).is_err());
        assert!(RtnScheme::new(4, Some(100), true).is_err());
    }

    #[test]
    fn wide_blocks_hold_8_bits_per_channel() {
        let s = RtnScheme::new(4, Some(128), true).unwrap().with_wide_blocks(&[17, 3]).unwrap();
        let eight = Some(GroupFormat { bits: 8, group: 576, sym: true });
        assert_eq!(s.format_for("blk.3.attn_q.weight", &[576, 576]), eight);
        assert_eq!(s.format_for("blk.17.ffn_up.weight", &[1536, 576]), eight);
        let four = Some(GroupFormat { bits: 4, group: 128, sym: true });
        for name in ["blk.4.attn_q.weight", "blk.13.attn_q.weight", "blk.31.attn_q.weight", "token_embd.weight"] {
            assert_eq!(s.format_for(name, &[576, 576]), four, "{name}");
        }
        assert_eq!(s.wide_block_list(), [3, 17]);
        assert_eq!(s.name(), "int4-g128-sym-blk8-3-17");
        assert!(s.with_wide_blocks(&[MAX_WIDE_BLOCK]).is_err());
        assert_eq!((block_of("blk.12.ffn_down.weight"), block_of("output.weight")), (Some(12), None));
    }
}
