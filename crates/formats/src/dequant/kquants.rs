//! The 256-element "k-quant" super-block formats (`block_q2_K` … `block_q6_K` in ggml-common.h).
//!
//! A super-block is 16 sub-blocks of 16 elements (Q2_K, Q3_K, Q6_K) or 8 of 32 (Q4_K, Q5_K), each
//! with a small integer scale that multiplies the f16 super-block scale `d`. The quants of one
//! 128-element half are interleaved: a byte of `qs` carries the same position `l` of several
//! 32-element groups, at successive bit shifts.

use half::f16;

use super::FieldReader;

/// Elements per super-block (ggml's QK_K).
pub const QK_K: usize = 256;

/// `block_q2_K`: value = d·scale·q − dmin·min, q in 0..4, 16 sub-blocks of 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ2K {
    /// Per sub-block: 4-bit scale in the low nibble, 4-bit min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants: element `128·h + 32·k + l` is bits `2k..2k+2` of `qs[32·h + l]`.
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

/// `block_q3_K`: value = d·(scale − 32)·(q − 4·(1 − hbit)), 16 sub-blocks of 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ3K {
    /// High bit of element `e` is bit `e / 32` of `hmask[e % 32]`; when it is clear the value is
    /// lowered by 4.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, laid out as Q2_K's `qs`.
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales, biased by 32; see `unpack_q3k_scales`.
    pub scales: [u8; 12],
    pub d: f16,
}

/// `block_q4_K`: value = d·scale·q − dmin·min, q in 0..16, 8 sub-blocks of 32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    /// 8 six-bit scales and 8 six-bit mins; see `unpack_scale_min_k4`.
    pub scales: [u8; 12],
    /// Sub-block `2c` is the low nibbles of `qs[32c..32c + 32]`, sub-block `2c + 1` their high nibbles.
    pub qs: [u8; QK_K / 2],
}

/// `block_q5_K`: Q4_K plus a fifth bit, q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    /// The fifth bit of element `32·s + l` (sub-block `s`) is bit `s` of `qh[l]`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}

/// `block_q6_K`: value = d·scale·(q − 32), q in 0..64, 16 sub-blocks of 16, int8 scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    /// Low 4 bits: in half `h`, group `k` (of 32 elements) uses `ql[64·h + 32·(k % 2) + l]`,
    /// low nibble for k < 2, high nibble for k ≥ 2.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: bits `2k..2k+2` of `qh[32·h + l]`.
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// Q4_K/Q5_K scale packing (ggml `get_scale_min_k4`): returns the 8 six-bit scales and 8 six-bit
/// mins. Bytes 0–3 hold scales 0–3 in their low 6 bits, bytes 4–7 mins 0–3; scales and mins 4–7
/// keep their low 4 bits in the nibbles of bytes 8–11 and their top 2 bits in the spare top bits
/// of bytes 0–3 (scales) and 4–7 (mins).
pub fn unpack_scale_min_k4(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..4 {
        scales[j] = packed[j] & 0x3F;
        mins[j] = packed[j + 4] & 0x3F;
        scales[j + 4] = (packed[j + 8] & 0x0F) | (packed[j] >> 6) << 4;
        mins[j + 4] = (packed[j + 8] >> 4) | (packed[j + 4] >> 6) << 4;
    }
    (scales, mins)
}

/// Q3_K scale packing: scale `s` has its low 4 bits in the low (s < 8) or high (s ≥ 8) nibble of
/// byte `s % 8`, and its top 2 bits at bits `2·(s / 4)` of byte `8 + s % 4`. Returns them unbiased.
pub fn unpack_q3k_scales(packed: &[u8; 12]) -> [i8; 16] {
    std::array::from_fn(|s| {
        let low = if s < 8 { packed[s] & 0x0F } else { packed[s - 8] >> 4 };
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 0x03;
        (low | high << 4) as i8 - 32
    })
}

/// The bytes holding the 2-bit quants of 16-element sub-block `s` in Q2_K/Q3_K `qs`, and their shift.
fn two_bit_codes(qs: &[u8; QK_K / 4], s: usize) -> (&[u8], usize) {
    let (half, group, part) = (s / 8, (s % 8) / 2, s % 2);
    (&qs[32 * half + 16 * part..][..16], 2 * group)
}

