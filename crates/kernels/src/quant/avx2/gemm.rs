//! Many activation rows against m weight rows (prefill).
//!
//! The weights are decoded once per block of tokens into panels of 8 rows: per 32-element piece, eight
//! chunks of 32 bytes, chunk c holding the codes of elements 4c..4c + 4 of row r in bytes 4r..4r + 4,
//! and the 8 rows' scales as vectors. A token's 4 activation codes of chunk c, broadcast to all 8
//! dwords, then meet all 8 rows in one `maddubs`; the i16 pair sums of several chunks add up in a
//! register before one `madd` turns them into one i32 per row, so the accumulators hold 8 outputs each
//! (no horizontal sums) and the scales multiply 8 rows at once. Per 32 products this takes about half
//! the instructions of the row-at-a-time kernel of `gemv`, whose `madd`, reduction and decoding come per
//! row, piece and token.
//!
//! Offsets come off before the `madd`: the i16 sums of a group of chunks start from −offset times the
//! token's matching sums of activation code pairs (computed once per token block), so they end at
//! Σ (code − offset)·a. Intermediate sums may wrap around i16 (`vpaddw` wraps, it does not saturate);
//! the final ones fit ([`group`]), so they come out exact.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::format::*;
use super::{BlockQ8, QuantType, QK};

/// Tokens per micro-kernel pass: 4 rows of i16 sums, i32 sums and f32 accumulators (12 registers).
const TILE_TOKENS: usize = 4;
/// Tokens per panel decode: their activations (1.25 bytes per value: 240 KB at k = 1536) stay in L2
/// while each panel passes over them. Decoding then costs about 2% of the products it serves for Q4_0,
/// 6–10% for Q4_K and Q6_K at k = 1536 (single-thread CPU time, n = 8 against n = 512).
const TOKEN_BLOCK: usize = 128;

/// One 32-element piece of 8 weight rows (see the module comment); lane or dword r is row r.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Panel {
    codes: [__m256i; 8],
    d: __m256,
    m: __m256,
    /// Half-piece scales, each duplicated into both i16 of the row's dword (sub16 formats).
    sc: [__m256i; 2],
    /// Q2_K: mins₀ and mins₁ as the two i16 of the row's dword.
    mins: __m256i,
    dmin: __m256,
}

struct Scratch {
    panels: Vec<Panel>,
    sums: Vec<TokenSums>,
}

/// What the micro-kernel needs of a token's activation block besides its codes and scales.
#[derive(Clone, Copy, Default)]
struct TokenSums {
    /// The i16 pair each chunk group's sums start from: −offset·(Σ_c a₄c + a₄c₊₁, Σ_c a₄c₊₂ + a₄c₊₃) over
    /// the chunks c of the group (chunks 0..4 and 4..8, or all 8 in `init[0]` when the group is 8).
    init: [u32; 2],
    /// h₀ | h₁ << 16: Σ a over elements 0..16 and 16..32 (Q2_K's minimums).
    h: u32,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { panels: Vec::new(), sums: Vec::new() }) };
}

/// Chunks whose i16 pair sums add up before a `madd`: each sum ends as Σ (code − offset)·a over 2 elements
/// per chunk, at most 2·g·max|code − offset|·127, which must fit in i16; half-piece scales need the sums
/// of chunks 0..4 and 4..8 apart.
const fn group(f: u8) -> usize {
    let (max, off) = (max_code(f), offset(f));
    let span = if max - off > off { max - off } else { off };
    let mut g = 8usize;
    while g > 1 && (g as i32 * 2 * span * 127 > i16::MAX as i32 || (sub16(f) && g > 4)) {
        g /= 2;
    }
    g
}

// The offsets are folded into the starting values of groups of 4 or 8 chunks only.
const _: () = {
    let mut i = 0;
    while i < QuantType::ALL.len() {
        let f = QuantType::ALL[i] as u8;
        assert!(signed(f) || offset(f) == 0 || group(f) >= 4);
        i += 1;
    }
};

