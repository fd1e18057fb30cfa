//! Per-format unpacking of weight blocks into what the one dot-product core of [`super::kernel`]
//! consumes: for each 32-element piece its 32 codes as signed bytes in element order ([`Format::codes`],
//! offset already removed: `scalar::Piece::q`) and its scales ([`Format::scales`]: the rest of
//! `scalar::Piece`), the same integers and floats as `scalar::piece`.
//!
//! Every format's codes fit in i8 once the offset is off (Q8_0's −128 included), and `sdot`/`smull`
//! multiply signed by signed, so unlike AVX2's `maddubs` no format needs its offset taken off as
//! offset·Σa afterwards.

use std::arch::aarch64::*;
use std::arch::asm;

use super::super::scalar::{e8m0_half_to_f32, q3k_scales, scale_min_k4, MXFP4_VALUES};
use super::super::QuantType;

/// A piece's codes: elements 0..16 and 16..32.
pub type Codes = [int8x16_t; 2];

/// The scales of one piece: `scalar::Piece` without its codes.
#[derive(Clone, Copy, Default)]
pub struct PieceScales {
    pub d: f32,
    /// Added value per element, times the activation block's s ([`Format::MIN`] formats).
    pub m: f32,
    /// Integer scales of elements 0..16 and 16..32 ([`Format::SUB16`] formats).
    pub sc: [i32; 2],
    /// Integer minimums of elements 0..16 and 16..32, times dmin (Q2_K; 0..=15).
    pub mins: [i8; 2],
    pub dmin: f32,
}

/// A weight block format as the NEON kernels see it. The flags let the core skip the terms a format
/// lacks at compile time.
pub trait Format {
    const TYPE: QuantType;
    /// Separate integer scales for elements 0..16 and 16..32 of a piece.
    const SUB16: bool = false;
    /// A float offset per piece ([`PieceScales::m`]).
    const MIN: bool = false;
    /// Integer minimums per half-piece times dmin (Q2_K).
    const MINS16: bool = false;
    /// Writes the scales of the pieces of the block at p to s[..TYPE.pieces()].
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]);
    /// The codes of piece j of the block at p.
    unsafe fn codes(p: *const u8, j: usize) -> Codes;
}

/// f32 lanes [h0, h1, 0, 0] of the f16s h0 (low half of `bits`) and h1 (high half), by `fcvtl`
/// (Armv8 base floating point; Rust's f16 intrinsics are not stable yet).
#[inline(always)]
pub unsafe fn f16_pair(bits: u32) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl {out:v}.4s, {h:v}.4h",
        h = in(vreg) u64::from(bits),
        out = lateout(vreg) out,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// The f16 at p as f32.
#[inline(always)]
pub unsafe fn f16_at(p: *const u8) -> f32 {
    vgetq_lane_f32::<0>(f16_pair(u32::from(p.cast::<u16>().read_unaligned())))
}

/// The f16 pair at p (d and m of Q4_1/Q5_1, d and dmin of the k-quants).
#[inline(always)]
unsafe fn f16_two(p: *const u8) -> (f32, f32) {
    let v = f16_pair(p.cast::<u32>().read_unaligned());
    (vgetq_lane_f32::<0>(v), vgetq_lane_f32::<1>(v))
}

/// The 32 bytes at p.
#[inline(always)]
unsafe fn load32(p: *const u8) -> [uint8x16_t; 2] {
    [vld1q_u8(p), vld1q_u8(p.add(16))]
}

/// The 16 bytes at p as 32 nibbles in Q4_0's element order: low nibbles, then high nibbles.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let v = vld1q_u8(p);
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

/// (v >> shift) & mask per byte; `shift` is a constant once the piece loop is unrolled.
#[inline(always)]
unsafe fn bits(v: [uint8x16_t; 2], shift: usize, mask: u8) -> [uint8x16_t; 2] {
    let (count, mask) = (vdupq_n_s8(-(shift as i8)), vdupq_n_u8(mask));
    v.map(|x| vandq_u8(vshlq_u8(x, count), mask))
}

/// `value` in each byte of v that has any bit of `bit` set, else 0.
#[inline(always)]
unsafe fn flag(v: [uint8x16_t; 2], bit: u8, value: u8) -> [uint8x16_t; 2] {
    v.map(|x| vandq_u8(vtstq_u8(x, vdupq_n_u8(bit)), vdupq_n_u8(value)))
}

#[inline(always)]
unsafe fn or(a: [uint8x16_t; 2], b: [uint8x16_t; 2]) -> [uint8x16_t; 2] {
    [vorrq_u8(a[0], b[0]), vorrq_u8(a[1], b[1])]
}

