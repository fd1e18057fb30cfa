//! NEON path of the group kernels, in the two variants of [`IntDot`]: "neon" (`smull`/`sadalp`) for
//! every aarch64 CPU and "neon-dotprod" (`sdot`) for CPUs with the Armv8.2 dot product.
//!
//! Each sub-block of codes is expanded into two vectors of 16 signed bytes, elements 0..16 and 16..32:
//! 8-bit codes by flipping the top bit (u − 128); 4-bit codes by a mask and a shift; 2-bit codes by
//! loading their 8 bytes into both halves of a register and shifting each half by its own amount
//! (`ushl`); INT3 adds its high-bit plane by spreading each of its bytes over 8 lanes (`ld4r`),
//! shifting each lane's bit into place (`ushl`) and inserting it (`bsl`). Codebook codes (NF4, palettes)
//! are expanded as integer codes of their width and looked up with one `tbl` per 16 in a register
//! holding their row's table. Every value is in
//! [−128, 127] and every activation code in [−127, 127], the range in which both variants' dot
//! products are exact.
//!
//! Every `unsafe fn` here may only run on a CPU with NEON, and the [`Sdot`] ones only with dotprod; the
//! only way in is the tables [`kernels`] returns after checking.

use std::arch::aarch64::*;
use std::arch::is_aarch64_feature_detected;

use super::{
    matmul_dims, sub_block_bytes, GroupKernels, GroupLayout, GroupParams, NO_TABLE, TABLE, TABLE2, TABLE3, TABLE4,
};
use crate::arm::int_dot::{IntDot, Sdot, Smull};
use crate::quant::{BlockQ8, QK};

/// The NEON tables this CPU can run, slower first.
pub fn kernels() -> impl Iterator<Item = &'static GroupKernels> {
    let neon = is_aarch64_feature_detected!("neon");
    let dotprod = neon && is_aarch64_feature_detected!("dotprod");
    [neon.then_some(&NEON), dotprod.then_some(&NEON_DOTPROD)].into_iter().flatten()
}

static NEON: GroupKernels = GroupKernels { name: "neon", matmul: entry::<Smull> };
static NEON_DOTPROD: GroupKernels = GroupKernels { name: "neon-dotprod", matmul: entry::<Sdot> };

fn entry<D: Variant>(
    l: GroupLayout<'_>,
    codes: &[u8],
    params: &[GroupParams],
    acts: &[BlockQ8],
    out: &mut [f32],
    k: usize,
) {
    let (n, m) = matmul_dims(l, codes, params, acts, out, k);
    let g = Geometry {
        row_bytes: l.row_bytes(k),
        nb: k / QK,
        ng: l.n_groups(k),
        gsb: l.group / QK,
        tables: l.codebook.map_or(NO_TABLE.as_ptr(), |c| c.tables.as_ptr()),
        rows_per_table: l.codebook.map_or(usize::MAX, |c| c.rows_per_table),
    };
    let (w, p, a, o) = (codes.as_ptr(), params.as_ptr(), acts.as_ptr(), out.as_mut_ptr());
    // SAFETY: reachable only through NEON and NEON_DOTPROD, handed out after neon (and dotprod for the
    // Sdot variant) were detected; matmul_dims checked codes = m rows, params = m·ng, acts = n rows,
    // out = n·m, and a table for each row.
    unsafe {
        match (l.bits, l.codebook.is_some()) {
            (4, true) => D::matmul::<TABLE4>(&g, w, p, a, o, n, m),
            (3, true) => D::matmul::<TABLE3>(&g, w, p, a, o, n, m),
            (_, true) => D::matmul::<TABLE2>(&g, w, p, a, o, n, m),
            (8, false) => D::matmul::<8>(&g, w, p, a, o, n, m),
            (4, false) => D::matmul::<4>(&g, w, p, a, o, n, m),
            (3, false) => D::matmul::<3>(&g, w, p, a, o, n, m),
            (_, false) => D::matmul::<2>(&g, w, p, a, o, n, m),
        }
    }
}

/// An [`IntDot`] variant and [`matmul`] compiled with the features its dot product needs (the generic
/// code below is inlined into it).
trait Variant: IntDot + Sized {
    unsafe fn matmul<const B: u8>(
        g: &Geometry,
        w: *const u8,
        p: *const GroupParams,
        a: *const BlockQ8,
        out: *mut f32,
        n: usize,
        m: usize,
    );
}