/// out[t·m + o] for n ≥ 1 activation rows at `a` and m weight rows of k at `w`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm<const F: u8>(w: *const u8, a: *const BlockQ8, out: *mut f32, n: usize, k: usize, m: usize) {
    let np = k / QK;
    let row_bytes = np / pieces(F) * block_bytes(F);
    SCRATCH.with_borrow_mut(|s| {
        // Nothing here calls back into code that could borrow the scratch again.
        s.panels.resize(np, std::mem::zeroed());
        s.sums.resize(TOKEN_BLOCK * np, TokenSums::default());
        let mut t0 = 0;
        while t0 < n {
            let tn = (n - t0).min(TOKEN_BLOCK);
            let at = a.add(t0 * np);
            if offset(F) > 0 || has_mins16(F) {
                token_sums::<F>(at, tn * np, s.sums.as_mut_ptr());
            }
            let mut o = 0;
            while o < m {
                let rows = (m - o).min(8);
                decode_panels::<F>(w.add(o * row_bytes), row_bytes, rows, s.panels.as_mut_ptr(), np);
                let mut t = 0;
                while t < tn {
                    let c = (tn - t).min(TILE_TOKENS);
                    let (ap, sp, op) = (at.add(t * np), s.sums.as_ptr().add(t * np), out.add((t0 + t) * m + o));
                    match c {
                        4 => tile::<F, 4>(s.panels.as_ptr(), ap, sp, np, op, m, rows),
                        3 => tile::<F, 3>(s.panels.as_ptr(), ap, sp, np, op, m, rows),
                        2 => tile::<F, 2>(s.panels.as_ptr(), ap, sp, np, op, m, rows),
                        _ => tile::<F, 1>(s.panels.as_ptr(), ap, sp, np, op, m, rows),
                    }
                    t += c;
                }
                o += rows;
            }
            t0 += tn;
        }
    })
}

/// [`TokenSums`] of `blocks` activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn token_sums<const F: u8>(a: *const BlockQ8, blocks: usize, out: *mut TokenSums) {
    for i in 0..blocks {
        let q = _mm256_loadu_si256((*a.add(i)).qs.as_ptr().cast());
        // i16 lane i: a₂ᵢ + a₂ᵢ₊₁; dword c: the two pairs of chunk c. Adding the dwords of each 128-bit
        // half as i16 pairs gives the pair sums of chunks 0..4 and 4..8.
        let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        let pairs = _mm256_add_epi16(pairs, _mm256_shuffle_epi32::<0b0100_1110>(pairs));
        let pairs = _mm256_add_epi16(pairs, _mm256_shuffle_epi32::<0b1011_0001>(pairs));
        let halves = [_mm256_castsi256_si128(pairs), _mm256_extracti128_si256::<1>(pairs)];
        let neg_off = _mm_set1_epi16(-offset(F) as i16);
        let init = if group(F) == 8 {
            [_mm_cvtsi128_si32(_mm_mullo_epi16(_mm_add_epi16(halves[0], halves[1]), neg_off)) as u32, 0]
        } else {
            halves.map(|h| _mm_cvtsi128_si32(_mm_mullo_epi16(h, neg_off)) as u32)
        };
        // Each half's two pair sums added: Σ a over elements 0..16 and 16..32.
        let h = halves.map(|v| _mm_cvtsi128_si32(_mm_madd_epi16(v, _mm_set1_epi16(1))) as u16 as u32);
        *out.add(i) = TokenSums { init, h: h[0] | h[1] << 16 };
    }
}

/// 8×8 transpose of dwords: out[c] dword r = rows[r] dword c.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose(r: &[__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (x, y) = (r[2 * (i / 2)], r[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(x, y)
        } else {
            _mm256_unpackhi_epi32(x, y)
        }
    });
    // t[2p] = r[2p][0] r[2p+1][0] r[2p][1] r[2p+1][1] | (dwords 4, 5); t[2p+1]: dwords 2, 3 | 6, 7.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (quad, col) = (i / 4, i % 4);
        let (x, y) = (t[4 * quad + col / 2], t[4 * quad + 2 + col / 2]);
        if col % 2 == 0 {
            _mm256_unpacklo_epi64(x, y)
        } else {
            _mm256_unpackhi_epi64(x, y)
        }
    });
    // u[4q + c] = rows 4q..4q+4 of dword c | of dword c + 4.
    std::array::from_fn(|c| {
        if c < 4 {
            _mm256_permute2x128_si256::<0x20>(u[c], u[4 + c])
        } else {
            _mm256_permute2x128_si256::<0x31>(u[c - 4], u[c])
        }
    })
}

/// Both i16 of a dword set to the low (h = 0) or high (h = 1) half of a scale pair.
fn dup(pair: u32, h: usize) -> u32 {
    let v = (pair >> (16 * h)) & 0xFFFF;
    v | v << 16
}

