//! Reference (scalar) dequantization of every GGUF storage type.
//!
//! This is the specification the SIMD kernels are tested against, so it is written as the plain
//! reading of each layout (llama.cpp `ggml-common.h` structs, `ggml-quants.c` `dequantize_row_*`),
//! and computes every value with the same float operations in the same order as ggml, so results
//! are bit-identical to ggml's and to PyPI `gguf`'s. Each block layout is a `#[repr(C)]` struct whose
//! size equals the on-disk block, so quantizers can build blocks with the same definitions.

mod kquants;
mod legacy;
mod mxfp4;
mod ternary;

pub use kquants::{unpack_q3k_scales, unpack_scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
pub use mxfp4::{
    dequantize_split as dequantize_split_mxfp4, e8m0_half, split_to_blocks as split_mxfp4_to_blocks, BlockMxfp4,
    MXFP4_VALUES, QK_MXFP4,
};
pub use ternary::{tq1_trit, BlockTQ1_0, BlockTQ2_0};

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{FormatError, Result};

/// Dequantizes a whole number of blocks of `dtype` from `bytes` into `out` (out.len() elements).
pub fn dequantize_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_lengths(dtype, bytes.len(), out.len())?;
    match dtype {
        DType::F32 => each_block(bytes, out, |b, y: &mut [f32; 1]| y[0] = f32::from_le_bytes(*b)),
        DType::F16 => each_block(bytes, out, |b, y: &mut [f32; 1]| y[0] = f16::from_le_bytes(*b).to_f32()),
        DType::BF16 => each_block(bytes, out, |b, y: &mut [f32; 1]| y[0] = bf16::from_le_bytes(*b).to_f32()),
        DType::I8 => each_block(bytes, out, |b: &[u8; 1], y: &mut [f32; 1]| y[0] = f32::from(b[0] as i8)),
        DType::Q4_0 => each_block(bytes, out, |b, y| BlockQ4_0::from_bytes(b).dequantize(y)),
        DType::Q4_1 => each_block(bytes, out, |b, y| BlockQ4_1::from_bytes(b).dequantize(y)),
        DType::Q5_0 => each_block(bytes, out, |b, y| BlockQ5_0::from_bytes(b).dequantize(y)),
        DType::Q5_1 => each_block(bytes, out, |b, y| BlockQ5_1::from_bytes(b).dequantize(y)),
        DType::Q8_0 => each_block(bytes, out, |b, y| BlockQ8_0::from_bytes(b).dequantize(y)),
        DType::Q2K => each_block(bytes, out, |b, y| BlockQ2K::from_bytes(b).dequantize(y)),
        DType::Q3K => each_block(bytes, out, |b, y| BlockQ3K::from_bytes(b).dequantize(y)),
        DType::Q4K => each_block(bytes, out, |b, y| BlockQ4K::from_bytes(b).dequantize(y)),
        DType::Q5K => each_block(bytes, out, |b, y| BlockQ5K::from_bytes(b).dequantize(y)),
        DType::Q6K => each_block(bytes, out, |b, y| BlockQ6K::from_bytes(b).dequantize(y)),
        DType::TQ1_0 => each_block(bytes, out, |b, y| BlockTQ1_0::from_bytes(b).dequantize(y)),
        DType::TQ2_0 => each_block(bytes, out, |b, y| BlockTQ2_0::from_bytes(b).dequantize(y)),
        DType::MXFP4 => each_block(bytes, out, |b, y| BlockMxfp4::from_bytes(b).dequantize(y)),
        // check_lengths has already refused U8.
        DType::U8 => {}
    }
    Ok(())
}

/// Dequantizes `n_elements` values of `dtype` stored in `bytes` into a new vector.
pub fn dequantize(dtype: DType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    // Checked before allocating: `n_elements` usually comes from a file header.
    check_lengths(dtype, bytes.len(), n_elements)?;
    let mut out = vec![0.0; n_elements];
    dequantize_into(dtype, bytes, &mut out)?;
    Ok(out)
}

fn check_lengths(dtype: DType, n_bytes: usize, n_elements: usize) -> Result<()> {
    if dtype == DType::U8 {
        return Err(FormatError::Invalid("U8 holds raw bytes, not numbers: it has no dequantization".into()));
    }
    let expected = dtype.storage_bytes(n_elements as u64)?;
    if expected != n_bytes as u64 {
        return Err(FormatError::Invalid(format!(
            "{n_elements} elements of {dtype} take {expected} bytes, but {n_bytes} were given"
        )));
    }
    Ok(())
}

