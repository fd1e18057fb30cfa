//! AVX2 path of the ternary look-up kernels (x86-64-v3).
//!
//! Every `unsafe fn` here is compiled with `avx2,fma` enabled and may only run on a CPU that has both;
//! the only way in is the table [`kernels`] returns after checking.
//!
//! A pair's 16 entries are one vector of i16, `sign(a0, c0) + sign(a1, c1)` with constant vectors of the
//! pairs' weights (`vpsignw` negates, keeps or zeroes: still no multiplication); one byte shuffle and
//! one lane permutation split it into its low-byte and high-byte tables. In a tile, each pair's 16 index
//! bytes are broadcast to both lanes, the high nibbles shifted down in the upper lane, so one shuffle
//! per byte table looks up rows 0..16 in the lower lane and rows 16..32 in the upper; interleaving the
//! low and high bytes gives the i16 entries, summed over a block's 16 pairs.

use std::arch::x86_64::*;

use super::{each_tile, TernaryKernels, TernaryMatrix, TABLE_BYTES, TILE_ROWS};
use crate::quant::{BlockQ8, QK};

/// The AVX2 table, if this CPU has AVX2 and FMA.
pub fn kernels() -> Option<&'static TernaryKernels> {
    (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(&AVX2)
}

static AVX2: TernaryKernels = TernaryKernels { name: "avx2", tables, tiles };

fn tables(acts: &[BlockQ8], tables: &mut [u8]) {
    assert_eq!(tables.len(), acts.len() * QK / 2 * TABLE_BYTES, "ternary tables: wrong length");
    // SAFETY: reachable only through AVX2, handed out after avx2 and fma were detected; the lengths match.
    unsafe { build_tables(acts, tables) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn build_tables(acts: &[BlockQ8], tables: &mut [u8]) {
    // Entry i = 3·(w0 + 1) + (w1 + 1): w0 and w1 of entries 0..9, 0 (no contribution) for 9..16.
    let c0 = _mm256_setr_epi16(-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0);
    let c1 = _mm256_setr_epi16(-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    // Per lane: the low bytes of its 8 entries, then their high bytes.
    let split = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
    );
    let out = tables.as_mut_ptr();
    for (bi, b) in acts.iter().enumerate() {
        for j in 0..QK / 2 {
            let a0 = _mm256_set1_epi16(i16::from(b.qs[2 * j]));
            let a1 = _mm256_set1_epi16(i16::from(b.qs[2 * j + 1]));
            let e = _mm256_add_epi16(_mm256_sign_epi16(a0, c0), _mm256_sign_epi16(a1, c1));
            // [lo 0..8, hi 0..8 | lo 8..16, hi 8..16] → [lo 0..16 | hi 0..16]
            let t = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(e, split));
            _mm256_storeu_si256(out.add((bi * QK / 2 + j) * TABLE_BYTES).cast(), t);
        }
    }
}

fn tiles(w: &TernaryMatrix, tables: &[u8], acts: &[BlockQ8], t0: usize, out: &mut [f32]) {
    // SAFETY: as in `tables`; each_tile checked the tables and activations against the matrix, and hands over one
    // tile's index bytes (16 per pair) and scales (32 per group).
    each_tile(w, tables, acts, t0, out, |idx, scales| unsafe {
        tile(w, idx.as_ptr(), scales.as_ptr(), tables.as_ptr(), acts)
    })
}

/// The 32 rows of one tile.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile(
    w: &TernaryMatrix,
    idx: *const u8,
    scales: *const f32,
    tables: *const u8,
    acts: &[BlockQ8],
) -> [f32; TILE_ROWS] {
    let nibble = _mm256_set1_epi8(0x0F);
    let upper = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    let mut acc = [_mm256_setzero_ps(); 4];
    let gsb = w.group / QK;
    for g in 0..w.n_groups() {
        let mut part = [_mm256_setzero_ps(); 4];
        for (b, block) in acts.iter().enumerate().skip(g * gsb).take(gsb) {
            // lo: rows 0..8 and 16..24; hi: rows 8..16 and 24..32.
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for p in b * QK / 2..(b + 1) * QK / 2 {
                let bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128(idx.add(16 * p).cast()));
                let index = _mm256_and_si256(_mm256_srlv_epi32(bytes, upper), nibble);
                let t = tables.add(p * TABLE_BYTES);
                let low = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(t.cast())), index);
                let high = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(t.add(16).cast())), index);
                lo = _mm256_add_epi16(lo, _mm256_unpacklo_epi8(low, high));
                hi = _mm256_add_epi16(hi, _mm256_unpackhi_epi8(low, high));
            }
            let d = _mm256_set1_ps(block.d);
            let widen = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(v));
            let rows = [
                _mm256_castsi256_si128(lo),
                _mm256_castsi256_si128(hi),
                _mm256_extracti128_si256::<1>(lo),
                _mm256_extracti128_si256::<1>(hi),
            ];
            for (part, rows) in part.iter_mut().zip(rows) {
                *part = _mm256_fmadd_ps(d, widen(rows), *part);
            }
        }
        let s = scales.add(g * TILE_ROWS);
        for (i, (acc, part)) in acc.iter_mut().zip(part).enumerate() {
            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(s.add(8 * i)), part, *acc);
        }
    }
    let mut rows = [0.0f32; TILE_ROWS];
    for (i, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(rows.as_mut_ptr().add(8 * i), *a);
    }
    rows
}