impl Variant for Smull {
    #[target_feature(enable = "neon")]
    unsafe fn matmul<const B: u8>(
        g: &Geometry,
        w: *const u8,
        p: *const GroupParams,
        a: *const BlockQ8,
        out: *mut f32,
        n: usize,
        m: usize,
    ) {
        matmul::<B, Self>(g, w, p, a, out, n, m)
    }
}

impl Variant for Sdot {
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn matmul<const B: u8>(
        g: &Geometry,
        w: *const u8,
        p: *const GroupParams,
        a: *const BlockQ8,
        out: *mut f32,
        n: usize,
        m: usize,
    ) {
        matmul::<B, Self>(g, w, p, a, out, n, m)
    }
}

/// Sizes of one matrix, in bytes per row, activation blocks per row, groups per row, blocks per group;
/// and the codebook's tables, one per `rows_per_table` rows.
struct Geometry {
    row_bytes: usize,
    nb: usize,
    ng: usize,
    gsb: usize,
    tables: *const [i8; 16],
    rows_per_table: usize,
}

/// Elements 0..16 and 16..32 of a 4-bit sub-block: the low and the high nibbles of its 16 bytes.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(p);
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// Elements 0..16 and 16..32 of a 2-bit plane (8 bytes; element i is bits 2·(i / 8) of byte i mod 8).
#[inline(always)]
unsafe fn two_bit_plane(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vreinterpretq_u8_u64(vdupq_n_u64(p.cast::<u64>().read_unaligned()));
    // Negative counts shift right: 0 and 2 bits for elements 0..8 and 8..16, 4 and 6 for the rest.
    let lo = vshlq_u8(v, vcombine_s8(vdup_n_s8(0), vdup_n_s8(-2)));
    let hi = vshlq_u8(v, vcombine_s8(vdup_n_s8(-4), vdup_n_s8(-6)));
    let three = vdupq_n_u8(3);
    (vandq_u8(lo, three), vandq_u8(hi, three))
}

/// `plane` plus 4 in each lane i whose bit i mod 8 is set in `spread`: one shift per lane moves that
/// bit to bit 2, and one bit select inserts it (`plane` < 4 has bit 2 clear).
#[inline(always)]
unsafe fn add_high_bits(plane: uint8x16_t, spread: uint8x16_t) -> uint8x16_t {
    // Lane i shifts by 2 − i mod 8 (negative: right): the bytes 2, 1, 0, −1, …, −5 in each half.
    let to_bit2 = vreinterpretq_s8_u64(vdupq_n_u64(0xFBFC_FDFE_FF00_0102));
    vbslq_u8(vdupq_n_u8(4), vshlq_u8(spread, to_bit2), plane)
}

/// The 32 codes of the sub-block at `p` as signed bytes, elements 0..16 and 16..32 (for B = 8: u − 128;
/// for the table kinds: their entries of `table`).
#[inline(always)]
unsafe fn codes<const B: u8>(p: *const u8, table: int8x16_t) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = match B {
        TABLE4 | TABLE3 | TABLE2 => {
            let (lo, hi) = match B {
                TABLE4 => codes::<4>(p, table),
                TABLE3 => codes::<3>(p, table),
                _ => codes::<2>(p, table),
            };
            let lookup = |v: int8x16_t| vqtbl1q_s8(table, vreinterpretq_u8_s8(v));
            return (lookup(lo), lookup(hi));
        }
        8 => {
            let flip = vdupq_n_u8(0x80);
            (veorq_u8(vld1q_u8(p), flip), veorq_u8(vld1q_u8(p.add(16)), flip))
        }
        4 => nibbles(p),
        3 => {
            let (lo, hi) = two_bit_plane(p);
            // `ld4r` spreads each of the 4 high-bit bytes over 8 lanes in one load (lane i takes byte
            // i / 8), without the index vectors a `tbl` would keep in registers.
            let high = vld4_dup_u8(p.add(8));
            (add_high_bits(lo, vcombine_u8(high.0, high.1)), add_high_bits(hi, vcombine_u8(high.2, high.3)))
        }
        _ => two_bit_plane(p),
    };
    (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
}