impl BlockQ2K {
    pub fn from_bytes(b: &[u8; 84]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ2K { scales: f.bytes(), qs: f.bytes(), d: f.f16(), dmin: f.f16() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (s, y) in y.chunks_exact_mut(16).enumerate() {
            let scale = d * f32::from(self.scales[s] & 0x0F);
            let min = dmin * f32::from(self.scales[s] >> 4);
            let (qs, shift) = two_bit_codes(&self.qs, s);
            for (y, &q) in y.iter_mut().zip(qs) {
                *y = scale * f32::from((q >> shift) & 3) - min;
            }
        }
    }
}

impl BlockQ3K {
    pub fn from_bytes(b: &[u8; 110]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ3K { hmask: f.bytes(), qs: f.bytes(), scales: f.bytes(), d: f.f16() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let scales = unpack_q3k_scales(&self.scales);
        for (s, y) in y.chunks_exact_mut(16).enumerate() {
            let scale = d * f32::from(scales[s]);
            let (qs, shift) = two_bit_codes(&self.qs, s);
            // Sub-block s covers elements 16s..16s+16: hmask bytes (16s) % 32 onwards, bit 16s / 32.
            let hmask = &self.hmask[16 * (s % 2)..][..16];
            let hbit = s / 2;
            for ((y, &q), &h) in y.iter_mut().zip(qs).zip(hmask) {
                let low = ((q >> shift) & 3) as i8;
                let q = if (h >> hbit) & 1 == 1 { low } else { low - 4 };
                *y = scale * f32::from(q);
            }
        }
    }
}

/// Q4_K and Q5_K: value = d·scale·q − dmin·min over 8 sub-blocks of 32, with `code(s, l)` giving
/// the quant of element `l` of sub-block `s`.
fn dequantize_scale_min(d: f16, dmin: f16, packed: &[u8; 12], y: &mut [f32; QK_K], code: impl Fn(usize, usize) -> u8) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    let (scales, mins) = unpack_scale_min_k4(packed);
    for (s, y) in y.chunks_exact_mut(32).enumerate() {
        let scale = d * f32::from(scales[s]);
        let min = dmin * f32::from(mins[s]);
        for (l, y) in y.iter_mut().enumerate() {
            *y = scale * f32::from(code(s, l)) - min;
        }
    }
}

/// The 4-bit code of element `l` of 32-element sub-block `s` in Q4_K/Q5_K `qs`.
fn nibble_code(qs: &[u8; QK_K / 2], s: usize, l: usize) -> u8 {
    (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F
}

impl BlockQ4K {
    pub fn from_bytes(b: &[u8; 144]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ4K { d: f.f16(), dmin: f.f16(), scales: f.bytes(), qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        dequantize_scale_min(self.d, self.dmin, &self.scales, y, |s, l| nibble_code(&self.qs, s, l));
    }
}

impl BlockQ5K {
    pub fn from_bytes(b: &[u8; 176]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ5K { d: f.f16(), dmin: f.f16(), scales: f.bytes(), qh: f.bytes(), qs: f.bytes() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        dequantize_scale_min(self.d, self.dmin, &self.scales, y, |s, l| {
            nibble_code(&self.qs, s, l) | ((self.qh[l] >> s) & 1) << 4
        });
    }
}

impl BlockQ6K {
    pub fn from_bytes(b: &[u8; 210]) -> Self {
        let mut f = FieldReader::new(b);
        BlockQ6K { ql: f.bytes(), qh: f.bytes(), scales: f.i8s(), d: f.f16() }
    }

    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (s, y) in y.chunks_exact_mut(16).enumerate() {
            // ggml multiplies d by the scale first, then by the quant.
            let scale = d * f32::from(self.scales[s]);
            let (half, group, part) = (s / 8, (s % 8) / 2, s % 2);
            let ql = &self.ql[64 * half + 32 * (group % 2) + 16 * part..][..16];
            let qh = &self.qh[32 * half + 16 * part..][..16];
            let (low_shift, high_shift) = (4 * (group / 2), 2 * group);
            for ((y, &lo), &hi) in y.iter_mut().zip(ql).zip(qh) {
                let q = ((lo >> low_shift) & 0x0F) | ((hi >> high_shift) & 3) << 4;
                *y = scale * f32::from(q as i8 - 32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_unpacks_the_ggml_bit_positions() {
        // Scale 5 = 0b11_0110: low 4 bits in the low nibble of byte 9, top 2 bits in byte 1's bits 6-7.
        // Min 6 = 0b10_1001: low 4 bits in the high nibble of byte 10, top 2 bits in byte 6's bits 6-7.
        let mut packed = [0u8; 12];
        packed[0] = 0x3F; // scale 0 = 63
        packed[7] = 0x21; // min 3 = 33
        packed[9] = 0b0110;
        packed[1] = 0b11 << 6;
        packed[10] = 0b1001 << 4;
        packed[6] = 0b10 << 6;
        let (scales, mins) = unpack_scale_min_k4(&packed);
        assert_eq!(scales, [63, 0, 0, 0, 0, 0b11_0110, 0, 0]);
        assert_eq!(mins, [0, 0, 0, 33, 0, 0, 0b10_1001, 0]);
    }

    #[test]
    fn q3k_scales_unpack_the_ggml_bit_positions() {
        let mut packed = [0u8; 12];
        packed[2] = 0x5A; // scale 2 low = 0xA, scale 10 low = 0x5
        packed[10] = 0b01 | 0b10 << 4; // scale 2 high = 1 (bits 0-1), scale 10 high = 2 (bits 4-5)
        let scales = unpack_q3k_scales(&packed);
        assert_eq!(scales[2], 0x1A - 32);
        assert_eq!(scales[10], 0x25 - 32);
        assert_eq!(scales[0], -32);
    }
}
