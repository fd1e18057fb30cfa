//! Per-format decoding of weight blocks into what both AVX2 kernels consume: for each 32-element
//! piece, its 32 codes as bytes in element order ([`codes`]) and its scales ([`scales`]), the same
//! integers and floats as `scalar::piece`.
//!
//! Codes are unsigned (0..=max_code) with the format's [`offset`] still in them, which the kernels take
//! off as offset·Σa (so `_mm256_maddubs_epi16` gets an unsigned weight operand); only Q8_0 is signed
//! (the kernels move its signs onto the activations).

use std::arch::x86_64::*;

use super::super::scalar::{e8m0_half_to_f32, MXFP4_VALUES};
use super::super::QuantType;

pub const Q4_0: u8 = QuantType::Q4_0 as u8;
pub const Q4_1: u8 = QuantType::Q4_1 as u8;
pub const Q5_0: u8 = QuantType::Q5_0 as u8;
pub const Q5_1: u8 = QuantType::Q5_1 as u8;
pub const Q8_0: u8 = QuantType::Q8_0 as u8;
pub const Q2K: u8 = QuantType::Q2K as u8;
pub const Q3K: u8 = QuantType::Q3K as u8;
pub const Q4K: u8 = QuantType::Q4K as u8;
pub const Q5K: u8 = QuantType::Q5K as u8;
pub const Q6K: u8 = QuantType::Q6K as u8;
pub const TQ1_0: u8 = QuantType::TQ1_0 as u8;
pub const TQ2_0: u8 = QuantType::TQ2_0 as u8;
pub const MXFP4: u8 = QuantType::MXFP4 as u8;

pub const fn block_bytes(f: u8) -> usize {
    QuantType::from_tag(f).block_bytes()
}

pub const fn pieces(f: u8) -> usize {
    QuantType::from_tag(f).pieces()
}

/// What [`codes`] holds above the code value (`scalar::Piece::q` = code − offset).
pub const fn offset(f: u8) -> i32 {
    match f {
        Q4_0 => 8,
        Q5_0 => 16,
        Q3K => 4,
        Q6K => 32,
        TQ1_0 | TQ2_0 => 1,
        MXFP4 => 12,
        _ => 0,
    }
}

/// Largest unsigned code (for Q8_0, the largest magnitude): bounds the i16 sums of `maddubs` products.
pub const fn max_code(f: u8) -> i32 {
    match f {
        Q4_0 | Q4_1 | Q4K => 15,
        Q5_0 | Q5_1 | Q5K => 31,
        Q2K | TQ1_0 | TQ2_0 => 3,
        Q3K => 7,
        Q6K => 63,
        MXFP4 => 24,
        _ => 128,
    }
}

/// Q8_0: signed codes.
pub const fn signed(f: u8) -> bool {
    f == Q8_0
}

/// Separate integer scales for elements 0..16 and 16..32 of a piece.
pub const fn sub16(f: u8) -> bool {
    matches!(f, Q2K | Q3K | Q6K)
}

/// A float minimum per piece, times the activation block's s.
pub const fn has_min(f: u8) -> bool {
    matches!(f, Q4_1 | Q5_1 | Q4K | Q5K)
}

/// Q2_K's integer minimums per 16 elements, times dmin.
pub const fn has_mins16(f: u8) -> bool {
    f == Q2K
}

/// Scales of the pieces of one block (index j = piece; one-piece formats use index 0).
#[derive(Clone, Copy)]
pub struct Scales {
    pub d: [f32; 8],
    pub m: [f32; 8],
    /// sc[0] | sc[1] << 16 (`scalar::Piece::sc`); only for [`sub16`] formats.
    pub sc: [u32; 8],
    /// mins[0] | mins[1] << 16; only Q2_K.
    pub mins: [u32; 8],
    pub dmin: f32,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(p.cast::<u16>().read_unaligned()))))
}

/// Two i16 packed in a u32, as the kernels broadcast them.
fn pair(lo: i16, hi: i16) -> u32 {
    u32::from(lo as u16) | u32::from(hi as u16) << 16
}

/// The scales of the block at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scales<const F: u8>(p: *const u8) -> Scales {
    let mut s = Scales { d: [0.0; 8], m: [0.0; 8], sc: [0; 8], mins: [0; 8], dmin: 0.0 };
    match F {
        Q4_0 | Q5_0 | Q8_0 => s.d[0] = f16(p),
        Q4_1 | Q5_1 => (s.d[0], s.m[0]) = (f16(p), f16(p.add(2))),
        MXFP4 => s.d[0] = e8m0_half_to_f32(*p),
        TQ2_0 => s.d = [f16(p.add(64)); 8],
        TQ1_0 => s.d = [f16(p.add(52)); 8],
        Q4K | Q5K => {
            let packed = std::slice::from_raw_parts(p.add(4), 12);
            let (sc, mins) = super::super::scalar::scale_min_k4(packed);
            let (d, dmin) = (f16(p), f16(p.add(2)));
            for j in 0..8 {
                s.d[j] = d * f32::from(sc[j]);
                s.m[j] = -(dmin * f32::from(mins[j]));
            }
        }
        Q6K => {
            s.d = [f16(p.add(208)); 8];
            for j in 0..8 {
                s.sc[j] = pair((*p.add(192 + 2 * j) as i8).into(), (*p.add(193 + 2 * j) as i8).into());
            }
        }
        Q3K => {
            s.d = [f16(p.add(108)); 8];
            let sc = super::super::scalar::q3k_scales(std::slice::from_raw_parts(p.add(96), 12));
            for j in 0..8 {
                s.sc[j] = pair(sc[2 * j].into(), sc[2 * j + 1].into());
            }
        }
        Q2K => {
            (s.d, s.dmin) = ([f16(p.add(80)); 8], f16(p.add(82)));
            for j in 0..8 {
                let (a, b) = (*p.add(2 * j), *p.add(2 * j + 1));
                s.sc[j] = pair((a & 0x0F).into(), (b & 0x0F).into());
                s.mins[j] = pair((a >> 4).into(), (b >> 4).into());
            }
        }
        _ => unreachable!(),
    }
    s
}

