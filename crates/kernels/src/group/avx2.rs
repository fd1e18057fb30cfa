//! AVX2 + FMA path of the group kernels (x86-64-v3).
//!
//! Every `unsafe fn` here is compiled with `avx2,fma` enabled and may only run on a CPU that has both;
//! the only way in is the table [`kernels`] returns after checking.
//!
//! Each sub-block of codes is expanded into 32 bytes in element order (one broadcast, one variable
//! shift, one mask; INT3 adds its high-bit plane with a byte shuffle and a compare). Codes of 4 bits or
//! fewer are the unsigned operand of `_mm256_maddubs_epi16` directly (pairs of at most 2·15·127, no
//! saturation); 8-bit codes are made signed (u − 128) and multiplied as in the Q8_0 kernel, their
//! magnitude unsigned and their sign moved onto the activation codes (pairs of at most 2·128·127).
//! Codebook codes (NF4, palettes) are expanded as integer codes of their width, looked up with one byte
//! shuffle in a register holding their row's table, then multiplied as signed bytes like the 8-bit ones.

use std::arch::x86_64::*;

use super::{
    matmul_dims, sub_block_bytes, GroupKernels, GroupLayout, GroupParams, NO_TABLE, TABLE, TABLE2, TABLE3, TABLE4,
};
use crate::quant::{BlockQ8, QK};
use crate::x86::avx2::hsum;

/// The AVX2 table, if this CPU has AVX2 and FMA.
pub fn kernels() -> Option<&'static GroupKernels> {
    (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(&AVX2)
}

static AVX2: GroupKernels = GroupKernels { name: "avx2", matmul: entry };

fn entry(l: GroupLayout<'_>, codes: &[u8], params: &[GroupParams], acts: &[BlockQ8], out: &mut [f32], k: usize) {
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
    // SAFETY: reachable only through AVX2, handed out after avx2 and fma were detected; matmul_dims
    // checked codes = m rows, params = m·ng, acts = n rows, out = n·m, and a table for each row.
    unsafe {
        match (l.bits, l.codebook.is_some()) {
            (4, true) => matmul::<TABLE4>(&g, w, p, a, o, n, m),
            (3, true) => matmul::<TABLE3>(&g, w, p, a, o, n, m),
            (_, true) => matmul::<TABLE2>(&g, w, p, a, o, n, m),
            (8, false) => matmul::<8>(&g, w, p, a, o, n, m),
            (4, false) => matmul::<4>(&g, w, p, a, o, n, m),
            (3, false) => matmul::<3>(&g, w, p, a, o, n, m),
            (_, false) => matmul::<2>(&g, w, p, a, o, n, m),
        }
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

/// Four codes of 2 bits per byte, elements j, j+8, j+16, j+24 of byte j: the 8 bytes in every 64-bit
/// lane, lane l shifted right by 2l and masked.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn two_bit_plane(p: *const u8) -> __m256i {
    let v = _mm256_set1_epi64x(p.cast::<i64>().read_unaligned());
    _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3))
}

/// The 32 codes of the sub-block at `p` as bytes in element order (for B = 8: u − 128, signed; for the
/// table kinds: their entries of `table`, the table in both lanes).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn codes<const B: u8>(p: *const u8, table: __m256i) -> __m256i {
    match B {
        TABLE4 => _mm256_shuffle_epi8(table, codes::<4>(p, table)),
        TABLE3 => _mm256_shuffle_epi8(table, codes::<3>(p, table)),
        TABLE2 => _mm256_shuffle_epi8(table, codes::<2>(p, table)),
        8 => _mm256_xor_si256(_mm256_loadu_si256(p.cast()), _mm256_set1_epi8(-128)),
        4 => {
            let packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
            _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F))
        }
        3 => {
            // Byte i takes byte i/8 of the high-bit word and tests bit i mod 8 of it.
            let high = _mm256_set1_epi32(p.add(8).cast::<i32>().read_unaligned());
            let spread = _mm256_shuffle_epi8(
                high,
                _mm256_setr_epi8(
                    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
                ),
            );
            let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
            _mm256_or_si256(two_bit_plane(p), _mm256_and_si256(set, _mm256_set1_epi8(4)))
        }
        _ => two_bit_plane(p),
    }
}

