//! The 256-element k-quant super-blocks: ggml's `quantize_row_q2_K_ref` … `quantize_row_q6_K_ref`, the weighted
//! `quantize_row_q2_K_impl` … `quantize_row_q6_K_impl` used with an importance matrix, and the scale searches they
//! share with the weighted 32-element formats.
//!
//! Every quantizer has the same shape: a search per sub-block for its codes and its float scale (and min), then
//! those scales quantized to small integers against the super-block's f16 `d` (and `dmin`), then every code
//! recomputed against the scale as it will be dequantized. Sub-blocks whose stored scale is 0 keep their codes from
//! the search, as in ggml.

use std::array::from_fn;

use half::f16;

use super::{nearest_int, part, part_mut, signed_absmax, Block, Weighted};
use crate::dequant::{unpack_q3k_scales, unpack_scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};

/// ggml's GROUP_MAX_EPS: below this largest magnitude a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// The grid of `make_qkx2_quants`/`make_qkx3_quants`: inverse scales (nmax + rmin + rdelta·is)/(max − min) for
/// is = 0..=nstep, each error summed as |diff| (`absolute_error`) or diff².
pub(super) struct Search {
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    absolute_error: bool,
}

/// The grid every weighted search with a min uses (`make_qkx3_quants(..., -0.9f, 0.05f, 36, false)`).
pub(super) const WEIGHTED_MIN_SEARCH: Search = Search { rmin: -0.9, rdelta: 0.05, nstep: 36, absolute_error: false };
const Q2K_SEARCH: Search = Search { rmin: -0.5, rdelta: 0.1, nstep: 15, absolute_error: true };
const Q4K_SEARCH: Search = Search { rmin: -1.0, rdelta: 0.1, nstep: 20, absolute_error: false };
const Q5K_SEARCH: Search = Search { rmin: -0.5, rdelta: 0.1, nstep: 15, absolute_error: false };