/// Unsigned codes minus the format's offset, as signed bytes.
#[inline(always)]
unsafe fn minus(v: [uint8x16_t; 2], offset: i8) -> Codes {
    v.map(|x| vsubq_s8(vreinterpretq_s8_u8(x), vdupq_n_s8(offset)))
}

/// 0x10 in byte i of the result where bit i of the little-endian u32 at p is set (Q5_0/Q5_1's fifth
/// bits): byte i takes byte i / 8 of the u32 (`tbl`), then is tested against bit i % 8.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> [uint8x16_t; 2] {
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(p.cast::<u32>().read_unaligned()));
    let byte_of =
        |b: u64| vcombine_u8(vcreate_u8(b * 0x0101_0101_0101_0101), vcreate_u8((b + 1) * 0x0101_0101_0101_0101));
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let set = |b: u64| vandq_u8(vtstq_u8(vqtbl1q_u8(qh, byte_of(b)), bit), vdupq_n_u8(0x10));
    [set(0), set(2)]
}

/// Per byte: (x·mul mod 256)·3 >> 8, the TQ1_0 trit that `mul` = 3ⁿ brings to the top (the high bytes
/// of the u16 products, gathered by `uzp2`).
#[inline(always)]
unsafe fn trits(x: uint8x16_t, mul: uint8x16_t) -> uint8x16_t {
    let q = vmulq_u8(x, mul);
    let three = vdupq_n_u8(3);
    let (lo, hi) = (vmull_u8(vget_low_u8(q), vget_low_u8(three)), vmull_high_u8(q, three));
    vuzp2q_u8(vreinterpretq_u8_u16(lo), vreinterpretq_u8_u16(hi))
}

/// Scales of the legacy formats and MXFP4: d, and m where given.
#[inline(always)]
fn one_piece(s: &mut [PieceScales; 8], d: f32, m: f32) {
    (s[0].d, s[0].m) = (d, m);
}

/// Q4_K/Q5_K: d·scale and −dmin·min per piece, multiplied in that order as ggml does.
#[inline(always)]
unsafe fn k4_scales(p: *const u8, s: &mut [PieceScales; 8]) {
    let (d, dmin) = f16_two(p);
    let (sc, mins) = scale_min_k4(std::slice::from_raw_parts(p.add(4), 12));
    for j in 0..8 {
        s[j].d = d * f32::from(sc[j]);
        s[j].m = -(dmin * f32::from(mins[j]));
    }
}

/// Q2_K, Q3_K, Q6_K, TQ1_0, TQ2_0: one d for all pieces, and (SUB16) integer half-piece scales.
#[inline(always)]
fn super_scales(s: &mut [PieceScales; 8], d: f32, sc: impl Fn(usize) -> [i32; 2]) {
    for (j, s) in s.iter_mut().enumerate() {
        (s.d, s.sc) = (d, sc(j));
    }
}

pub struct Q4_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;
pub struct Q8_0;
pub struct Q2K;
pub struct Q3K;
pub struct Q4K;
pub struct Q5K;
pub struct Q6K;
pub struct TQ1_0;
pub struct TQ2_0;
pub struct MXFP4;

impl Format for Q4_0 {
    const TYPE: QuantType = QuantType::Q4_0;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        one_piece(s, f16_at(p), 0.0)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, _: usize) -> Codes {
        minus(nibbles(p.add(2)), 8)
    }
}

impl Format for Q4_1 {
    const TYPE: QuantType = QuantType::Q4_1;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        let (d, m) = f16_two(p);
        one_piece(s, d, m)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, _: usize) -> Codes {
        minus(nibbles(p.add(4)), 0)
    }
}

impl Format for Q5_0 {
    const TYPE: QuantType = QuantType::Q5_0;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        one_piece(s, f16_at(p), 0.0)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, _: usize) -> Codes {
        minus(or(nibbles(p.add(6)), fifth_bits(p.add(2))), 16)
    }
}

impl Format for Q5_1 {
    const TYPE: QuantType = QuantType::Q5_1;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        let (d, m) = f16_two(p);
        one_piece(s, d, m)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, _: usize) -> Codes {
        minus(or(nibbles(p.add(8)), fifth_bits(p.add(4))), 0)
    }
}

impl Format for Q8_0 {
    const TYPE: QuantType = QuantType::Q8_0;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        one_piece(s, f16_at(p), 0.0)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, _: usize) -> Codes {
        minus(load32(p.add(2)), 0)
    }
}