/// Decodes the `rows` (≤ 8) weight rows at `w` into `np` panels, writing only the fields format F uses;
/// missing rows get zero codes and scales.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_panels<const F: u8>(w: *const u8, row_bytes: usize, rows: usize, panels: *mut Panel, np: usize) {
    let (bytes, pp) = (block_bytes(F), pieces(F));
    let zero = Scales { d: [0.0; 8], m: [0.0; 8], sc: [0; 8], mins: [0; 8], dmin: 0.0 };
    for b in 0..np / pp {
        let p = |r: usize| w.add(r * row_bytes + b * bytes);
        let s: [Scales; 8] = std::array::from_fn(|r| if r < rows { scales::<F>(p(r)) } else { zero });
        for j in 0..pp {
            let rowcodes = std::array::from_fn(|r| if r < rows { codes::<F>(p(r), j) } else { _mm256_setzero_si256() });
            let panel = &mut *panels.add(b * pp + j);
            panel.codes = transpose(&rowcodes);
            // Lane r of a field of row r's scales.
            let f32s = |f: fn(&Scales, usize) -> f32| {
                _mm256_loadu_ps(std::array::from_fn::<f32, 8, _>(|r| f(&s[r], j)).as_ptr())
            };
            let u32s = |f: fn(&Scales, usize) -> u32| {
                _mm256_loadu_si256(std::array::from_fn::<u32, 8, _>(|r| f(&s[r], j)).as_ptr().cast())
            };
            panel.d = f32s(|s, j| s.d[j]);
            if has_min(F) {
                panel.m = f32s(|s, j| s.m[j]);
            }
            if sub16(F) {
                panel.sc = [u32s(|s, j| dup(s.sc[j], 0)), u32s(|s, j| dup(s.sc[j], 1))];
            }
            if has_mins16(F) {
                panel.mins = u32s(|s, j| s.mins[j]);
                panel.dmin = f32s(|s, _| s.dmin);
            }
        }
    }
}

/// T tokens (activation rows at `a`, `np` blocks apart; their half sums at `sums`) against the 8 rows
/// of `panels`: out[t·ldo + r] for r < rows.
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays unroll fully
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const F: u8, const T: usize>(
    panels: *const Panel,
    a: *const BlockQ8,
    sums: *const TokenSums,
    np: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for j in 0..np {
        let p = &*panels.add(j);
        let mut isum = [_mm256_setzero_si256(); T];
        let mut s16 = [_mm256_setzero_si256(); T];
        for c in 0..8 {
            let wc = p.codes[c];
            let wabs = if signed(F) { _mm256_sign_epi8(wc, wc) } else { wc };
            for t in 0..T {
                if offset(F) > 0 && c % group(F) == 0 {
                    s16[t] = _mm256_set1_epi32((*sums.add(t * np + j)).init[c / 4] as i32);
                }
                let q = (*a.add(t * np + j)).qs.as_ptr().add(4 * c);
                let av = _mm256_set1_epi32(q.cast::<i32>().read_unaligned());
                if signed(F) {
                    let pairs = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wc));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(pairs, ones));
                } else {
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wc, av));
                    if (c + 1) % group(F) == 0 {
                        let mult = if sub16(F) { p.sc[c / 4] } else { ones };
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], mult));
                        s16[t] = _mm256_setzero_si256();
                    }
                }
            }
        }
        for t in 0..T {
            let ab = &*a.add(t * np + j);
            let da = _mm256_set1_ps(ab.d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(p.d, da), acc[t]);
            if has_min(F) {
                acc[t] = _mm256_fmadd_ps(p.m, _mm256_set1_ps(ab.s), acc[t]);
            }
            if has_mins16(F) {
                let h = _mm256_set1_epi32((*sums.add(t * np + j)).h as i32);
                let msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(h, p.mins));
                acc[t] = _mm256_fnmadd_ps(msum, _mm256_mul_ps(p.dmin, da), acc[t]);
            }
        }
    }
    for t in 0..T {
        if rows == 8 {
            _mm256_storeu_ps(out.add(t * ldo), acc[t]);
        } else {
            let mut v = [0.0f32; 8];
            _mm256_storeu_ps(v.as_mut_ptr(), acc[t]);
            std::ptr::copy_nonoverlapping(v.as_ptr(), out.add(t * ldo), rows);
        }
    }
}
