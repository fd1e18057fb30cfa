//! Reference quantized kernels: the specification every SIMD path is tested against, and the path on
//! CPUs without one.
//!
//! Every weight format is read as a sequence of 32-element [`Piece`]s (one per block of the legacy
//! formats, eight per super-block), each an integer code per element and a few scales. A piece times an
//! activation block is exact integer sums and then a fixed float expression ([`piece_term`]); a SIMD path
//! computes the same integers and the same scale products, and differs only in how it adds the float
//! terms.

use super::{matmul_dims, BlockQ8, QuantType, QK, QK_K};

/// IEEE half-precision bits to f32 (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from(h >> 10) & 0x1F;
    let man = u32::from(h & 0x3FF);
    match exp {
        // Zero and subnormals: man·2⁻²⁴, exact in f32.
        0 => f32::from_bits(sign | (man as f32 * (1.0 / (1u32 << 24) as f32)).to_bits()),
        // Infinity and NaN (payload kept).
        0x1F => f32::from_bits(sign | 0x7F80_0000 | man << 13),
        // Normal: rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | (exp + 112) << 23 | man << 13),
    }
}

/// 2^(e − 128), MXFP4's block scale (ggml's `GGML_E8M0_TO_FP32_HALF`): exact, subnormal for e < 2.
pub fn e8m0_half_to_f32(e: u8) -> f32 {
    f32::from_bits(if e < 2 { 0x0020_0000 << e } else { u32::from(e - 1) << 23 })
}

/// Quantizes one block: d = max|x| / 127, qs[i] = round-half-to-even(x[i]·(1/d)), s = d·Σ qs.
///
/// With d normal, |x[i]·(1/d)| ≤ 127·(1 + 2⁻²³)² < 127.5, so the codes lie in [−127, 127]. A block whose
/// d would be below `f32::MIN_POSITIVE` (zeros, or values under ~1.5e-36) becomes all zeros with d = 0:
/// 1/d could overflow there, and such values are below f32's resolution of anything they are added
/// to. A block holding an infinity or NaN gets d = s = NaN and zero codes, so whatever it reaches turns
/// NaN as it would in f32 arithmetic.
pub fn quantize_block(x: &[f32; QK]) -> BlockQ8 {
    if !x.iter().all(|v| v.is_finite()) {
        return BlockQ8 { d: f32::NAN, s: f32::NAN, qs: [0; QK] };
    }
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    if d < f32::MIN_POSITIVE {
        return BlockQ8::default();
    }
    let id = 1.0 / d;
    let qs = x.map(|v| (v * id).round_ties_even() as i8);
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    BlockQ8 { d, s: d * sum as f32, qs }
}

/// One block with a fixed scale `d` (static activation quantization: `d` calibrated beforehand, 127·d
/// the largest magnitude kept): codes round(x/d) clamped to [−127, 127]. Non-finite inputs give NaN as in
/// [`quantize_block`]; `d` must be positive and finite.
pub fn quantize_block_static(x: &[f32; QK], d: f32) -> BlockQ8 {
    if !x.iter().all(|v| v.is_finite()) {
        return BlockQ8 { d: f32::NAN, s: f32::NAN, qs: [0; QK] };
    }
    let id = 1.0 / d;
    let qs = x.map(|v| (v * id).round_ties_even().clamp(-127.0, 127.0) as i8);
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    BlockQ8 { d, s: d * sum as f32, qs }
}

