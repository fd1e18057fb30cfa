//! NEON path of the ternary look-up kernels (every aarch64 CPU).
//!
//! Every `unsafe fn` here may only run on a CPU with NEON; the only way in is the table [`kernels`] returns
//! after checking.
//!
//! A pair's 16 entries are two vectors of 8 i16, `w0·a0 + w1·a1` formed with negations and selections
//! (`vbsl`) of the broadcast activations; `vuzp` splits them into the low-byte and high-byte tables. In a
//! tile, a pair's 16 index bytes give rows 0..16 (low nibbles) and rows 16..32 (high nibbles); one `tbl` per
//! byte table and half looks up 16 rows, and zipping the low and high bytes gives their i16 entries.

use std::arch::aarch64::*;
use std::arch::is_aarch64_feature_detected;

use super::{each_tile, TernaryKernels, TernaryMatrix, TABLE_BYTES, TILE_ROWS};
use crate::quant::{BlockQ8, QK};

/// The NEON table, if this CPU has NEON.
pub fn kernels() -> Option<&'static TernaryKernels> {
    is_aarch64_feature_detected!("neon").then_some(&NEON)
}

static NEON: TernaryKernels = TernaryKernels { name: "neon", tables, tiles };

fn tables(acts: &[BlockQ8], tables: &mut [u8]) {
    assert_eq!(tables.len(), acts.len() * QK / 2 * TABLE_BYTES, "ternary tables: wrong length");
    // SAFETY: reachable only through NEON, handed out after neon was detected; the lengths match.
    unsafe { build_tables(acts, tables) }
}

#[target_feature(enable = "neon")]
unsafe fn build_tables(acts: &[BlockQ8], tables: &mut [u8]) {
    // Entry i = 3·(w0 + 1) + (w1 + 1), entries 0..8 and 8..16: where w0 (w1) is −1, and where it is +1.
    let mask = |v: [i16; 8]| vreinterpretq_u16_s16(vld1q_s16(v.as_ptr()));
    let (neg0, pos0) = (mask([-1, -1, -1, 0, 0, 0, 0, 0]), mask([0, 0, 0, 0, 0, 0, -1, -1]));
    let (neg0_hi, pos0_hi) = (mask([0; 8]), mask([-1, 0, 0, 0, 0, 0, 0, 0]));
    let (neg1, pos1) = (mask([-1, 0, 0, -1, 0, 0, -1, 0]), mask([0, 0, -1, 0, 0, -1, 0, 0]));
    let (neg1_hi, pos1_hi) = (mask([0; 8]), mask([-1, 0, 0, 0, 0, 0, 0, 0]));
    let zero = vdupq_n_s16(0);
    // w·a for one weight vector given by its masks: a where +1, −a where −1, else 0.
    let term = |a: int16x8_t, neg: uint16x8_t, pos: uint16x8_t| vbslq_s16(pos, a, vbslq_s16(neg, vnegq_s16(a), zero));
    let out = tables.as_mut_ptr();
    for (bi, b) in acts.iter().enumerate() {
        for j in 0..QK / 2 {
            let a0 = vdupq_n_s16(i16::from(b.qs[2 * j]));
            let a1 = vdupq_n_s16(i16::from(b.qs[2 * j + 1]));
            let lo = vaddq_s16(term(a0, neg0, pos0), term(a1, neg1, pos1)); // entries 0..8
            let hi = vaddq_s16(term(a0, neg0_hi, pos0_hi), term(a1, neg1_hi, pos1_hi)); // entries 8..16
            let (lo, hi) = (vreinterpretq_u8_s16(lo), vreinterpretq_u8_s16(hi));
            let t = out.add((bi * QK / 2 + j) * TABLE_BYTES);
            vst1q_u8(t, vuzp1q_u8(lo, hi)); // the low bytes of entries 0..16
            vst1q_u8(t.add(16), vuzp2q_u8(lo, hi)); // their high bytes
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
#[target_feature(enable = "neon")]
unsafe fn tile(
    w: &TernaryMatrix,
    idx: *const u8,
    scales: *const f32,
    tables: *const u8,
    acts: &[BlockQ8],
) -> [f32; TILE_ROWS] {
    let nibble = vdupq_n_u8(0x0F);
    let mut acc = [vdupq_n_f32(0.0); 8];
    let gsb = w.group / QK;
    for g in 0..w.n_groups() {
        let mut part = [vdupq_n_f32(0.0); 8];
        for (b, block) in acts.iter().enumerate().skip(g * gsb).take(gsb) {
            // Rows 0..8, 8..16, 16..24, 24..32.
            let mut sums = [vdupq_n_s16(0); 4];
            for p in b * QK / 2..(b + 1) * QK / 2 {
                let bytes = vld1q_u8(idx.add(16 * p));
                let t = tables.add(p * TABLE_BYTES);
                let (low, high) = (vld1q_u8(t), vld1q_u8(t.add(16)));
                for (half, index) in [vandq_u8(bytes, nibble), vshrq_n_u8::<4>(bytes)].into_iter().enumerate() {
                    let (l, h) = (vqtbl1q_u8(low, index), vqtbl1q_u8(high, index));
                    let s = &mut sums[2 * half..2 * half + 2];
                    s[0] = vaddq_s16(s[0], vreinterpretq_s16_u8(vzip1q_u8(l, h)));
                    s[1] = vaddq_s16(s[1], vreinterpretq_s16_u8(vzip2q_u8(l, h)));
                }
            }
            for (i, s) in sums.into_iter().enumerate() {
                let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(s)));
                let hi = vcvtq_f32_s32(vmovl_high_s16(s));
                part[2 * i] = vfmaq_n_f32(part[2 * i], lo, block.d);
                part[2 * i + 1] = vfmaq_n_f32(part[2 * i + 1], hi, block.d);
            }
        }
        let s = scales.add(g * TILE_ROWS);
        for (i, (acc, part)) in acc.iter_mut().zip(part).enumerate() {
            *acc = vfmaq_f32(*acc, vld1q_f32(s.add(4 * i)), part);
        }
    }
    let mut rows = [0.0f32; TILE_ROWS];
    for (i, a) in acc.iter().enumerate() {
        vst1q_f32(rows.as_mut_ptr().add(4 * i), *a);
    }
    rows
}