/// Eight i32 lanes summing to Σ value·q of code values `w` (from `codes`) and activation codes `a`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot<const B: u8>(w: __m256i, a: __m256i) -> __m256i {
    let pairs = if B == 8 || B & TABLE != 0 {
        _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w))
    } else {
        _mm256_maddubs_epi16(w, a)
    };
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// out[t·ldo + r] for R weight rows at `w` (params at `p`, `g.ng` per row; row0: the first one's index
/// in the matrix, which picks their tables) and T activation rows at `a`.
/// Per sub-block b, each weight row's codes are expanded once for the T tokens and part += d_a·lanes with
/// one FMA; the rows are the innermost loop so that (with R and T constant) it unrolls and the R·T
/// accumulators stay in registers. Per group, each row adds scale·part and min·Σ s_a once: the group's
/// scale stays out of the per-block work, which is what bounds decode on small matrices.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)] // register arrays unroll fully
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const B: u8, const R: usize, const T: usize>(
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
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut mins = [[0.0f32; T]; R];
    for gi in 0..g.ng {
        let (b0, b1) = (gi * g.gsb, ((gi + 1) * g.gsb).min(g.nb));
        let mut asum = [0.0f32; T];
        let mut part = [[_mm256_setzero_ps(); T]; R];
        for b in b0..b1 {
            let mut aq = [_mm256_setzero_si256(); T];
            let mut da = [_mm256_setzero_ps(); T];
            for t in 0..T {
                let ab = a.add(t * g.nb + b);
                aq[t] = _mm256_loadu_si256(std::ptr::addr_of!((*ab).qs).cast());
                da[t] = _mm256_broadcast_ss(&(*ab).d);
                asum[t] += (*ab).s;
            }
            for r in 0..R {
                let q = w.add(r * g.row_bytes + b * sbb);
                if T == 1 {
                    // Decode streams the weights: fetch the next group of rows at the same offset.
                    _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(R * g.row_bytes).cast());
                }
                let table = if B & TABLE != 0 {
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(tables[r].cast()))
                } else {
                    _mm256_setzero_si256()
                };
                let c = codes::<B>(q, table);
                for t in 0..T {
                    let lanes = _mm256_cvtepi32_ps(dot::<B>(c, aq[t]));
                    part[r][t] = _mm256_fmadd_ps(da[t], lanes, part[r][t]);
                }
            }
        }
        for r in 0..R {
            let GroupParams { scale, min } = *p.add(r * g.ng + gi);
            for t in 0..T {
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(scale), part[r][t], acc[r][t]);
                mins[r][t] += min * asum[t];
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            *out.add(t * ldo + r) = hsum(acc[r][t]) + mins[r][t];
        }
    }
}

/// `tile` for r ≤ 4 rows and c ≤ 2 tokens.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_edge<const B: u8>(
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
        (4, 2) => tile::<B, 4, 2>(g, row0, w, p, a, out, ldo),
        (3, 2) => tile::<B, 3, 2>(g, row0, w, p, a, out, ldo),
        (2, 2) => tile::<B, 2, 2>(g, row0, w, p, a, out, ldo),
        (1, 2) => tile::<B, 1, 2>(g, row0, w, p, a, out, ldo),
        (4, 1) => tile::<B, 4, 1>(g, row0, w, p, a, out, ldo),
        (3, 1) => tile::<B, 3, 1>(g, row0, w, p, a, out, ldo),
        (2, 1) => tile::<B, 2, 1>(g, row0, w, p, a, out, ldo),
        (1, 1) => tile::<B, 1, 1>(g, row0, w, p, a, out, ldo),
        _ => unreachable!("group tile {r}×{c}"),
    }
}

/// Rows per GEMV pass and the prefill blocking, as in the Q4_0 kernels (`quant`'s AVX2 path).
const GEMV_ROWS: usize = 8;
const TILE_TOKENS: usize = 2;
const TOKEN_BLOCK: usize = 32;

#[target_feature(enable = "avx2,fma")]
unsafe fn matmul<const B: u8>(
    g: &Geometry,
    w: *const u8,
    p: *const GroupParams,
    a: *const BlockQ8,
    out: *mut f32,
    n: usize,
    m: usize,
) {
    let row = |o: usize| (w.add(o * g.row_bytes), p.add(o * g.ng));
    if n == 1 {
        let mut o = 0;
        while o + GEMV_ROWS <= m {
            let (wo, po) = row(o);
            tile::<B, GEMV_ROWS, 1>(g, o, wo, po, a, out.add(o), 0);
            o += GEMV_ROWS;
        }
        while o < m {
            let r = (m - o).min(4);
            let (wo, po) = row(o);
            tile_edge::<B>(r, 1, g, o, wo, po, a, out.add(o), 0);
            o += r;
        }
        return;
    }
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + TOKEN_BLOCK).min(n);
        let mut o = 0;
        while o < m {
            let r = (m - o).min(4);
            let (wo, po) = row(o);
            let mut t = t0;
            while t < t1 {
                let c = (t1 - t).min(TILE_TOKENS);
                tile_edge::<B>(r, c, g, o, wo, po, a.add(t * g.nb), out.add(t * m + o), m);
                t += c;
            }
            o += r;
        }
        t0 = t1;
    }
}