/// out[t·ldo + r] for R weight rows at `w` (params at `p`, `g.ng` per row) and T activation rows at `a`.
/// Per sub-block b, each weight row's codes are expanded once for the T tokens, and the group's
/// accumulator gets d_a·(the integer lanes) with one FMA; per group, each row adds scale·(that
/// accumulator) to its total and min·Σ s_a to its minimum term. The rows and tokens are constant
/// loops, unrolled, so that the 2·R·T accumulators stay in registers (32 at most, of NEON's 32, for
/// the 8×1 GEMV tile: 16 accumulators, the activation and weight codes, and the constants).
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)] // register arrays unroll fully
#[inline(always)]
unsafe fn tile<const B: u8, D: IntDot, const R: usize, const T: usize>(
    g: &Geometry,
    row0: usize,
    w: *const u8,
    p: *const GroupParams,
    a: *const BlockQ8,
    out: *mut f32,
    ldo: usize,
) {
    let sbb = sub_block_bytes(B);
    let tables: [*const [i8; 16]; R] = std::array::from_fn(|r| g.tables.wrapping_add((row0 + r) / g.rows_per_table));
    let mut total = [[vdupq_n_f32(0.0); T]; R];
    let mut mins = [[0.0f32; T]; R];
    for gi in 0..g.ng {
        let (b0, b1) = (gi * g.gsb, ((gi + 1) * g.gsb).min(g.nb));
        let mut group = [[vdupq_n_f32(0.0); T]; R];
        let mut asum = [0.0f32; T];
        for b in b0..b1 {
            let mut aq = [(vdupq_n_s8(0), vdupq_n_s8(0)); T];
            let mut da = [vdupq_n_f32(0.0); T];
            for t in 0..T {
                let ab = &*a.add(t * g.nb + b);
                aq[t] = (vld1q_s8(ab.qs.as_ptr()), vld1q_s8(ab.qs.as_ptr().add(16)));
                da[t] = vdupq_n_f32(ab.d);
                asum[t] += ab.s;
            }
            for r in 0..R {
                let table = if B & TABLE != 0 { vld1q_s8(tables[r].cast()) } else { vdupq_n_s8(0) };
                let (lo, hi) = codes::<B>(w.add(r * g.row_bytes + b * sbb), table);
                for t in 0..T {
                    let lanes = D::dot(D::dot(vdupq_n_s32(0), lo, aq[t].0), hi, aq[t].1);
                    group[r][t] = vfmaq_f32(group[r][t], vcvtq_f32_s32(lanes), da[t]);
                }
            }
        }
        for r in 0..R {
            let GroupParams { scale, min } = *p.add(r * g.ng + gi);
            for t in 0..T {
                total[r][t] = vfmaq_f32(total[r][t], group[r][t], vdupq_n_f32(scale));
                mins[r][t] += min * asum[t];
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            *out.add(t * ldo + r) = vaddvq_f32(total[r][t]) + mins[r][t];
        }
    }
}

/// `tile` for r ≤ 4 rows and c ≤ 2 tokens.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_edge<const B: u8, D: IntDot>(
    r: usize,
    c: usize,
    g: &Geometry,
    row0: usize,
    w: *const u8,
    p: *const GroupParams,
    a: *const BlockQ8,
    out: *mut f32,
    ldo: usize,
) {
    match (r, c) {
        (4, 2) => tile::<B, D, 4, 2>(g, row0, w, p, a, out, ldo),
        (3, 2) => tile::<B, D, 3, 2>(g, row0, w, p, a, out, ldo),
        (2, 2) => tile::<B, D, 2, 2>(g, row0, w, p, a, out, ldo),
        (1, 2) => tile::<B, D, 1, 2>(g, row0, w, p, a, out, ldo),
        (4, 1) => tile::<B, D, 4, 1>(g, row0, w, p, a, out, ldo),
        (3, 1) => tile::<B, D, 3, 1>(g, row0, w, p, a, out, ldo),
        (2, 1) => tile::<B, D, 2, 1>(g, row0, w, p, a, out, ldo),
        (1, 1) => tile::<B, D, 1, 1>(g, row0, w, p, a, out, ldo),
        _ => unreachable!("group tile {r}×{c}"),
    }
}

/// Rows per GEMV pass and the prefill blocking, as in the AVX2 path and the quantized NEON kernels.
const GEMV_ROWS: usize = 8;
/// INT3's GEMV pass: its expansion keeps more values live, and with 8 rows (16 accumulators) the
/// compiled block loop spills to the stack (seen in the disassembly), with 4 it does not.
const GEMV_ROWS_INT3: usize = 4;
const TILE_TOKENS: usize = 2;
const TOKEN_BLOCK: usize = 32;