impl Format for MXFP4 {
    const TYPE: QuantType = QuantType::MXFP4;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        one_piece(s, e8m0_half_to_f32(*p), 0.0)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, _: usize) -> Codes {
        let table = vld1q_s8(MXFP4_VALUES.as_ptr());
        nibbles(p.add(1)).map(|i| vqtbl1q_s8(table, i))
    }
}

impl Format for Q2K {
    const TYPE: QuantType = QuantType::Q2K;
    const SUB16: bool = true;
    const MINS16: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        let (d, dmin) = f16_two(p.add(80));
        for (j, s) in s.iter_mut().enumerate() {
            let (a, b) = (*p.add(2 * j), *p.add(2 * j + 1));
            *s = PieceScales {
                d,
                m: 0.0,
                sc: [i32::from(a & 0x0F), i32::from(b & 0x0F)],
                mins: [(a >> 4) as i8, (b >> 4) as i8],
                dmin,
            };
        }
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        minus(bits(load32(p.add(16 + 32 * (j / 4))), 2 * (j % 4), 3), 0)
    }
}

impl Format for Q3K {
    const TYPE: QuantType = QuantType::Q3K;
    const SUB16: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        let sc = q3k_scales(std::slice::from_raw_parts(p.add(96), 12));
        super_scales(s, f16_at(p.add(108)), |j| [sc[2 * j].into(), sc[2 * j + 1].into()])
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        let low = bits(load32(p.add(32 + 32 * (j / 4))), 2 * (j % 4), 3);
        minus(or(low, flag(load32(p), 1 << j, 4)), 4)
    }
}

impl Format for Q4K {
    const TYPE: QuantType = QuantType::Q4K;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        k4_scales(p, s)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        minus(bits(load32(p.add(16 + 32 * (j / 2))), 4 * (j % 2), 0x0F), 0)
    }
}

impl Format for Q5K {
    const TYPE: QuantType = QuantType::Q5K;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        k4_scales(p, s)
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        let low = bits(load32(p.add(48 + 32 * (j / 2))), 4 * (j % 2), 0x0F);
        minus(or(low, flag(load32(p.add(16)), 1 << j, 0x10)), 0)
    }
}

impl Format for Q6K {
    const TYPE: QuantType = QuantType::Q6K;
    const SUB16: bool = true;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        let sc = |i: usize| i32::from(*p.add(192 + i) as i8);
        super_scales(s, f16_at(p.add(208)), |j| [sc(2 * j), sc(2 * j + 1)])
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        let low = bits(load32(p.add(64 * (j / 4) + 32 * (j % 2))), 4 * ((j % 4) / 2), 0x0F);
        let high = bits(load32(p.add(128 + 32 * (j / 4))), 2 * (j % 4), 3).map(|h| vshlq_n_u8::<4>(h));
        minus(or(low, high), 32)
    }
}

impl Format for TQ2_0 {
    const TYPE: QuantType = QuantType::TQ2_0;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        super_scales(s, f16_at(p.add(64)), |_| [1, 1])
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        minus(bits(load32(p.add(32 * (j / 4))), 2 * (j % 4), 3), 1)
    }
}

impl Format for TQ1_0 {
    const TYPE: QuantType = QuantType::TQ1_0;
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: &mut [PieceScales; 8]) {
        super_scales(s, f16_at(p.add(52)), |_| [1, 1])
    }
    #[inline(always)]
    unsafe fn codes(p: *const u8, j: usize) -> Codes {
        // Pieces 0..5: trit j of qs[0..32]. Piece 5: trits 0, 1 of qs[32..48]; piece 6: trits 2, 3;
        // piece 7: trit 4 of qs[32..48], then element 240 + l is trit l / 4 of qh[l % 4] (the u32 qh
        // repeated, times 3^(l / 4) per byte: the 0 below is never used).
        const MUL: [[u8; 2]; 8] = [[1, 1], [3, 3], [9, 9], [27, 27], [81, 81], [1, 3], [9, 27], [81, 0]];
        let mul = MUL[j].map(|m| vdupq_n_u8(m));
        let (x, mul) = if j < 5 {
            (load32(p), mul)
        } else {
            let tail = vld1q_u8(p.add(32));
            if j < 7 {
                ([tail; 2], mul)
            } else {
                let qh = vreinterpretq_u8_u32(vdupq_n_u32(p.add(48).cast::<u32>().read_unaligned()));
                let pow3 = [0x0101_0101u32, 0x0303_0303, 0x0909_0909, 0x1B1B_1B1B];
                ([tail, qh], [mul[0], vreinterpretq_u8_u32(vld1q_u32(pow3.as_ptr()))])
            }
        };
        minus([trits(x[0], mul[0]), trits(x[1], mul[1])], 1)
    }
}
