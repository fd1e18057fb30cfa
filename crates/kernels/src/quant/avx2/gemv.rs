//! One activation row against m weight rows (decode), streaming the weights once from memory: 8 rows
//! per pass share each activation block.
//!
//! Per piece and row: `maddubs` of the codes with the activation codes (i16 pairs), the format's offset
//! taken off as offset·(a₂ᵢ + a₂ᵢ₊₁) per pair (one `maddubs` per activation block, shared by the 8
//! rows), `madd` by ones or by the two half-piece scales into eight i32 lanes. None of it saturates:
//! activation codes lie in [−127, 127] and weight codes in [0, 63] (Q8_0: magnitudes ≤ 128 with the
//! signs moved onto the activations), so a pair is at most 2·128·127 = 32512 < 2¹⁵. A tree of `hadd`s
//! then leaves row r's exact piece sum in lane r, and from there the float arithmetic is that of
//! [`super::gemm`], lane for lane: a row's output is the same bits whichever kernel computed it, so a
//! token decoded alone gets the logits it would get in a batch.

use std::arch::x86_64::*;

use super::format::*;
use super::{BlockQ8, QK};

/// out[o] = Σ_p term(piece p of weight row o, activation block p) for the m rows of k at `w`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv<const F: u8>(w: *const u8, a: *const BlockQ8, out: *mut f32, k: usize, m: usize) {
    let row_bytes = k / QK / pieces(F) * block_bytes(F);
    let mut o = 0;
    while o < m {
        let rows = (m - o).min(8);
        if rows == 8 {
            rows8::<F, true>(w.add(o * row_bytes), row_bytes, 8, a, out.add(o));
        } else {
            rows8::<F, false>(w.add(o * row_bytes), row_bytes, rows, a, out.add(o));
        }
        o += rows;
    }
}

/// `gemv` of `rows` rows (all 8 when FULL) starting at `w`, `row_bytes` apart.
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows8<const F: u8, const FULL: bool>(
    w: *const u8,
    row_bytes: usize,
    rows: usize,
    a: *const BlockQ8,
    out: *mut f32,
) {
    let (bytes, np) = (block_bytes(F), pieces(F));
    let rows = if FULL { 8 } else { rows };
    let blocks = row_bytes / bytes;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    // Scales of the current block, piece-major, so that a piece's 8 rows load as one vector.
    let mut d = [[0.0f32; 8]; 8];
    let mut m = [[0.0f32; 8]; 8];
    let mut sc = [[0u32; 8]; 8];
    let mut mins = [[0u32; 8]; 8];
    let mut dmin = [0.0f32; 8];
    for b in 0..blocks {
        for r in 0..rows {
            let p = w.add(r * row_bytes + b * bytes);
            // Decode streams w from memory, 8 rows at a time; prefetching the next group's rows at the
            // same offset keeps 16 streams in flight. Past the end of w is harmless: prefetches never
            // fault.
            let mut line = 0;
            while line < bytes {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * row_bytes + line).cast());
                line += 64;
            }
            let s = scales::<F>(p);
            dmin[r] = s.dmin;
            for j in 0..np {
                (d[j][r], m[j][r], sc[j][r], mins[j][r]) = (s.d[j], s.m[j], s.sc[j], s.mins[j]);
            }
        }
        for j in 0..np {
            let ab = &*a.add(b * np + j);
            let aq = _mm256_loadu_si256(ab.qs.as_ptr().cast());
            // offset·(a₂ᵢ + a₂ᵢ₊₁) and a₂ᵢ + a₂ᵢ₊₁ per i16 lane, for all rows.
            let aoff = if offset(F) > 0 { _mm256_maddubs_epi16(_mm256_set1_epi8(offset(F) as i8), aq) } else { aq };
            let asum = if has_mins16(F) { _mm256_maddubs_epi16(_mm256_set1_epi8(1), aq) } else { aq };
            let mut lanes = [_mm256_setzero_si256(); 8];
            let mut mlanes = [_mm256_setzero_si256(); 8];
            for r in 0..rows {
                let c = codes::<F>(w.add(r * row_bytes + b * bytes), j);
                let mut pairs = if signed(F) {
                    _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(aq, c))
                } else {
                    _mm256_maddubs_epi16(c, aq)
                };
                if offset(F) > 0 {
                    pairs = _mm256_sub_epi16(pairs, aoff);
                }
                lanes[r] = _mm256_madd_epi16(pairs, if sub16(F) { half_scales(sc[j][r]) } else { ones });
                if has_mins16(F) {
                    mlanes[r] = _mm256_madd_epi16(asum, half_scales(mins[j][r]));
                }
            }
            let da = _mm256_set1_ps(ab.d);
            let scale = _mm256_mul_ps(_mm256_loadu_ps(d[j].as_ptr()), da);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce(&lanes)), scale, acc);
            if has_min(F) {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(m[j].as_ptr()), _mm256_set1_ps(ab.s), acc);
            }
            if has_mins16(F) {
                let dm = _mm256_mul_ps(_mm256_loadu_ps(dmin.as_ptr()), da);
                acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(reduce(&mlanes)), dm, acc);
            }
        }
    }
    if FULL {
        _mm256_storeu_ps(out, acc);
    } else {
        let mut v = [0.0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), acc);
        std::ptr::copy_nonoverlapping(v.as_ptr(), out, rows);
    }
}

/// Lane r = the sum of the 8 lanes of v[r] (exact: the sums stay far below 2³¹).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // Rows 0..4 from the low 128 bits of each input in the low half, from the high 128 bits in the high
    // half; likewise rows 4..8.
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(h0123, h4567), _mm256_permute2x128_si256::<0x31>(h0123, h4567))
}
/// i16 multipliers for `madd` over the pairs of a piece: the low i16 of `pair` for elements 0..16 (the
/// low 128 bits), the high one for elements 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_scales(pair: u32) -> __m256i {
    _mm256_setr_m128i(_mm_set1_epi16(pair as i16), _mm_set1_epi16((pair >> 16) as i16))
}