/// One super-block of 256 activations rounded as llama.cpp rounds them for its k-quant and ternary weights
/// (ggml's `quantize_row_q8_K_ref`): one scale for all 256, from the element of largest magnitude m:
/// iscale = −127/m, codes min(127, round-half-even(iscale·x)), d = 1/iscale (negative when m is), written
/// as eight blocks sharing d so every kernel multiplies them unchanged. Zeros, values too small to scale
/// and non-finite values give what [`quantize_block`] gives for them.
pub fn quantize_superblock(x: &[f32; QK_K], out: &mut [BlockQ8; QK_K / QK]) {
    if !x.iter().all(|v| v.is_finite()) {
        out.fill(BlockQ8 { d: f32::NAN, s: f32::NAN, qs: [0; QK] });
        return;
    }
    let m = x.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if m.abs() / 127.0 < f32::MIN_POSITIVE {
        out.fill(BlockQ8::default());
        return;
    }
    let iscale = -127.0 / m;
    let d = 1.0 / iscale;
    for (xb, b) in x.chunks_exact(QK).zip(out) {
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        *b = BlockQ8 { d, s: d * sum as f32, qs };
    }
}

/// Quantizes x (a multiple of 32 long) into x.len()/32 blocks.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row: {} values for {} blocks", x.len(), out.len());
    for (xb, b) in x.chunks_exact(QK).zip(out) {
        *b = quantize_block(xb.try_into().expect("chunks_exact yields whole blocks"));
    }
}

/// 32 elements of one weight row as integers and scales. Against an activation block a (codes a.qs,
/// scale a.d, a.s = a.d·Σ a.qs) it contributes [`piece_term`]:
///
/// - isum = sc[0]·Σ_{i<16} q[i]·a.qs[i] + sc[1]·Σ_{i≥16} q[i]·a.qs[i]  (exact i32)
/// - msum = mins[0]·Σ_{i<16} a.qs[i] + mins[1]·Σ_{i≥16} a.qs[i]  (exact i32)
/// - term = fl(fl(d·a.d)·isum) + fl(m·a.s) − fl(fl(dmin·a.d)·msum)
///
/// so that the element values are d·sc·q + m − dmin·mins (m and dmin·mins are the formats' offsets).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Piece {
    /// The code of each element, offset removed (Q4_0: nibble − 8).
    pub q: [i8; QK],
    /// Integer scales of elements 0..16 and 16..32; [1, 1] where the format scales by 32.
    pub sc: [i16; 2],
    /// Q2_K's integer minimums of the two halves; 0 elsewhere.
    pub mins: [i16; 2],
    pub d: f32,
    /// Added value per element (Q4_1/Q5_1's m, −dmin·min for Q4_K/Q5_K); 0 elsewhere.
    pub m: f32,
    /// Q2_K's dmin; 0 elsewhere.
    pub dmin: f32,
}

/// The f16 at bytes i, i + 1 of a block.
fn f16_at(block: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[i], block[i + 1]]))
}

/// A piece with one scale and no offset terms.
fn plain(d: f32, q: [i8; QK]) -> Piece {
    Piece { q, sc: [1, 1], d, ..Piece::default() }
}

/// Element j of a Q4_0-ordered 16-byte nibble array: the low nibble of byte j for j < 16, else the
/// high nibble of byte j − 16.
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0x0F
    } else {
        qs[j - 16] >> 4
    }
}