/// Applies `block` to each stored block and its slice of the output; the caller has checked that
/// both slices hold the same whole number of blocks.
fn each_block<const BYTES: usize, const LEN: usize>(
    bytes: &[u8],
    out: &mut [f32],
    block: impl Fn(&[u8; BYTES], &mut [f32; LEN]),
) {
    for (b, y) in bytes.chunks_exact(BYTES).zip(out.chunks_exact_mut(LEN)) {
        // chunks_exact yields slices of exactly BYTES and LEN items, so these conversions hold.
        let b = <&[u8; BYTES]>::try_from(b).expect("chunks_exact yields whole blocks");
        let y = <&mut [f32; LEN]>::try_from(y).expect("chunks_exact yields whole blocks");
        block(b, y);
    }
}

/// Reads a block's fields in declaration order from its little-endian bytes.
struct FieldReader<'a> {
    rest: &'a [u8],
}

impl<'a> FieldReader<'a> {
    fn new(block: &'a [u8]) -> Self {
        FieldReader { rest: block }
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.rest.split_at(N);
        self.rest = rest;
        let mut a = [0; N];
        a.copy_from_slice(head);
        a
    }

    fn f16(&mut self) -> f16 {
        f16::from_le_bytes(self.bytes())
    }

    fn i8s<const N: usize>(&mut self) -> [i8; N] {
        self.bytes::<N>().map(|b| b as i8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_structs_have_the_on_disk_size() {
        use std::mem::size_of;
        assert_eq!(size_of::<BlockQ4_0>(), DType::Q4_0.block_bytes());
        assert_eq!(size_of::<BlockQ4_1>(), DType::Q4_1.block_bytes());
        assert_eq!(size_of::<BlockQ5_0>(), DType::Q5_0.block_bytes());
        assert_eq!(size_of::<BlockQ5_1>(), DType::Q5_1.block_bytes());
        assert_eq!(size_of::<BlockQ8_0>(), DType::Q8_0.block_bytes());
        assert_eq!(size_of::<BlockQ2K>(), DType::Q2K.block_bytes());
        assert_eq!(size_of::<BlockQ3K>(), DType::Q3K.block_bytes());
        assert_eq!(size_of::<BlockQ4K>(), DType::Q4K.block_bytes());
        assert_eq!(size_of::<BlockQ5K>(), DType::Q5K.block_bytes());
        assert_eq!(size_of::<BlockQ6K>(), DType::Q6K.block_bytes());
        assert_eq!(size_of::<BlockTQ1_0>(), DType::TQ1_0.block_bytes());
        assert_eq!(size_of::<BlockTQ2_0>(), DType::TQ2_0.block_bytes());
        assert_eq!(size_of::<BlockMxfp4>(), DType::MXFP4.block_bytes());
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        let e = dequantize(DType::Q4K, &[0; 143], 256).unwrap_err().to_string();
        assert!(e.contains("144") && e.contains("143") && e.contains("Q4_K"), "{e}");
        let mut out = [0.0; 32];
        let e = dequantize_into(DType::Q8_0, &[0; 35], &mut out).unwrap_err().to_string();
        assert!(e.contains("34") && e.contains("35"), "{e}");
    }

    #[test]
    fn partial_block_is_an_error() {
        let e = dequantize(DType::Q4_0, &[0; 18], 16).unwrap_err().to_string();
        assert!(e.contains("multiple") && e.contains("32"), "{e}");
    }

    #[test]
    fn u8_is_not_dequantizable() {
        let e = dequantize(DType::U8, &[1, 2], 2).unwrap_err().to_string();
        assert!(e.contains("U8"), "{e}");
    }

    #[test]
    fn huge_element_count_fails_before_allocating() {
        // Would need 2^62 * 4 bytes if allocated first.
        assert!(dequantize(DType::F32, &[0; 4], 1 << 62).is_err());
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert_eq!(dequantize(DType::Q6K, &[], 0).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn scalar_types_read_little_endian() {
        assert_eq!(dequantize(DType::F32, &1.5f32.to_le_bytes(), 1).unwrap(), [1.5]);
        assert_eq!(dequantize(DType::F16, &[0x00, 0x3e], 1).unwrap(), [1.5]);
        assert_eq!(dequantize(DType::BF16, &[0xc0, 0x3f], 1).unwrap(), [1.5]);
        assert_eq!(dequantize(DType::I8, &[0xfe, 0x7f], 2).unwrap(), [-2.0, 127.0]);
    }
}
