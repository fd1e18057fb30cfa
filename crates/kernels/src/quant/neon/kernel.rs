//! The one matmul core of both NEON variants and every format: tiles of weight rows × tokens, each
//! weight piece unpacked once per tile ([`Format`]) and met by the tile's tokens through the variant's
//! integer dot product ([`IntDot`]).
//!
//! Per piece, output and token ([`accumulate`]): the exact i32 dot products of the 32 code pairs in 4
//! lanes (times the two half-piece scales where a format has them), converted to f32 (exact: below
//! 2²⁴) and multiplied-added with d_w·d_a into the output's 4 f32 lanes; m_w·s_a (Q4_1, Q5_1, Q4_K,
//! Q5_K) kept in a scalar beside them, and Q2_K's minimums as a second dot product of the splatted
//! integer minimums with the activation codes. A row's output goes through the same float operations
//! whatever the tile shape, so a token decoded alone gets the outputs it would get in a batch.

use std::arch::aarch64::*;

use super::format::{Codes, Format, PieceScales};
use super::BlockQ8;
use crate::arm::int_dot::IntDot;

/// Output rows per GEMV pass: one turn of the piece loop serves 8 weight rows from one load of the
/// activation codes, with 8 accumulators in registers (NEON has 32).
const GEMV_ROWS: usize = 8;
/// Tokens per tile of the batched path: 4×2 tiles unpack each weight piece once for 2 tokens.
const TILE_TOKENS: usize = 2;
/// Tokens per sweep of the batched path: their activation blocks stay in L2 while each group of 4
/// weight rows passes over them.
const TOKEN_BLOCK: usize = 32;

/// One output's running sum: the per-lane products, and the terms kept apart from them (m_w·s_a).
#[derive(Clone, Copy)]
struct Acc {
    lanes: float32x4_t,
    other: f32,
}

/// acc += the term of a piece (codes q, scales s) against the activation block a (`scalar::piece_term`
/// up to the order of the float additions).
#[inline(always)]
unsafe fn accumulate<F: Format, D: IntDot>(q: Codes, s: &PieceScales, a: &BlockQ8, acc: &mut Acc) {
    let qs = a.qs.as_ptr();
    let (a0, a1) = (vld1q_s8(qs), vld1q_s8(qs.add(16)));
    let zero = vdupq_n_s32(0);
    let isum = if F::SUB16 {
        vmlaq_n_s32(vmulq_n_s32(D::dot(zero, q[0], a0), s.sc[0]), D::dot(zero, q[1], a1), s.sc[1])
    } else {
        D::dot(D::dot(zero, q[0], a0), q[1], a1)
    };
    acc.lanes = vfmaq_f32(acc.lanes, vcvtq_f32_s32(isum), vdupq_n_f32(s.d * a.d));
    if F::MIN {
        acc.other += s.m * a.s;
    }
    if F::MINS16 {
        let msum = D::dot(D::dot(zero, vdupq_n_s8(s.mins[0]), a0), vdupq_n_s8(s.mins[1]), a1);
        acc.lanes = vfmsq_f32(acc.lanes, vcvtq_f32_s32(msum), vdupq_n_f32(s.dmin * a.d));
    }
}

/// out[t·ldo + r] = Σ_p term(piece p of weight row r, activation row t) for r < R, t < T: the weight
/// rows start at `w`, `row_bytes` apart; the activation rows at `a`, `nb` blocks apart. Each weight
/// piece is unpacked once for all T tokens.
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline(always)]
unsafe fn tile<F: Format, D: IntDot, const R: usize, const T: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const BlockQ8,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let (bytes, pieces) = (F::TYPE.block_bytes(), F::TYPE.pieces());
    let mut acc = [[Acc { lanes: vdupq_n_f32(0.0), other: 0.0 }; T]; R];
    let mut scales = [[PieceScales::default(); 8]; R];
    for b in 0..nb / pieces {
        let block = |r: usize| w.add(r * row_bytes + b * bytes);
        for r in 0..R {
            F::scales(block(r), &mut scales[r]);
        }
        for j in 0..pieces {
            for r in 0..R {
                let q = F::codes(block(r), j);
                for t in 0..T {
                    accumulate::<F, D>(q, &scales[r][j], &*a.add(t * nb + b * pieces + j), &mut acc[r][t]);
                }
            }
        }
    }
    for t in 0..T {
        for r in 0..R {
            *out.add(t * ldo + r) = vaddvq_f32(acc[r][t].lanes) + acc[r][t].other;
        }
    }
}

/// `tile` for r ≤ 4 weight rows and c ≤ 2 tokens.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_edge<F: Format, D: IntDot>(
    r: usize,
    c: usize,
    w: *const u8,
    row_bytes: usize,
    a: *const BlockQ8,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    match (r, c) {
        (4, 2) => tile::<F, D, 4, 2>(w, row_bytes, a, nb, out, ldo),
        (3, 2) => tile::<F, D, 3, 2>(w, row_bytes, a, nb, out, ldo),
        (2, 2) => tile::<F, D, 2, 2>(w, row_bytes, a, nb, out, ldo),
        (1, 2) => tile::<F, D, 1, 2>(w, row_bytes, a, nb, out, ldo),
        (4, 1) => tile::<F, D, 4, 1>(w, row_bytes, a, nb, out, ldo),
        (3, 1) => tile::<F, D, 3, 1>(w, row_bytes, a, nb, out, ldo),
        (2, 1) => tile::<F, D, 2, 1>(w, row_bytes, a, nb, out, ldo),
        (1, 1) => tile::<F, D, 1, 1>(w, row_bytes, a, nb, out, ldo),
        _ => unreachable!("quantized tile {r}×{c}"),
    }
}

/// out[t·m + o] for n activation rows of nb blocks at `a` and m weight rows of format F at `w`.
///
/// n = 1: GEMV_ROWS weight rows per pass over the activation row. n > 1: blocks of TOKEN_BLOCK tokens;
/// within one, each group of 4 weight rows sweeps the tokens TILE_TOKENS at a time.
#[inline(always)]
pub unsafe fn matmul<F: Format, D: IntDot>(
    w: *const u8,
    a: *const BlockQ8,
    out: *mut f32,
    n: usize,
    nb: usize,
    m: usize,
) {
    let row_bytes = nb / F::TYPE.pieces() * F::TYPE.block_bytes();
    if n == 1 {
        let mut o = 0;
        while o + GEMV_ROWS <= m {
            tile::<F, D, GEMV_ROWS, 1>(w.add(o * row_bytes), row_bytes, a, nb, out.add(o), 0);
            o += GEMV_ROWS;
        }
        while o < m {
            let r = (m - o).min(4);
            tile_edge::<F, D>(r, 1, w.add(o * row_bytes), row_bytes, a, nb, out.add(o), 0);
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
            let mut t = t0;
            while t < t1 {
                let c = (t1 - t).min(TILE_TOKENS);
                tile_edge::<F, D>(r, c, w.add(o * row_bytes), row_bytes, a.add(t * nb), nb, out.add(t * m + o), m);
                t += c;
            }
            o += r;
        }
        t0 = t1;
    }
}