/// MXFP4's code values (FP4 E2M1 times two).
pub const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Q4_K/Q5_K's 8 six-bit scales and 8 six-bit mins (ggml's `get_scale_min_k4`): bytes 0–3 hold scales
/// 0–3 in their low 6 bits and bytes 4–7 mins 0–3; scales and mins 4–7 have their low 4 bits in the
/// nibbles of bytes 8–11 and their top 2 bits in the top bits of bytes 0–3 and 4–7.
pub fn scale_min_k4(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
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

/// Q3_K's 16 scales, unbiased: scale s has its low 4 bits in the low (s < 8) or high (s ≥ 8) nibble
/// of byte s % 8, and its top 2 bits at bits 2·(s / 4) of byte 8 + s % 4.
pub fn q3k_scales(packed: &[u8]) -> [i8; 16] {
    std::array::from_fn(|s| {
        let low = if s < 8 { packed[s] & 0x0F } else { packed[s - 8] >> 4 };
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 0x03;
        (low | high << 4) as i8 - 32
    })
}

/// Trit n (0..5) of a TQ1_0 byte: the byte holds ⌈(t₀·3⁴ + t₁·3³ + … + t₄)·256 / 3⁵⌉, so multiplying by
/// 3ⁿ modulo 256 brings trit n to the top and ·3 >> 8 reads it.
fn trit(byte: u8, n: usize) -> i8 {
    let q = byte.wrapping_mul([1u8, 3, 9, 27, 81][n]);
    ((u16::from(q) * 3) >> 8) as i8
}

/// Piece j (elements 32j..32j + 32) of a block of `ty` (j < ty.pieces()).
pub fn piece(ty: QuantType, block: &[u8], j: usize) -> Piece {
    let b = block;
    match ty {
        QuantType::Q4_0 => plain(f16_at(b, 0), std::array::from_fn(|i| nibble(&b[2..18], i) as i8 - 8)),
        QuantType::Q4_1 => {
            Piece { m: f16_at(b, 2), ..plain(f16_at(b, 0), std::array::from_fn(|i| nibble(&b[4..], i) as i8)) }
        }
        QuantType::Q5_0 | QuantType::Q5_1 => {
            let (base, offset) = if ty == QuantType::Q5_0 { (2, 16) } else { (4, 0) };
            let qh = u32::from_le_bytes([b[base], b[base + 1], b[base + 2], b[base + 3]]);
            let q = std::array::from_fn(|i| (nibble(&b[base + 4..], i) | (((qh >> i) & 1) as u8) << 4) as i8 - offset);
            let m = if ty == QuantType::Q5_1 { f16_at(b, 2) } else { 0.0 };
            Piece { m, ..plain(f16_at(b, 0), q) }
        }
        QuantType::Q8_0 => plain(f16_at(b, 0), std::array::from_fn(|i| b[2 + i] as i8)),
        QuantType::MXFP4 => {
            plain(e8m0_half_to_f32(b[0]), std::array::from_fn(|i| MXFP4_VALUES[nibble(&b[1..], i) as usize]))
        }
        QuantType::Q2K => {
            // Element 32j + l: bits 2·(j % 4) of qs[32·(j / 4) + l]; sub-blocks 2j and 2j + 1.
            let q = std::array::from_fn(|l| ((b[16 + 32 * (j / 4) + l] >> (2 * (j % 4))) & 3) as i8);
            let (s0, s1) = (b[2 * j], b[2 * j + 1]);
            Piece {
                q,
                sc: [i16::from(s0 & 0x0F), i16::from(s1 & 0x0F)],
                mins: [i16::from(s0 >> 4), i16::from(s1 >> 4)],
                d: f16_at(b, 80),
                m: 0.0,
                dmin: f16_at(b, 82),
            }
        }
        QuantType::Q3K => {
            // Low bits as Q2_K's; the high bit of element 32j + l is bit j of hmask[l], and a clear bit
            // lowers the value by 4.
            let q = std::array::from_fn(|l| {
                let low = (b[32 + 32 * (j / 4) + l] >> (2 * (j % 4))) & 3;
                (low | ((b[l] >> j) & 1) << 2) as i8 - 4
            });
            let sc = q3k_scales(&b[96..108]);
            Piece { sc: [sc[2 * j].into(), sc[2 * j + 1].into()], ..plain(f16_at(b, 108), q) }
        }
        QuantType::Q4K | QuantType::Q5K => {
            let qs = if ty == QuantType::Q4K { &b[16..144] } else { &b[48..176] };
            let q = std::array::from_fn(|l| {
                let low = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
                let high = if ty == QuantType::Q5K { ((b[16 + l] >> j) & 1) << 4 } else { 0 };
                (low | high) as i8
            });
            let (scales, mins) = scale_min_k4(&b[4..16]);
            // ggml computes d·scale and dmin·min first, then scale·q − min.
            let d = f16_at(b, 0) * f32::from(scales[j]);
            Piece { m: -(f16_at(b, 2) * f32::from(mins[j])), ..plain(d, q) }
        }
        QuantType::Q6K => {
            // Group j of 32: low 4 bits in ql[64·(j / 4) + 32·(j % 2) + l] (low nibble for j % 4 < 2),
            // high 2 bits at bits 2·(j % 4) of qh[32·(j / 4) + l].
            let q = std::array::from_fn(|l| {
                let lo = (b[64 * (j / 4) + 32 * (j % 2) + l] >> (4 * ((j % 4) / 2))) & 0x0F;
                let hi = (b[128 + 32 * (j / 4) + l] >> (2 * (j % 4))) & 3;
                (lo | hi << 4) as i8 - 32
            });
            let sc = [i16::from(b[192 + 2 * j] as i8), i16::from(b[193 + 2 * j] as i8)];
            Piece { sc, ..plain(f16_at(b, 208), q) }
        }
        QuantType::TQ2_0 => {
            plain(f16_at(b, 64), std::array::from_fn(|l| ((b[32 * (j / 4) + l] >> (2 * (j % 4))) & 3) as i8 - 1))
        }
        QuantType::TQ1_0 => {
            // Elements 0..160: trit e / 32 of qs[e % 32]; 160..240: trit (e − 160) / 16 of qs[32 + e % 16];
            // 240..256: trit (e − 240) / 4 of qh[e % 4].
            let q = std::array::from_fn(|l| {
                let e = 32 * j + l;
                let t = match e {
                    0..160 => trit(b[e % 32], e / 32),
                    160..240 => trit(b[32 + (e - 160) % 16], (e - 160) / 16),
                    _ => trit(b[48 + (e - 240) % 4], (e - 240) / 4),
                };
                t - 1
            });
            plain(f16_at(b, 52), q)
        }
    }
}

/// A piece's term of an output against one activation block (see [`Piece`]).
pub fn piece_term(p: &Piece, a: &BlockQ8) -> f32 {
    let half = |h: usize, f: &dyn Fn(usize) -> i32| (16 * h..16 * h + 16).map(f).sum::<i32>();
    let isum: i32 = (0..2).map(|h| i32::from(p.sc[h]) * half(h, &|i| i32::from(p.q[i]) * i32::from(a.qs[i]))).sum();
    let msum: i32 = (0..2).map(|h| i32::from(p.mins[h]) * half(h, &|i| i32::from(a.qs[i]))).sum();
    (p.d * a.d) * isum as f32 + p.m * a.s - (p.dmin * a.d) * msum as f32
}

/// out[t·m + o] = Σ over the pieces p of weight row o of piece_term(p, activation block p of row t),
/// the terms added left to right in f32.
///
/// The SIMD paths compute the same integers and scale products; they add the terms lane-wise with FMAs
/// and then across lanes, so their sums differ from this one by float rounding only (see the tests).
pub fn matmul(ty: QuantType, w: &[u8], acts: &[BlockQ8], out: &mut [f32], k: usize) {
    let (n, m) = matmul_dims(ty, w, acts, out, k);
    let (nb, row_bytes) = (k / QK, ty.row_bytes(k));
    for t in 0..n {
        let a = &acts[t * nb..][..nb];
        for o in 0..m {
            let row = &w[o * row_bytes..][..row_bytes];
            let mut sum = 0.0;
            for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
                for j in 0..ty.pieces() {
                    sum += piece_term(&piece(ty, block, j), &a[b * ty.pieces() + j]);
                }
            }
            out[t * m + o] = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_special_values() {
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03FF), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7C00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xFC00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7E00).is_nan());
    }

    #[test]
    fn e8m0_is_a_power_of_two() {
        for e in 0..=255u8 {
            assert_eq!(e8m0_half_to_f32(e) as f64, 2f64.powi(i32::from(e) - 128), "{e}");
        }
    }

    #[test]
    fn tq1_trits_round_trip() {
        // The packing of ggml's quantize_row_tq1_0: Σ tᵢ·3^(4−i), times 256/243 rounded up.
        for v in 0..243u16 {
            let byte = (v * 256).div_ceil(243) as u8;
            let digits: Vec<i8> = (0..5).map(|n| trit(byte, n)).collect();
            let want: Vec<i8> = (0..5).map(|i| ((v / 3u16.pow(4 - i)) % 3) as i8).collect();
            assert_eq!(digits, want, "{v}");
        }
    }

    #[test]
    fn quantize_block_edge_cases() {
        let mut x = [0.0f32; QK];
        assert_eq!(quantize_block(&x), BlockQ8::default());
        // max |x| = 127 makes d = 1 exactly, so the codes show the rounding rule.
        (x[3], x[7], x[8], x[9], x[10], x[11]) = (-127.0, 64.0, 0.5, 1.5, 2.5, -0.5);
        let b = quantize_block(&x);
        assert_eq!(b.d, 1.0);
        assert_eq!(b.qs[3..12], [-127, 0, 0, 0, 64, 0, 2, 2, 0]);
        assert_eq!(b.s, (-127 + 64 + 2 + 2) as f32);
        // Scaling x by a power of two scales d and s alike and keeps the codes.
        assert_eq!(quantize_block(&x.map(|v| v * 0.25)), BlockQ8 { d: 0.25, s: b.s * 0.25, qs: b.qs });
        x[5] = f32::INFINITY;
        let b = quantize_block(&x);
        assert!(b.d.is_nan() && b.s.is_nan() && b.qs == [0; QK]);
        x[5] = f32::NAN;
        assert!(quantize_block(&x).d.is_nan());
        let tiny = [1e-37f32; QK];
        assert_eq!(quantize_block(&tiny), BlockQ8::default());
    }

    #[test]
    fn superblocks_share_llama_cpps_scale() {
        let mut x = [0.0f32; QK_K];
        let mut out = [BlockQ8::default(); QK_K / QK];
        quantize_superblock(&x, &mut out);
        assert!(out.iter().all(|b| *b == BlockQ8::default()));
        // The largest magnitude is positive here, so d = 127/−127 = −1 and every code flips sign.
        (x[3], x[40], x[41], x[42], x[255]) = (127.0, -64.0, 2.5, -0.5, 1.5);
        quantize_superblock(&x, &mut out);
        assert!(out.iter().all(|b| b.d == -1.0));
        assert_eq!((out[0].qs[3], out[1].qs[8..11].to_vec(), out[7].qs[31]), (-127, vec![64, -2, 0], -2));
        assert_eq!((out[0].s, out[1].s, out[7].s), (127.0, -62.0, 2.0));
        // A negative extreme keeps the signs; the other blocks' codes use the shared scale, not their own.
        x[3] = -254.0;
        quantize_superblock(&x, &mut out);
        assert_eq!((out[0].d, out[0].qs[3], out[1].qs[8]), (2.0, -127, -32));
        assert_ne!(out[1], quantize_block(x[32..64].try_into().unwrap()));
        x[100] = f32::NAN;
        quantize_superblock(&x, &mut out);
        assert!(out.iter().all(|b| b.d.is_nan() && b.qs == [0; QK]));
    }

    #[test]
    fn static_blocks_clamp_to_the_calibrated_range() {
        let mut x = [0.0f32; QK];
        (x[0], x[1], x[2], x[3]) = (1.0, -300.0, 2.5, 126.6);
        let b = quantize_block_static(&x, 1.0);
        assert_eq!((b.d, b.qs[..4].to_vec()), (1.0, vec![1, -127, 2, 127]));
        assert_eq!(b.s, (1 - 127 + 2 + 127) as f32);
        // Within range, a static scale equal to the dynamic one gives the dynamic block.
        x[1] = -127.0;
        assert_eq!(quantize_block_static(&x, 1.0), quantize_block(&x));
        x[2] = f32::NAN;
        assert!(quantize_block_static(&x, 1.0).d.is_nan());
    }
}
