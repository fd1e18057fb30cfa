//! The 32-element block formats (`block_q4_0` … `block_q8_0` in ggml-common.h).
//!
//! Nibble-packed formats store element `j` in the low nibble of `qs[j]` and element `j + 16` in
//! its high nibble; the 5-bit formats keep each element's fifth bit in bit `j` of the
//! little-endian u32 `qh`.

use half::f16;

use super::FieldReader;

/// Elements per block.
pub const QK: usize = 32;

/// `block_q4_0`: value = (q − 8)·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// `block_q4_1`: value = q·d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// `block_q5_0`: value = (q − 16)·d with q = low nibble | fifth bit << 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `block_q5_1`: value = q·d + m with q = low nibble | fifth bit << 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `block_q8_0`: value = q·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// The 4-bit codes of elements `j` and `j + 16` from their shared byte.
fn nibbles(byte: u8) -> (u8, u8) {
    (byte & 0x0F, byte >> 4)
}

/// The 5-bit codes of elements `j` and `j + 16`.
fn five_bit_codes(qs: &[u8; QK / 2], qh: [u8; 4], j: usize) -> (u8, u8) {
    let high = u32::from_le_bytes(qh);
    let (lo, hi) = nibbles(qs[j]);
    let bit = |k: usize| ((high >> k) & 1) as u8;
    (lo | bit(j) << 4, hi | bit(j + 16) << 4)
}

impl BlockQ4_0 {
    pub fn from_bytes(b: &[u8; 18]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ4_0 { d: f.f16(), qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (j, &byte) in self.qs.iter().enumerate() {
            let (q0, q1) = nibbles(byte);
            y[j] = f32::from(q0 as i8 - 8) * d;
            y[j + 16] = f32::from(q1 as i8 - 8) * d;
        }
    }
}

impl BlockQ4_1 {
    pub fn from_bytes(b: &[u8; 20]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ4_1 { d: f.f16(), m: f.f16(), qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &byte) in self.qs.iter().enumerate() {
            let (q0, q1) = nibbles(byte);
            y[j] = f32::from(q0) * d + m;
            y[j + 16] = f32::from(q1) * d + m;
        }
    }
}

impl BlockQ5_0 {
    pub fn from_bytes(b: &[u8; 22]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ5_0 { d: f.f16(), qh: f.bytes(), qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..QK / 2 {
            let (q0, q1) = five_bit_codes(&self.qs, self.qh, j);
            y[j] = f32::from(q0 as i8 - 16) * d;
            y[j + 16] = f32::from(q1 as i8 - 16) * d;
        }
    }
}

impl BlockQ5_1 {
    pub fn from_bytes(b: &[u8; 24]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ5_1 { d: f.f16(), m: f.f16(), qh: f.bytes(), qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for j in 0..QK / 2 {
            let (q0, q1) = five_bit_codes(&self.qs, self.qh, j);
            y[j] = f32::from(q0) * d + m;
            y[j + 16] = f32::from(q1) * d + m;
        }
    }
}

impl BlockQ8_0 {
    pub fn from_bytes(b: &[u8; 34]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ8_0 { d: f.f16(), qs: f.i8s() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = f32::from(q) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_low_nibbles_come_first() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0xF0; // element 0: code 0 -> -8; element 16: code 15 -> 7
        let mut y = [0.0; QK];
        BlockQ4_0::from_bytes(&b).dequantize(&mut y);
        assert_eq!((y[0], y[16], y[1]), (-4.0, 3.5, -4.0));
    }

    #[test]
    fn q5_1_fifth_bits_follow_element_order() {
        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        // qh bit 1 -> element 1, bit 17 -> element 17.
        b[4..8].copy_from_slice(&((1u32 << 1) | (1 << 17)).to_le_bytes());
        let mut y = [0.0; QK];
        BlockQ5_1::from_bytes(&b).dequantize(&mut y);
        assert_eq!((y[0], y[1], y[16], y[17]), (-1.0, 15.0, -1.0, 15.0));
    }
}
