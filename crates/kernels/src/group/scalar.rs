//! Reference group kernels: the specification the SIMD paths are tested against.

use super::{matmul_dims, GroupLayout, GroupParams};
use crate::quant::{BlockQ8, QK};

/// The 32 codes of one sub-block, in element order (layout table in `lowbit_formats::native::group`).
pub fn unpack(bits: u8, bytes: &[u8]) -> [u8; QK] {
    let mut u = [0u8; QK];
    match bits {
        8 => u.copy_from_slice(&bytes[..QK]),
        4 => (0..16).for_each(|j| (u[j], u[j + 16]) = (bytes[j] & 15, bytes[j] >> 4)),
        _ => {
            for (i, u) in u.iter_mut().enumerate() {
                *u = bytes[i % 8] >> (2 * (i / 8)) & 3;
            }
            if bits == 3 {
                let high = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                u.iter_mut().enumerate().for_each(|(i, u)| *u |= ((high >> i & 1) as u8) << 2);
            }
        }
    }
    u
}

/// The integer code `u` of weight row `row` stands for: its table's entry, or `u − c` with c = 128 for
/// 8-bit codes, else 0.
pub fn code_value(l: GroupLayout<'_>, row: usize, u: u8) -> i32 {
    match l.codebook {
        Some(c) => i32::from(c.table(row)[usize::from(u)]),
        None => i32::from(u) - if l.bits == 8 { 128 } else { 0 },
    }
}

/// Σ code_value(u_i)·q_i over one sub-block of row `row`: exact in i32.
pub fn sub_block_dot(l: GroupLayout<'_>, row: usize, bytes: &[u8], a: &BlockQ8) -> i32 {
    unpack(l.bits, bytes).iter().zip(&a.qs).map(|(&u, &q)| code_value(l, row, u) * i32::from(q)).sum()
}

/// out[t·m + o] = Σ_g (scale·Σ_b d_b·dot_b + min·Σ_b s_b), g over the groups of row o and b over the
/// activation blocks of group g, each sum formed left to right in f32.
pub fn matmul(l: GroupLayout<'_>, codes: &[u8], params: &[GroupParams], acts: &[BlockQ8], out: &mut [f32], k: usize) {
    let (n, m) = matmul_dims(l, codes, params, acts, out, k);
    let (nb, ng, row_bytes, sbb, gsb) = (k / QK, l.n_groups(k), l.row_bytes(k), l.sub_block_bytes(), l.group / QK);
    for t in 0..n {
        let a = &acts[t * nb..][..nb];
        for o in 0..m {
            let row = &codes[o * row_bytes..][..row_bytes];
            let mut sum = 0.0f32;
            for (g, p) in params[o * ng..][..ng].iter().enumerate() {
                let (mut dot, mut asum) = (0.0f32, 0.0f32);
                for b in g * gsb..((g + 1) * gsb).min(nb) {
                    dot += a[b].d * sub_block_dot(l, o, &row[b * sbb..][..sbb], &a[b]) as f32;
                    asum += a[b].s;
                }
                sum += p.scale * dot + p.min * asum;
            }
            out[t * m + o] = sum;
        }
    }
}