/// n = 1: ROWS weight rows per pass over the activation row. n > 1: blocks of TOKEN_BLOCK tokens;
/// within one, each group of 4 weight rows sweeps the tokens TILE_TOKENS at a time.
#[inline(always)]
unsafe fn matmul<const B: u8, D: IntDot>(
    g: &Geometry,
    w: *const u8,
    p: *const GroupParams,
    a: *const BlockQ8,
    out: *mut f32,
    n: usize,
    m: usize,
) {
    if n == 1 {
        return if B & 0x0F == 3 {
            gemv::<B, D, GEMV_ROWS_INT3>(g, w, p, a, out, m)
        } else {
            gemv::<B, D, GEMV_ROWS>(g, w, p, a, out, m)
        };
    }
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + TOKEN_BLOCK).min(n);
        let mut o = 0;
        while o < m {
            let r = (m - o).min(4);
            let (wo, po) = (w.add(o * g.row_bytes), p.add(o * g.ng));
            let mut t = t0;
            while t < t1 {
                let c = (t1 - t).min(TILE_TOKENS);
                tile_edge::<B, D>(r, c, g, o, wo, po, a.add(t * g.nb), out.add(t * m + o), m);
                t += c;
            }
            o += r;
        }
        t0 = t1;
    }
}

/// [`matmul`] for one activation row, ROWS weight rows per pass and the rest in passes of up to 4.
#[inline(always)]
unsafe fn gemv<const B: u8, D: IntDot, const ROWS: usize>(
    g: &Geometry,
    w: *const u8,
    p: *const GroupParams,
    a: *const BlockQ8,
    out: *mut f32,
    m: usize,
) {
    let mut o = 0;
    while o < m {
        let r = if o + ROWS <= m { ROWS } else { (m - o).min(4) };
        let (wo, po) = (w.add(o * g.row_bytes), p.add(o * g.ng));
        if r == ROWS {
            tile::<B, D, ROWS, 1>(g, o, wo, po, a, out.add(o), 0);
        } else {
            tile_edge::<B, D>(r, 1, g, o, wo, po, a, out.add(o), 0);
        }
        o += r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant the CPU supports is in `paths()`, and so under the tests that compare each path
    /// with the scalar reference (scripts/test-aarch64.sh sets LOWBIT_REQUIRE_DOTPROD: qemu's `max`
    /// CPU has dotprod, so the `sdot` variant cannot drop out of the tests unnoticed).
    #[test]
    fn every_variant_is_registered() {
        let names: Vec<&str> = super::super::paths().iter().map(|k| k.name).collect();
        crate::arm::int_dot::assert_every_variant(&names);
    }

    /// Each expansion against `scalar::unpack` on sub-blocks that hold every byte value at every
    /// position, so that each code, bit plane and high bit lands in each lane.
    #[test]
    fn codes_match_the_reference_unpacking() {
        let table: [[i8; 16]; 1] = [std::array::from_fn(|i| (i as i8 - 8) * 16 + 1)];
        for kind in [TABLE4, TABLE3, TABLE2, 8, 4, 3, 2] {
            let (bits, sbb) = (kind & 0x0F, sub_block_bytes(kind));
            for shift in 0..256usize {
                let bytes: Vec<u8> = (0..sbb).map(|i| (i * 37 + shift * 11) as u8).collect();
                // SAFETY: this CPU has NEON (aarch64 base); `bytes` holds one sub-block.
                let (lo, hi) = unsafe {
                    let t = vld1q_s8(table[0].as_ptr());
                    match kind {
                        TABLE4 => codes::<TABLE4>(bytes.as_ptr(), t),
                        TABLE3 => codes::<TABLE3>(bytes.as_ptr(), t),
                        TABLE2 => codes::<TABLE2>(bytes.as_ptr(), t),
                        8 => codes::<8>(bytes.as_ptr(), t),
                        4 => codes::<4>(bytes.as_ptr(), t),
                        3 => codes::<3>(bytes.as_ptr(), t),
                        _ => codes::<2>(bytes.as_ptr(), t),
                    }
                };
                let mut got = [0i8; QK];
                // SAFETY: as above; got holds 32 bytes.
                unsafe { (vst1q_s8(got.as_mut_ptr(), lo), vst1q_s8(got.as_mut_ptr().add(16), hi)) };
                let l = if kind & TABLE != 0 {
                    GroupLayout::with_codebook(bits, 32, crate::group::Codebook::shared(&table[0]))
                } else {
                    GroupLayout::new(bits, 32)
                };
                let want =
                    super::super::scalar::unpack(bits, &bytes).map(|u| super::super::scalar::code_value(l, 0, u));
                assert_eq!(got.map(i32::from), want, "kind {kind}, bytes {bytes:?}");
            }
        }
    }
}