/// The 16 bytes at p as 32 nibbles in Q4_0's element order: low nibbles (elements 0..16) in the low
/// half, high nibbles in the high half. The 16 bytes are broadcast to both halves and the upper one
/// shifted right by 4 (bits crossing into a byte's high nibble from its neighbour are masked off).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
    _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F))
}

/// 0x10 in byte i where bit i of the little-endian u32 at p is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let x = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
    // Byte i takes byte i / 8 of x; then every bit but bit i % 8 is set, so the byte is all ones exactly
    // when bit i % 8 was.
    let spread = _mm256_shuffle_epi8(
        x,
        _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
    );
    let probe = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFEu64 as i64));
    _mm256_and_si256(_mm256_cmpeq_epi8(probe, _mm256_set1_epi8(-1)), _mm256_set1_epi8(0x10))
}

/// (x >> n) & mask per byte, for n < 8 (16-bit shifts; the mask removes bits from the neighbour).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits(x: __m256i, n: usize, mask: i8) -> __m256i {
    _mm256_and_si256(_mm256_srl_epi16(x, _mm_cvtsi64_si128(n as i64)), _mm256_set1_epi8(mask))
}

/// Per byte: (x·mul mod 256)·3 >> 8, the TQ1_0 trit that `mul` = 3ⁿ brings to the top.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn trits(x: __m256i, mul: __m256i) -> __m256i {
    let low = _mm256_set1_epi16(0x00FF);
    // Products of the even bytes land in the low byte of each 16-bit lane, of the odd bytes (shifted
    // down first) likewise, then both are read as (q·3) >> 8 within their lane.
    let even = _mm256_and_si256(_mm256_mullo_epi16(x, mul), low);
    let odd = _mm256_and_si256(_mm256_mullo_epi16(_mm256_srli_epi16(x, 8), _mm256_srli_epi16(mul, 8)), low);
    let three = _mm256_set1_epi16(3);
    let te = _mm256_srli_epi16(_mm256_mullo_epi16(even, three), 8);
    let to = _mm256_srli_epi16(_mm256_mullo_epi16(odd, three), 8);
    _mm256_or_si256(te, _mm256_slli_epi16(to, 8))
}

/// The codes of piece j of the block at p, in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn codes<const F: u8>(p: *const u8, j: usize) -> __m256i {
    let load = |off: usize| _mm256_loadu_si256(p.add(off).cast());
    match F {
        Q4_0 => nibbles(p.add(2)),
        Q4_1 => nibbles(p.add(4)),
        Q5_0 => _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2))),
        Q5_1 => _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4))),
        Q8_0 => load(2),
        MXFP4 => {
            let table: [i8; 16] = std::array::from_fn(|i| MXFP4_VALUES[i] + 12);
            let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast()));
            _mm256_shuffle_epi8(t, nibbles(p.add(1)))
        }
        Q4K => bits(load(16 + 32 * (j / 2)), 4 * (j % 2), 0x0F),
        Q5K => {
            let high = _mm256_and_si256(load(16), _mm256_set1_epi8(1 << j));
            let high = _mm256_and_si256(_mm256_cmpeq_epi8(high, _mm256_set1_epi8(1 << j)), _mm256_set1_epi8(0x10));
            _mm256_or_si256(bits(load(48 + 32 * (j / 2)), 4 * (j % 2), 0x0F), high)
        }
        Q6K => {
            let low = bits(load(64 * (j / 4) + 32 * (j % 2)), 4 * ((j % 4) / 2), 0x0F);
            let high = bits(load(128 + 32 * (j / 4)), 2 * (j % 4), 3);
            _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
        }
        Q3K => {
            let low = bits(load(32 + 32 * (j / 4)), 2 * (j % 4), 3);
            let high = _mm256_and_si256(load(0), _mm256_set1_epi8(1 << j));
            let high = _mm256_and_si256(_mm256_cmpeq_epi8(high, _mm256_set1_epi8(1 << j)), _mm256_set1_epi8(4));
            _mm256_or_si256(low, high)
        }
        Q2K => bits(load(16 + 32 * (j / 4)), 2 * (j % 4), 3),
        TQ2_0 => bits(load(32 * (j / 4)), 2 * (j % 4), 3),
        TQ1_0 => {
            // Pieces 0..5: trit j of qs[0..32]. Piece 5: trits 0, 1 of qs[32..48]; piece 6: trits 2, 3;
            // piece 7: trit 4 of qs[32..48], then qh[0..4] with trits 0..4 in groups of 4 bytes.
            if j < 5 {
                return trits(load(0), _mm256_set1_epi8([1u8, 3, 9, 27, 81][j] as i8));
            }
            let tail = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(32).cast()));
            let (x, mul) = match j {
                5 => (tail, _mm256_setr_m128i(_mm_set1_epi8(1), _mm_set1_epi8(3))),
                6 => (tail, _mm256_setr_m128i(_mm_set1_epi8(9), _mm_set1_epi8(27))),
                _ => {
                    let qh = _mm_set1_epi32(p.add(48).cast::<i32>().read_unaligned());
                    let x = _mm256_setr_m128i(_mm_loadu_si128(p.add(32).cast()), qh);
                    let mul = _mm_setr_epi8(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27);
                    (x, _mm256_setr_m128i(_mm_set1_epi8(81), mul))
                }
            };
            trits(x, mul)
        }
        _ => unreachable!(),
    }
}
