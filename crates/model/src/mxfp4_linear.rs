//! A weight matrix in MXFP4 as Hugging Face checkpoints store it (codes and E8M0 scales apart), multiplied in
//! place by the split-MXFP4 kernels: GPT-OSS's experts, which stay in the file's pages (12 GB for the 20B, of
//! which a token reads the 4 experts its router picks) instead of being copied at load.

use lowbit_formats::MappedBytes;
use lowbit_kernels::quant::split_mxfp4::{matmul_split_mxfp4_f32, CODE_BYTES};
use lowbit_kernels::quant::QK;

use crate::linear::Linear;

/// Bytes a weight reads from: a mapped file range, or a copy where the source does not map (GGUF, native).
pub enum WeightBytes {
    Mapped(MappedBytes),
    Owned(Vec<u8>),
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Mapped(m) => m,
            WeightBytes::Owned(v) => v,
        }
    }
}

pub struct Mxfp4Linear {
    codes: WeightBytes,
    scales: WeightBytes,
    rows: usize,
    cols: usize,
}

impl Mxfp4Linear {
    /// `rows`×`cols` weights: `codes` 16 bytes and `scales` one byte per 32 values of a row; `None` when the
    /// lengths do not say that (cols must be a multiple of 32).
    pub fn new(codes: WeightBytes, scales: WeightBytes, rows: usize, cols: usize) -> Option<Mxfp4Linear> {
        let blocks = rows.checked_mul(cols)? / QK;
        let fits = rows > 0
            && cols > 0
            && cols.is_multiple_of(QK)
            && scales.len() == blocks
            && Some(codes.len()) == blocks.checked_mul(CODE_BYTES);
        fits.then_some(Mxfp4Linear { codes, scales, rows, cols })
    }
}

impl Linear for Mxfp4Linear {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        matmul_split_mxfp4_f32(&self.codes, &self.scales, x, out, n, self.cols);
    }

    fn storage(&self) -> String {
        "MXFP4".into()
    }

    fn weight_bytes(&self) -> usize {
        self.codes.len() + self.scales.len()
    }
}
