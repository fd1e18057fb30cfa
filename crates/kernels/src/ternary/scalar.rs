//! Reference ternary kernels: the specification the SIMD path is tested against.

use super::{TernaryMatrix, TABLE_BYTES, TILE_ROWS};
use crate::quant::{BlockQ8, QK};

/// The contribution of a pair of weights with index `3·(w0 + 1) + (w1 + 1)` to a dot product with
/// activations `a0`, `a1`.
pub fn entry(index: usize, a0: i16, a1: i16) -> i16 {
    let (w0, w1) = (index as i16 / 3 - 1, index as i16 % 3 - 1);
    match index {
        0..9 => w0 * a0 + w1 * a1,
        _ => 0,
    }
}

/// The tables of one activation row: per pair, the low bytes of its 16 entries, then their high bytes.
pub fn tables(acts: &[BlockQ8], tables: &mut [u8]) {
    let q = acts.iter().flat_map(|b| b.qs);
    let mut pairs = tables.chunks_exact_mut(TABLE_BYTES);
    let mut q = q.map(i16::from);
    while let (Some(a0), Some(a1), Some(table)) = (q.next(), q.next(), pairs.next()) {
        for i in 0..16 {
            let [lo, hi] = entry(i, a0, a1).to_le_bytes();
            (table[i], table[16 + i]) = (lo, hi);
        }
    }
}

/// The entry of pair `p` at `index` in `tables`.
fn lookup(tables: &[u8], p: usize, index: u8) -> i16 {
    let t = &tables[p * TABLE_BYTES..][..TABLE_BYTES];
    i16::from_le_bytes([t[usize::from(index)], t[16 + usize::from(index)]])
}

/// out[i] = Σ_g scale·Σ_b d_b·Σ_p entry(p), for row TILE_ROWS·t0 + i, each sum formed left to right (the
/// integer one exactly, in i32).
pub fn tiles(w: &TernaryMatrix, tables: &[u8], acts: &[BlockQ8], t0: usize, out: &mut [f32]) {
    let pairs_per_block = QK / 2;
    for (i, out) in out.iter_mut().enumerate() {
        let r = t0 * TILE_ROWS + i;
        let mut sum = 0.0f32;
        for g in 0..w.n_groups() {
            let mut part = 0.0f32;
            let blocks = w.group / QK;
            for (b, block) in acts.iter().enumerate().skip(g * blocks).take(blocks) {
                let dot: i32 = (b * pairs_per_block..(b + 1) * pairs_per_block)
                    .map(|p| i32::from(lookup(tables, p, w.index(r, p))))
                    .sum();
                part += block.d * dot as f32;
            }
            sum += w.scale(r, g) * part;
        }
        *out = sum;
    }
}