/// ggml `make_qx_quants` with `rmse_type` 1, the only one its quantizers use. Symmetric codes
/// nmax + clamp(round(x·iscale), −nmax, nmax − 1) for 19 inverse scales around −nmax/max; keeps the one whose codes
/// maximize (Σw·x·l)²/Σw·l², i.e. minimize the weighted squared error at their least-squares scale Σw·x·l/Σw·l²,
/// which it returns. Weights default to x².
pub(super) fn make_qx_quants<const N: usize>(
    x: &[f32; N],
    nmax: i32,
    weights: Option<&[f32; N]>,
    codes: &mut [u8; N],
) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        *codes = [0; N];
        return 0.0;
    }
    let weight = |i: usize| weights.map_or(x[i] * x[i], |w| w[i]);
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (i, &v) in x.iter().enumerate() {
            let (w, l) = (weight(i), level(iscale, v) as f32);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let set_codes = |iscale: f32, codes: &mut [u8; N]| *codes = x.map(|v| (nmax + level(iscale, v)) as u8);

    let iscale = -(nmax as f32) / max;
    set_codes(iscale, codes);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_codes(iscale, codes);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml `make_q3_quants` with `do_rmse`, as Q3_K calls it (nmax 4): codes for the scale max/−4, then up to five
/// passes that move each code to its best value given the others' least-squares scale (weights x²), keeping a move
/// only if the fit improves. Returns the least-squares scale; codes are biased by 4.
fn make_q3_quants(x: &[f32; 16], codes: &mut [u8; 16]) -> f32 {
    const NMAX: i32 = 4;
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        *codes = [0; 16];
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let mut levels = x.map(|v| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1));
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (&v, &l) in x.iter().zip(&levels) {
        let (w, l) = (v * v, l as f32);
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (&v, l) in x.iter().zip(levels.iter_mut()) {
            let (w, old) = (v * v, *l as f32);
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != *l {
                    let new = new_l as f32;
                    slx += w * v * new;
                    sl2 += w * new * new;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    *codes = levels.map(|l| (l + NMAX) as u8);
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml `make_qkx2_quants`, and `make_qkx3_quants` given weights (every caller gives them; the two then compute the
/// same): asymmetric codes 0..=nmax for value ≈ scale·code − min with min ≥ 0. Starts from the grid spanning
/// [min(x, 0), max(x)], then for each inverse scale of `search` fits scale and min to its codes by weighted least
/// squares and keeps the fit of smallest weighted error. Returns (scale, min).
pub(super) fn make_qkx_quants<const N: usize>(
    x: &[f32; N],
    weights: &[f32; N],
    nmax: i32,
    search: &Search,
    codes: &mut [u8; N],
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        *codes = [0; N];
        return (0.0, -min);
    }
    let level = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
    let error = |scale: f32, min: f32, codes: &[u8; N]| {
        let mut total = 0.0f32;
        for ((&v, &w), &c) in x.iter().zip(weights).zip(codes) {
            let diff = scale * f32::from(c) + min - v;
            total += w * if search.absolute_error { diff.abs() } else { diff * diff };
        }
        total
    };

    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    *codes = x.map(|v| level(iscale, v, min));
    let mut best_error = error(scale, min, codes);
    for is in 0..=search.nstep {
        let iscale = (search.rmin + search.rdelta * is as f32 + nmax as f32) / (max - min);
        let trial = x.map(|v| level(iscale, v, min));
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((&v, &w), &c) in x.iter().zip(weights).zip(&trial) {
            let l = f32::from(c);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            // The fit wants a positive offset, which the format cannot hold: refit the scale alone.
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let this_error = error(this_scale, this_min, &trial);
            if this_error < best_error {
                *codes = trial;
                best_error = this_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml `make_qp_quants`: quantizes non-negative sub-block scales (or mins) `x` to codes 0..=nmax against one scale,
/// chosen among 9 candidates around max/nmax by weighted squared error and then refined like `make_q3_quants`.
/// Returns the least-squares scale.
fn make_qp_quants<const N: usize>(x: &[f32; N], nmax: i32, weights: &[f32; N], codes: &mut [u8; N]) -> f32 {
    let max = x.iter().fold(0.0f32, |max, &v| if max > v { max } else { v });
    if max < GROUP_MAX_EPS {
        *codes = [0; N];
        return 0.0;
    }
    let squared_error = |scale: f32, levels: &[i32; N]| {
        let mut total = 0.0f32;
        for ((&v, &w), &l) in x.iter().zip(weights).zip(levels) {
            let diff = v - scale * l as f32;
            total += w * diff * diff;
        }
        total
    };
    let mut iscale = nmax as f32 / max;
    // ggml stores these first codes in uint8_t without clamping, and measures the error with the stored values.
    let first = x.map(|v| i32::from(nearest_int(iscale * v) as u8));
    let mut best = squared_error(1.0 / iscale, &first);
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let levels = x.map(|v| nearest_int(iscale_is * v).min(nmax));
        let err = squared_error(1.0 / iscale_is, &levels);
        if err < best {
            best = err;
            iscale = iscale_is;
        }
    }

    // The codes live in uint8_t from here on: a negative level (only possible for negative input) wraps, and ggml
    // goes on computing with the wrapped value.
    *codes = x.map(|v| nearest_int(iscale * v).min(nmax) as u8);
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for ((&v, &w), &c) in x.iter().zip(weights).zip(codes.iter()) {
        let l = f32::from(c);
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    for _ in 0..5 {
        let mut changed = false;
        for ((&v, &w), c) in x.iter().zip(weights).zip(codes.iter_mut()) {
            let old = f32::from(*c);
            let mut slx = sumlx - w * v * old;
            let mut sl2 = suml2 - w * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != i32::from(*c) {
                    let new = new_l as f32;
                    slx += w * v * new;
                    sl2 += w * new * new;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *c = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The largest value, or 0 if none is positive (ggml's `if (v > max) max = v` from 0).
fn positive_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |max, &v| if v > max { v } else { max })
}

/// Σ x² over the super-block, accumulated in order.
fn sum_squares(x: &[f32; QK_K]) -> f32 {
    x.iter().fold(0.0f32, |s, &v| s + v * v)
}

/// The weights of the weighted k-quant searches: importance · sqrt(σ² + x²), and their sum.
fn sub_block_weights<const N: usize>(x: &[f32; N], importance: &[f32; N], sigma2: f32) -> ([f32; N], f32) {
    let weights: [f32; N] = from_fn(|l| importance[l] * (sigma2 + x[l] * x[l]).sqrt());
    let sum = weights.iter().fold(0.0f32, |s, &w| s + w);
    (weights, sum)
}

/// Q2_K/Q3_K `qs`: byte `32·h + l` holds the 2-bit codes of elements `128·h + l + 32·k` at bits `2k`.
pub(super) fn pack_two_bits(codes: &[u8; QK_K]) -> [u8; QK_K / 4] {
    from_fn(|i| {
        let (h, l) = (i / 32, i % 32);
        let c = |k: usize| codes[128 * h + l + 32 * k];
        c(0) | (c(1) << 2) | (c(2) << 4) | (c(3) << 6)
    })
}

// ---- Q2_K

pub(super) fn q2k(x: &[f32; QK_K]) -> BlockQ2K {
    let mut codes = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
    for j in 0..16 {
        let xs = part::<16>(x, j);
        let weights = xs.map(f32::abs);
        (scales[j], mins[j]) = make_qkx_quants(xs, &weights, 3, &Q2K_SEARCH, part_mut(&mut codes, j));
    }
    let (max_scale, max_min) = (positive_max(&scales), positive_max(&mins));
    // Scales in the low nibbles, mins in the high ones, both as multiples of their maximum / 15.
    let mut packed = [0u8; 16];
    let mut d = f16::ZERO;
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (p, &s) in packed.iter_mut().zip(&scales) {
            *p = nearest_int(iscale * s) as u8;
        }
        d = f16::from_f32(max_scale / 15.0);
    }
    let mut dmin = f16::ZERO;
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (p, &m) in packed.iter_mut().zip(&mins) {
            *p |= (nearest_int(iscale * m) << 4) as u8;
        }
        dmin = f16::from_f32(max_min / 15.0);
    }
    requantize_q2k(x, d, dmin, &packed, &mut codes);
    BlockQ2K { scales: packed, qs: pack_two_bits(&codes), d, dmin }
}

pub(super) fn q2k_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockQ2K {
    let sigma2 = sum_squares(x) / QK_K as f32;
    let mut codes = [0u8; QK_K];
    let (mut scales, mut mins, mut sw) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
    for j in 0..16 {
        let xs = part::<16>(x, j);
        let (weights, sum) = sub_block_weights(xs, part(w.importance, j), sigma2);
        sw[j] = sum;
        (scales[j], mins[j]) = make_qkx_quants(xs, &weights, 3, &WEIGHTED_MIN_SEARCH, part_mut(&mut codes, j));
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let d = f16::from_f32(make_qp_quants(&scales, 15, &sw, &mut ls));
    let dmin = f16::from_f32(make_qp_quants(&mins, 15, &sw, &mut lm));
    let packed = from_fn(|j| ls[j] | (lm[j] << 4));
    requantize_q2k(x, d, dmin, &packed, &mut codes);
    BlockQ2K { scales: packed, qs: pack_two_bits(&codes), d, dmin }
}

/// Recomputes the codes 0..=3 of each sub-block against its stored scale and min.
fn requantize_q2k(x: &[f32; QK_K], d: f16, dmin: f16, packed: &[u8; 16], codes: &mut [u8; QK_K]) {
    for (j, &p) in packed.iter().enumerate() {
        let scale = d.to_f32() * f32::from(p & 0x0F);
        if scale == 0.0 {
            continue;
        }
        let min = dmin.to_f32() * f32::from(p >> 4);
        for (c, &v) in part_mut::<16>(codes, j).iter_mut().zip(part::<16>(x, j)) {
            *c = nearest_int((v + min) / scale).clamp(0, 3) as u8;
        }
    }
}

// ---- Q3_K

pub(super) fn q3k(x: &[f32; QK_K]) -> BlockQ3K {
    let mut codes = [0u8; QK_K];
    let scales: [f32; 16] = from_fn(|j| make_q3_quants(part(x, j), part_mut(&mut codes, j)));
    let max_scale = signed_absmax(&scales);
    let (packed, d) = if max_scale != 0.0 {
        // Signed 6-bit levels −32..=31, the largest-magnitude scale at −32.
        let iscale = -32.0 / max_scale;
        let levels = scales.map(|s| (i32::from(nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8);
        (pack_q3k_scales(&levels), f16::from_f32(1.0 / iscale))
    } else {
        ([0; 12], f16::ZERO)
    };
    finish_q3k(x, d, packed, codes)
}

pub(super) fn q3k_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockQ3K {
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut codes = [0u8; QK_K];
    let (mut scales, mut sw) = ([0.0f32; 16], [0.0f32; 16]);
    for j in 0..16 {
        let xs = part::<16>(x, j);
        let (weights, sum) = sub_block_weights(xs, part(w.importance, j), sigma2);
        sw[j] = sum;
        scales[j] = make_qx_quants(xs, 4, Some(&weights), part_mut(&mut codes, j));
    }
    let mut levels = [0u8; 16];
    let d = f16::from_f32(make_qx_quants(&scales, 32, Some(&sw), &mut levels));
    finish_q3k(x, d, pack_q3k_scales(&levels), codes)
}

/// Q3_K scale packing (see `unpack_q3k_scales`) of levels 0..=63, which stand for level − 32.
fn pack_q3k_scales(levels: &[u8; 16]) -> [u8; 12] {
    let mut packed = [0u8; 12];
    for (j, &l) in levels.iter().enumerate() {
        if j < 8 {
            packed[j] = l & 0x0F;
        } else {
            packed[j - 8] |= (l & 0x0F) << 4;
        }
        packed[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
    }
    packed
}

/// Recomputes the codes against the stored scales, then splits them into the high-bit mask and 2-bit `qs`.
fn finish_q3k(x: &[f32; QK_K], d: f16, scales: [u8; 12], mut codes: [u8; QK_K]) -> BlockQ3K {
    for (j, &sc) in unpack_q3k_scales(&scales).iter().enumerate() {
        let scale = d.to_f32() * f32::from(sc);
        if scale == 0.0 {
            continue;
        }
        for (c, &v) in part_mut::<16>(&mut codes, j).iter_mut().zip(part::<16>(x, j)) {
            *c = (nearest_int(v / scale).clamp(-4, 3) + 4) as u8;
        }
    }
    let (hmask, qs) = pack_q3k_codes(codes);
    BlockQ3K { hmask, qs, scales, d }
}

/// Splits Q3_K codes 0..=7 into the high-bit mask (element e at bit e / 32 of byte e % 32) and the 2-bit `qs`.
pub(super) fn pack_q3k_codes(mut codes: [u8; QK_K]) -> ([u8; QK_K / 8], [u8; QK_K / 4]) {
    let mut hmask = [0u8; QK_K / 8];
    for (e, c) in codes.iter_mut().enumerate() {
        if *c > 3 {
            hmask[e % 32] |= 1 << (e / 32);
            *c -= 4;
        }
    }
    (hmask, pack_two_bits(&codes))
}

// ---- Q4_K and Q5_K

/// A Q4_K/Q5_K super-block before its codes are packed.
pub(super) struct ScaleMin {
    pub(super) d: f16,
    pub(super) dmin: f16,
    pub(super) scales: [u8; 12],
    pub(super) codes: [u8; QK_K],
}

/// `quantize_row_q4_K_ref`/`quantize_row_q5_K_ref` up to the packing of codes 0..=nmax.
fn scale_min(x: &[f32; QK_K], nmax: i32, search: &Search) -> ScaleMin {
    let mut codes = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        let xs = part::<32>(x, j);
        let av_x = (xs.iter().fold(0.0f32, |s, &v| s + v * v) / 32.0).sqrt();
        let weights = xs.map(|v| av_x + v.abs());
        (scales[j], mins[j]) = make_qkx_quants(xs, &weights, nmax, search, part_mut(&mut codes, j));
    }
    let (max_scale, max_min) = (positive_max(&scales), positive_max(&mins));
    let inverse = |max: f32| if max > 0.0 { 63.0 / max } else { 0.0 };
    let (inv_scale, inv_min) = (inverse(max_scale), inverse(max_min));
    let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
    let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
    let (d, dmin) = (f16::from_f32(max_scale / 63.0), f16::from_f32(max_min / 63.0));
    finish_scale_min(x, d, dmin, pack_scale_min_k4(&ls, &lm), nmax, codes)
}

/// `quantize_row_q4_K_impl`/`quantize_row_q5_K_impl` up to the packing of codes 0..=nmax. (Q5_K's impl clamps the
/// 6-bit levels to 63 and Q4_K's does not; `make_qp_quants` never exceeds 63 for the non-negative scales and mins
/// the searches return, so both are this.)
fn scale_min_weighted(x: &[f32; QK_K], importance: &[f32; QK_K], nmax: i32) -> ScaleMin {
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut codes = [0u8; QK_K];
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        let xs = part::<32>(x, j);
        let (weights, sum) = sub_block_weights(xs, part(importance, j), sigma2);
        sw[j] = sum;
        (scales[j], mins[j]) = make_qkx_quants(xs, &weights, nmax, &WEIGHTED_MIN_SEARCH, part_mut(&mut codes, j));
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d = f16::from_f32(make_qp_quants(&scales, 63, &sw, &mut ls));
    let dmin = f16::from_f32(make_qp_quants(&mins, 63, &sw, &mut lm));
    finish_scale_min(x, d, dmin, pack_scale_min_k4(&ls, &lm), nmax, codes)
}

/// Q4_K/Q5_K scale packing (see `unpack_scale_min_k4`), with ggml's byte arithmetic.
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut packed = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            packed[j] = ls[j];
            packed[j + 4] = lm[j];
        } else {
            packed[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            packed[j - 4] |= (ls[j] >> 4) << 6;
            packed[j] |= (lm[j] >> 4) << 6;
        }
    }
    packed
}

/// Recomputes the codes 0..=nmax of each sub-block against its stored scale and min.
fn finish_scale_min(
    x: &[f32; QK_K],
    d: f16,
    dmin: f16,
    scales: [u8; 12],
    nmax: i32,
    mut codes: [u8; QK_K],
) -> ScaleMin {
    let (sc, m) = unpack_scale_min_k4(&scales);
    for j in 0..8 {
        let scale = d.to_f32() * f32::from(sc[j]);
        if scale == 0.0 {
            continue;
        }
        let min = dmin.to_f32() * f32::from(m[j]);
        for (c, &v) in part_mut::<32>(&mut codes, j).iter_mut().zip(part::<32>(x, j)) {
            *c = nearest_int((v + min) / scale).clamp(0, nmax) as u8;
        }
    }
    ScaleMin { d, dmin, scales, codes }
}

pub(super) fn q4k_block(s: ScaleMin) -> BlockQ4K {
    // Byte 32·c + l: sub-block 2c's code l low, sub-block 2c + 1's high.
    let qs = from_fn(|i| {
        let (c, l) = (i / 32, i % 32);
        s.codes[64 * c + l] | (s.codes[64 * c + 32 + l] << 4)
    });
    BlockQ4K { d: s.d, dmin: s.dmin, scales: s.scales, qs }
}

pub(super) fn q5k_block(s: ScaleMin) -> BlockQ5K {
    let mut qh = [0u8; QK_K / 8];
    for (e, &c) in s.codes.iter().enumerate() {
        qh[e % 32] |= ((c >> 4) & 1) << (e / 32);
    }
    let qs = from_fn(|i| {
        let (c, l) = (i / 32, i % 32);
        (s.codes[64 * c + l] & 0x0F) | ((s.codes[64 * c + 32 + l] & 0x0F) << 4)
    });
    BlockQ5K { d: s.d, dmin: s.dmin, scales: s.scales, qh, qs }
}

pub(super) fn q4k(x: &[f32; QK_K]) -> BlockQ4K {
    q4k_block(scale_min(x, 15, &Q4K_SEARCH))
}

pub(super) fn q4k_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockQ4K {
    q4k_block(scale_min_weighted(x, w.importance, 15))
}

pub(super) fn q5k(x: &[f32; QK_K]) -> BlockQ5K {
    q5k_block(scale_min(x, 31, &Q5K_SEARCH))
}

pub(super) fn q5k_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockQ5K {
    q5k_block(scale_min_weighted(x, w.importance, 31))
}

// ---- Q6_K

pub(super) fn q6k(x: &[f32; QK_K]) -> BlockQ6K {
    q6k_with(x, None)
}

/// `quantize_row_q6_K_impl`: the importance itself weights the search, without Q4_K's σ² term.
pub(super) fn q6k_weighted(x: &[f32; QK_K], w: Weighted<QK_K>) -> BlockQ6K {
    q6k_with(x, Some(w.importance))
}

fn q6k_with(x: &[f32; QK_K], importance: Option<&[f32; QK_K]>) -> BlockQ6K {
    let mut codes = [0u8; QK_K];
    let scales: [f32; 16] =
        from_fn(|j| make_qx_quants(part::<16>(x, j), 32, importance.map(|w| part(w, j)), part_mut(&mut codes, j)));
    let max_scale = signed_absmax(&scales);
    if max_scale.abs() < GROUP_MAX_EPS {
        return BlockQ6K { ql: [0; QK_K / 2], qh: [0; QK_K / 4], scales: [0; 16], d: f16::ZERO };
    }
    // Signed 8-bit levels, the largest-magnitude scale at −128.
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let levels = scales.map(|s| nearest_int(iscale * s).min(127) as i8);
    for (j, &level) in levels.iter().enumerate() {
        let scale = d.to_f32() * f32::from(level);
        if scale == 0.0 {
            continue;
        }
        for (c, &v) in part_mut::<16>(&mut codes, j).iter_mut().zip(part::<16>(x, j)) {
            *c = (nearest_int(v / scale).clamp(-32, 31) + 32) as u8;
        }
    }
    let (ql, qh) = pack_q6k_codes(&codes);
    BlockQ6K { ql, qh, scales: levels, d }
}

/// Q6_K codes 0..=63 as stored: in half h, element 128·h + 32·k + l has its low nibble in ql[64·h + 32·(k % 2) + l]
/// (high half of the byte for k ≥ 2) and its top two bits at bits 2k of qh[32·h + l].
pub(super) fn pack_q6k_codes(codes: &[u8; QK_K]) -> ([u8; QK_K / 2], [u8; QK_K / 4]) {
    let (mut ql, mut qh) = ([0u8; QK_K / 2], [0u8; QK_K / 4]);
    for (e, &c) in codes.iter().enumerate() {
        let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
        ql[64 * h + 32 * (k % 2) + l] |= (c & 0x0F) << (4 * (k / 2));
        qh[32 * h + l] |= (c >> 4) << (2 * k);
    }
    (ql, qh)
}

impl Block for BlockQ2K {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.scales);
        out.extend_from_slice(&self.qs);
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.dmin.to_le_bytes());
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite() && self.dmin.is_finite()
    }
}

impl Block for BlockQ3K {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hmask);
        out.extend_from_slice(&self.qs);
        out.extend_from_slice(&self.scales);
        out.extend_from_slice(&self.d.to_le_bytes());
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

impl Block for BlockQ4K {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.dmin.to_le_bytes());
        out.extend_from_slice(&self.scales);
        out.extend_from_slice(&self.qs);
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite() && self.dmin.is_finite()
    }
}

impl Block for BlockQ5K {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.d.to_le_bytes());
        out.extend_from_slice(&self.dmin.to_le_bytes());
        out.extend_from_slice(&self.scales);
        out.extend_from_slice(&self.qh);
        out.extend_from_slice(&self.qs);
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite() && self.dmin.is_finite()
    }
}

impl Block for BlockQ6K {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ql);
        out.extend_from_slice(&self.qh);
        out.extend(self.scales.iter().map(|&s| s as u8));
        out.extend_from_slice(&self.d.to_le_bytes());
    }

    fn scales_finite(&self) -> bool {
        self.d.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &impl Block) -> Vec<u8> {
        let mut out = Vec::new();
        b.write(&mut out);
        out
    }

    fn ramp() -> [f32; QK_K] {
        from_fn(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 + if i % 64 < 8 { 0.4 } else { 0.0 })
    }

    #[test]
    fn written_blocks_read_back_as_the_same_struct() {
        let x = ramp();
        let b = q2k(&x);
        assert_eq!(BlockQ2K::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q3k(&x);
        assert_eq!(BlockQ3K::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q4k(&x);
        assert_eq!(BlockQ4K::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q5k(&x);
        assert_eq!(BlockQ5K::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
        let b = q6k(&x);
        assert_eq!(BlockQ6K::from_bytes(bytes(&b).as_slice().try_into().unwrap()), b);
    }

    #[test]
    fn scale_packings_invert_the_dequantizers_unpacking() {
        let ls = [63, 1, 2, 3, 40, 50, 17, 0];
        let lm = [0, 5, 63, 7, 33, 12, 60, 9];
        assert_eq!(unpack_scale_min_k4(&pack_scale_min_k4(&ls, &lm)), (ls, lm));
        let levels: [u8; 16] = from_fn(|j| (j * 29 % 64) as u8);
        assert_eq!(unpack_q3k_scales(&pack_q3k_scales(&levels)), levels.map(|l| l as i8 - 32));
    }

    #[test]
    fn qx_search_finds_an_exact_grid() {
        // Values 0.25·l for l in −4..=3: the first candidate, max/−nmax = 0.25, fits them exactly.
        let x: [f32; 16] = from_fn(|i| 0.25 * ((i % 8) as f32 - 4.0));
        let mut codes = [0u8; 16];
        let scale = make_qx_quants(&x, 4, None, &mut codes);
        assert_eq!(scale, 0.25);
        assert_eq!(codes, from_fn(|i| (i % 8) as u8));
    }

    #[test]
    fn qkx_search_fits_scale_and_min() {
        // x = 0.1·l − 0.3 for codes l in 0..=15: an exact fit with min 0.3.
        let x: [f32; 32] = from_fn(|i| 0.1 * (i % 16) as f32 - 0.3);
        let weights = [1.0f32; 32];
        let mut codes = [0u8; 32];
        let (scale, min) = make_qkx_quants(&x, &weights, 15, &Q4K_SEARCH, &mut codes);
        assert!((scale - 0.1).abs() < 1e-6 && (min - 0.3).abs() < 1e-6, "{scale} {min}");
        assert_eq!(codes, from_fn(|i| (i % 16) as u8));
    }

    #[test]
    fn all_zero_super_blocks_quantize_to_zero_bytes_where_ggml_writes_them() {
        let x = [0.0f32; QK_K];
        assert!(bytes(&q6k(&x)).iter().all(|&b| b == 0));
        assert!(bytes(&q4k(&x)).iter().all(|&b| b == 0));
        assert!(bytes(&q2k(&x)).iter().all(|&b| b == 0));
    }
}
