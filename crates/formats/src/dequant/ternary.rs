//! The ternary formats (`block_tq1_0`, `block_tq2_0` in ggml-common.h): every value is −d, 0 or +d.
//!
//! A trit t ∈ {0, 1, 2} stands for t − 1. TQ2_0 gives each trit two bits; TQ1_0 packs five trits
//! into a byte as a base-3 fraction, byte = ⌈(t₀·3⁴ + t₁·3³ + … + t₄)·256 / 243⌉, so that trit `n`
//! comes back as the top bits of (byte·3ⁿ mod 256)·3, with no division.

use half::f16;

use super::{FieldReader, QK_K};

/// `block_tq1_0`: 240 values in `qs` (five per byte), 16 in `qh` (four per byte), f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockTQ1_0 {
    /// Bytes 0–31 hold elements `32n + m` (byte m, trit n, n < 5); bytes 32–47 hold elements
    /// `160 + 16n + m` (byte 32 + m).
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    /// Element `240 + 4n + j` is trit `n` (n < 4) of byte `j`.
    pub qh: [u8; QK_K / 64],
    pub d: f16,
}

/// `block_tq2_0`: 2-bit codes, f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockTQ2_0 {
    /// Element `128h + 32k + m` is bits `2k..2k+2` of `qs[32h + m]`.
    pub qs: [u8; QK_K / 4],
    pub d: f16,
}

/// Trit `n` (most significant first) of a TQ1_0 byte, as ggml extracts it.
pub fn tq1_trit(byte: u8, n: u32) -> i8 {
    let q = byte.wrapping_mul(3u8.pow(n));
    ((u16::from(q) * 3) >> 8) as i8 - 1
}

impl BlockTQ1_0 {
    pub fn from_bytes(b: &[u8; 54]) -> Self {
        let mut f = FieldReader::new(b);
        BlockTQ1_0 { qs: f.bytes(), qh: f.bytes(), d: f.f16() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let mut e = 0;
        for (bytes, trits) in [(&self.qs[..32], 5), (&self.qs[32..], 5), (&self.qh[..], 4)] {
            for n in 0..trits {
                for &byte in bytes {
                    y[e] = f32::from(tq1_trit(byte, n)) * d;
                    e += 1;
                }
            }
        }
    }
}

impl BlockTQ2_0 {
    pub fn from_bytes(b: &[u8; 66]) -> Self {
        let mut f = FieldReader::new(b);
        BlockTQ2_0 { qs: f.bytes(), d: f.f16() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (e, y) in y.iter_mut().enumerate() {
            let (half, k, m) = (e / 128, (e % 128) / 32, e % 32);
            let code = (self.qs[32 * half + m] >> (2 * k)) & 3;
            *y = f32::from(code as i8 - 1) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tq1_bytes_decode_their_five_trits_most_significant_first() {
        // Trits (2, 0, 1, 1, 2) = 2·81 + 0·27 + 1·9 + 1·3 + 2 = 176; ⌈176·256/243⌉ = 186.
        let byte = ((176u16 * 256).div_ceil(243)) as u8;
        let trits: Vec<i8> = (0..5).map(|n| tq1_trit(byte, n)).collect();
        assert_eq!(trits, [1, -1, 0, 0, 1]);
    }

    #[test]
    fn tq2_codes_follow_ggml_element_order() {
        let mut b = [0u8; 66];
        b[64..].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[33] = 0b10_00_01_10; // elements 128 + 1 (k 0), 160 + 1 (k 1), 192 + 1 (k 2), 224 + 1 (k 3)
        let mut y = [0.0; QK_K];
        BlockTQ2_0::from_bytes(&b).dequantize(&mut y);
        assert_eq!((y[129], y[161], y[193], y[225], y[0]), (0.5, 0.0, -0.5, 0.5, -0.5));
    }
}
