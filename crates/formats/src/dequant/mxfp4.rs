//! ggml's MXFP4 block (`block_mxfp4` in ggml-common.h): 32 E2M1 values sharing an E8M0 exponent.
//!
//! ggml stores the E2M1 values doubled (`kvalues_mxfp4`, integers from −12 to 12) and halves the
//! scale instead: value = kvalues[code]·2^(e − 128). Element `j` is the low nibble of `qs[j]`,
//! element `j + 16` its high nibble. (The Hugging Face MXFP4 layout differs: see
//! shared/notes/algorithms.md.)

use super::FieldReader;

/// Elements per block (ggml's QK_MXFP4).
pub const QK_MXFP4: usize = 32;

/// ggml's `kvalues_mxfp4`: twice the E2M1 values, sign in bit 3.
pub const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockMxfp4 {
    /// Biased exponent: the block scale is 2^(e − 128) (half of E8M0's 2^(e − 127)).
    pub e: u8,
    pub qs: [u8; QK_MXFP4 / 2],
}

/// ggml's `ggml_e8m0_to_fp32_half`: 2^(e − 128), exact for every e (subnormal for e < 2).
pub fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits(u32::from(e - 1) << 23)
    }
}

impl BlockMxfp4 {
    pub fn from_bytes(b: &[u8; 17]) -> Self {
        let mut f = FieldReader::new(b);
        let [e] = f.bytes();
        BlockMxfp4 { e, qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_MXFP4]) {
        let d = e8m0_half(self.e);
        for (j, &byte) in self.qs.iter().enumerate() {
            y[j] = f32::from(MXFP4_VALUES[usize::from(byte & 0x0F)]) * d;
            y[j + 16] = f32::from(MXFP4_VALUES[usize::from(byte >> 4)]) * d;
        }
    }
}

/// Dequantizes MXFP4 as Hugging Face checkpoints store it (GPT-OSS's `*_blocks` / `*_scales`): `scales` holds
/// one E8M0 exponent per 32 values (2^(e − 127)), `codes` 16 bytes per 32 values, element 2j in the low nibble
/// of byte j and element 2j + 1 in its high nibble. `None` unless `codes` is 16 bytes per scale.
pub fn dequantize_split(codes: &[u8], scales: &[u8]) -> Option<Vec<f32>> {
    if codes.len() != scales.len().checked_mul(QK_MXFP4 / 2)? {
        return None;
    }
    let mut out = Vec::with_capacity(scales.len() * QK_MXFP4);
    for (block, &e) in codes.chunks_exact(QK_MXFP4 / 2).zip(scales) {
        let d = e8m0_half(e);
        for &byte in block {
            out.push(f32::from(MXFP4_VALUES[usize::from(byte & 0x0F)]) * d);
            out.push(f32::from(MXFP4_VALUES[usize::from(byte >> 4)]) * d);
        }
    }
    Some(out)
}

/// Hugging Face's MXFP4 (`codes` and `scales` apart, as [`dequantize_split`] reads them) as ggml's 17-byte blocks: the
/// exponent, then element j in the low nibble and element j + 16 in the high nibble of byte j. What llama.cpp's
/// converter writes for GPT-OSS's experts; the values are unchanged. `None` unless `codes` is 16 bytes per scale.
pub fn split_to_blocks(codes: &[u8], scales: &[u8]) -> Option<Vec<u8>> {
    if codes.len() != scales.len().checked_mul(QK_MXFP4 / 2)? {
        return None;
    }
    let mut out = Vec::with_capacity(scales.len() * 17);
    for (block, &e) in codes.chunks_exact(QK_MXFP4 / 2).zip(scales) {
        let code = |i: usize| (block[i / 2] >> (4 * (i % 2))) & 0x0F;
        out.push(e);
        out.extend((0..QK_MXFP4 / 2).map(|j| code(j) | (code(j + 16) << 4)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_mxfp4_repacks_into_the_same_values() {
        // Every code in every position, under small, unit and large exponents.
        let codes: Vec<u8> = (0..16 * 6).map(|i| (i * 37 + 11) as u8).collect();
        let scales = [1u8, 127, 128, 130, 200, 254];
        let blocks = split_to_blocks(&codes, &scales).unwrap();
        let mut ggml = Vec::new();
        for b in blocks.chunks_exact(17) {
            let mut y = [0.0; QK_MXFP4];
            BlockMxfp4::from_bytes(b.try_into().unwrap()).dequantize(&mut y);
            ggml.extend(y);
        }
        assert_eq!(ggml, dequantize_split(&codes, &scales).unwrap());
        assert_eq!(split_to_blocks(&codes[1..], &scales), None);
    }

    #[test]
    fn e8m0_half_is_two_to_the_e_minus_128() {
        assert_eq!(e8m0_half(128), 1.0);
        assert_eq!(e8m0_half(127), 0.5);
        assert_eq!(e8m0_half(255), 2f32.powi(127));
        assert_eq!(e8m0_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_half(0), 2f32.powi(-128));
    }

    #[test]
    fn low_nibbles_are_the_first_sixteen_elements() {
        let mut b = [0u8; 17];
        b[0] = 127; // scale 0.5: values are the E2M1 table
        b[1] = 0xD7; // element 0: code 7 -> 6.0; element 16: code 13 -> -3.0
        let mut y = [0.0; QK_MXFP4];
        BlockMxfp4::from_bytes(&b).dequantize(&mut y);
        assert_eq!((y[0], y[16], y[1]), (6.0, -3.0, 0.0));
    }

    #[test]
    fn split_layout_puts_even_elements_in_low_nibbles() {
        // E8M0 127 is 2^0: values are plain E2M1. Byte 0 = elements 0 (code 2: 1.0) and 1 (code 0xF: −6).
        let mut codes = [0u8; 16];
        codes[0] = 0xF2;
        let v = dequantize_split(&codes, &[127]).unwrap();
        assert_eq!((v[0], v[1], v[2]), (1.0, -6.0, 0.0));
        assert_eq!(dequantize_split(&codes, &[129]).unwrap()[1], -24.0);
        assert!(dequantize_split(&codes[..15], &[127]).is_none());
    }
}
