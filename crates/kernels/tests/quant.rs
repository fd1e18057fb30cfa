//! The quantized kernels: every path against the scalar reference, and the reference against an f64
//! evaluation of dequantize(weights) · dequantize(quantize(x)), with the weights dequantized by an
//! independent reading of the layouts: lowbit-formats' dequantizers (bit-exact against PyPI `gguf`) for
//! the formats it knows, and for TQ1_0, TQ2_0 and MXFP4 the plain loops of ggml's `dequantize_row_*`
//! written out below, checked against `gguf`'s output on the blocks of tests/data.
//!
//! Activation quantization must agree bit for bit across paths (same scalar scale arithmetic, same
//! products, round half to even). For the matmul, every path computes the same exact integers per piece
//! of 32 weights; what differs is how the float terms are added.
//!
//! Tolerances. Write each weight as w_i = s_i + o_i, s_i its scaled code and o_i its format's offset
//! (Q4_1/Q5_1's m, −dmin·min of Q4_K/Q5_K/Q2_K; |o_i| ≤ ob, a bound read from the block's offset field).
//! Let mag = Σ_i (|w_i| + 2·ob)·|x̃_i| ≥ Σ_i (|s_i| + |o_i|)·|x̃_i| for one output. Each path forms its
//! result from float terms carrying at most 4 roundings each (scale products, s_a = d_a·Σq), added with
//! at most k/32 + 8 additions along any path of the summation tree, and the reference's f32 weights carry
//! 3 roundings; by the standard bound (Higham, Accuracy and Stability of Numerical Algorithms, §3.1) each
//! is within γ_{k/16+10}·mag of the exact value, γ_n = n·u/(1 − n·u), u = 2⁻²⁴; two paths differ by at
//! most twice that. This cannot fail from rounding alone and is still orders of magnitude below the
//! effect of a wrong code, nibble, scale or block. With power-of-two scales and small sums every partial
//! sum is exact, and there the paths must agree exactly.

use lowbit_formats::dequant::dequantize;
use lowbit_formats::DType;
use lowbit_kernels::quant::{self, scalar, ActRounding, BlockQ8, QuantKernels, QuantType, QuantizedActs, QK, QK_K};
use lowbit_testdata::{gamma, Rng};
use proptest::prelude::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn simd_paths() -> impl Iterator<Item = &'static QuantKernels> {
    quant::paths().into_iter().skip(1)
}

/// f16 bits of a normal value with random sign, mantissa and an exponent giving 2⁻¹⁰..2⁵.
fn random_f16(r: &mut Rng) -> u16 {
    let exp = 5 + r.below(16) as u16;
    (r.below(2) as u16) << 15 | exp << 10 | r.below(1024) as u16
}

/// Byte offsets of a block's f16 fields (d, and m or dmin).
fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => &[0],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
        QuantType::TQ1_0 => &[52],
        QuantType::TQ2_0 => &[64],
        QuantType::MXFP4 => &[],
    }
}

/// m rows of k random weights of `ty`: every code and packed-scale byte random, f16 fields normal. With
/// `pow2`, f16 fields are ±1 or ±2 (MXFP4 exponents 1 or 2) and the k-quant sub-scales are kept small
/// (Q4_K/Q5_K ≤ 15, Q6_K in [−16, 15]), so that (with the activations of `pow2_acts`, k ≤ 1024) every
/// product and partial sum is exact: per piece Σ|terms| ≤ 2·15·31·189·2 (Q5_K) or 2·16·32·189·2 (Q6_K) in
/// units of 0.5, times 32 pieces, stays below 2²⁴.
fn random_weights(ty: QuantType, m: usize, k: usize, seed: u64, pow2: bool) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut w: Vec<u8> = (0..m * ty.row_bytes(k)).map(|_| r.below(256) as u8).collect();
    for b in w.chunks_exact_mut(ty.block_bytes()) {
        for &f in f16_fields(ty) {
            let h = if pow2 { [0x3C00u16, 0x4000, 0xBC00, 0xC000][r.below(4) as usize] } else { random_f16(&mut r) };
            b[f..f + 2].copy_from_slice(&h.to_le_bytes());
        }
        match ty {
            QuantType::MXFP4 => b[0] = if pow2 { 128 + r.below(2) as u8 } else { 118 + r.below(16) as u8 },
            QuantType::Q4K | QuantType::Q5K if pow2 => b[4..12].iter_mut().for_each(|v| *v &= 0x0F),
            QuantType::Q6K if pow2 => b[192..208].iter_mut().for_each(|v| *v = ((*v as i8) >> 3) as u8),
            _ => {}
        }
    }
    w
}

/// n·k activations: uniform in [-1, 1) scaled per block by 2^e, e in [-8, 8), with a few outliers.
fn random_acts(n: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(n * k);
    for _ in 0..n * k / QK {
        let scale = 2f32.powi(r.below(16) as i32 - 8);
        x.extend((0..QK).map(|_| r.unit() * scale * if r.below(50) == 0 { 40.0 } else { 1.0 }));
    }
    x
}

/// Activations that quantize exactly: per block one element ±127·d and the rest integers in [-2, 2]
/// times d, d = 1 or 0.5. Then every code is the value / d (Σ|codes| ≤ 189 per block).
fn pow2_acts(n: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(n * k);
    for _ in 0..n * k / QK {
        let d = if r.below(2) == 0 { 1.0 } else { 0.5 };
        let peak = r.below(QK as u64) as usize;
        x.extend((0..QK).map(|i| {
            let q = if i == peak { 127.0 * if r.below(2) == 0 { 1.0 } else { -1.0 } } else { r.below(5) as f32 - 2.0 };
            q * d
        }));
    }
    x
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    scalar::f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// ggml's `dequantize_row_tq1_0`, `_tq2_0` and `_mxfp4`, loop for loop.
fn dequantize_extra(ty: QuantType, block: &[u8]) -> Vec<f32> {
    let mut y = Vec::new();
    match ty {
        QuantType::TQ1_0 => {
            let (qs, qh, d) = (&block[..48], &block[48..52], f16_at(block, 52));
            let pow3 = [1u8, 3, 9, 27, 81, 243];
            let trit = |q: u8, n: usize| ((u16::from(q.wrapping_mul(pow3[n])) * 3) >> 8) as i16;
            for n in 0..5 {
                y.extend(qs[..32].iter().map(|&q| (trit(q, n) - 1) as f32 * d));
            }
            for n in 0..5 {
                y.extend(qs[32..].iter().map(|&q| (trit(q, n) - 1) as f32 * d));
            }
            for n in 0..4 {
                y.extend(qh.iter().map(|&q| (trit(q, n) - 1) as f32 * d));
            }
        }
        QuantType::TQ2_0 => {
            let d = f16_at(block, 64);
            for j in [0, 32] {
                for l in 0..4 {
                    y.extend(block[j..j + 32].iter().map(|&q| (((q >> (2 * l)) & 3) as i8 - 1) as f32 * d));
                }
            }
        }
        QuantType::MXFP4 => {
            let kv = [0i8, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];
            let d = scalar::e8m0_half_to_f32(block[0]);
            y = vec![0.0; 32];
            for j in 0..16 {
                y[j] = f32::from(kv[(block[1 + j] & 15) as usize]) * d;
                y[j + 16] = f32::from(kv[(block[1 + j] >> 4) as usize]) * d;
            }
        }
        _ => unreachable!("{ty:?} is dequantized by lowbit-formats"),
    }
    y
}

/// lowbit-formats' storage type of the same ggml name, for the formats dequantized by lowbit-formats here
/// (the others by `dequantize_extra`).
fn dtype(ty: QuantType) -> Option<DType> {
    match ty {
        QuantType::TQ1_0 | QuantType::TQ2_0 | QuantType::MXFP4 => None,
        _ => (0..=u8::MAX.into()).filter_map(DType::from_ggml).find(|d| d.name() == ty.name()),
    }
}

/// All of `w` (whole blocks) dequantized to f32 by the independent route.
fn dequantized(ty: QuantType, w: &[u8]) -> Vec<f32> {
    let elems = w.len() / ty.block_bytes() * ty.block_elems();
    match dtype(ty) {
        Some(dt) => dequantize(dt, w, elems).unwrap(),
        None => w.chunks_exact(ty.block_bytes()).flat_map(|b| dequantize_extra(ty, b)).collect(),
    }
}

/// A bound on |offset| of the elements of a block (see the module comment).
fn offset_bound(ty: QuantType, block: &[u8]) -> f64 {
    match ty {
        QuantType::Q4_1 | QuantType::Q5_1 => f16_at(block, 2).abs() as f64,
        QuantType::Q4K | QuantType::Q5K => f16_at(block, 2).abs() as f64 * 63.0,
        QuantType::Q2K => f16_at(block, 82).abs() as f64 * 15.0,
        _ => 0.0,
    }
}

/// (Σ_i W[o, i]·d_a·q_a[i] in f64, the bound γ_{k/16+10}·mag of the module comment) for one output.
fn reference(ty: QuantType, w: &[u8], wf: &[f32], acts: &[BlockQ8], k: usize, o: usize) -> (f64, f64) {
    let row = &w[o * ty.row_bytes(k)..][..ty.row_bytes(k)];
    let wrow = &wf[o * k..][..k];
    let (mut exact, mut mag) = (0.0, 0.0);
    for (i, &wi) in wrow.iter().enumerate() {
        let a = &acts[i / QK];
        let xi = a.d as f64 * a.qs[i % QK] as f64;
        let ob = offset_bound(ty, &row[i / ty.block_elems() * ty.block_bytes()..]);
        exact += wi as f64 * xi;
        mag += (wi.abs() as f64 + 2.0 * ob) * xi.abs();
    }
    (exact, gamma(k / 16 + 10) * mag)
}

fn quantized(x: &[f32], k: usize) -> Vec<BlockQ8> {
    let mut blocks = vec![BlockQ8::default(); x.len() / QK];
    for (xr, br) in x.chunks_exact(k).zip(blocks.chunks_exact_mut(k / QK)) {
        scalar::quantize_row(xr, br);
    }
    blocks
}

/// `x` (rows a multiple of 256 long) rounded by llama.cpp's rule, one super-block at a time.
fn superblocks(x: &[f32]) -> Vec<BlockQ8> {
    let mut blocks = vec![BlockQ8::default(); x.len() / QK];
    for (xs, bs) in x.chunks_exact(QK_K).zip(blocks.chunks_exact_mut(QK_K / QK)) {
        scalar::quantize_superblock(xs.try_into().unwrap(), bs.try_into().unwrap());
    }
    blocks
}

/// Runs `path` and the scalar reference on one problem and checks them against each other (exactly
/// when `exact`) and the reference against the f64 evaluation.
fn check(path: &QuantKernels, ty: QuantType, n: usize, k: usize, m: usize, seed: u64, exact: bool) {
    let w = random_weights(ty, m, k, seed, exact);
    let wf = dequantized(ty, &w);
    let x = if exact { pow2_acts(n, k, seed + 1) } else { random_acts(n, k, seed + 1) };
    let acts = quantized(&x, k);
    let mut got = vec![f32::NAN; n * m];
    let mut want = vec![f32::NAN; n * m];
    (path.matmul)(ty, &w, &acts, &mut got, k);
    scalar::matmul(ty, &w, &acts, &mut want, k);
    let what = format!("{} {} {n}×{k}×{m} seed {seed}", path.name, ty.name());
    for t in 0..n {
        for o in 0..m {
            let (g, e) = (got[t * m + o], want[t * m + o]);
            let (r, tol) = reference(ty, &w, &wf, &acts[t * k / QK..][..k / QK], k, o);
            if exact {
                assert_eq!(g, e, "{what} at ({t}, {o})");
                assert_eq!(e as f64, r, "{what} at ({t}, {o}): reference");
            } else {
                assert!(((g - e) as f64).abs() <= 2.0 * tol, "{what} at ({t}, {o}): {g} vs {e}, tol {:e}", 2.0 * tol);
                assert!((e as f64 - r).abs() <= tol, "{what} at ({t}, {o}): {e} vs f64 {r}, tol {tol:e}");
            }
        }
    }
}

/// Row lengths to test a format on: odd numbers of blocks, SmolLM2's 576 where it is whole blocks (it
/// is not whole super-blocks), and a long row.
fn ks(ty: QuantType) -> Vec<usize> {
    let b = ty.block_elems();
    let mut ks = vec![b, 3 * b, 1024usize.next_multiple_of(b)];
    if 576 % b == 0 {
        ks.insert(2, 576);
    }
    ks
}

#[test]
fn scalar_is_first_and_active_is_last() {
    let paths = quant::paths();
    assert_eq!(paths[0].name, "scalar");
    assert_eq!(quant::active().name, paths.last().unwrap().name);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
        assert_eq!(quant::active().name, "avx2");
    }
}

/// The test-side dequantizers of the formats lowbit-formats lacks equal PyPI `gguf` bit for bit on
/// random blocks (scripts/golden/gen_quant_blocks.py), and so does the scalar kernels' reading of the
/// layouts: piece values d·sc·q + m − dmin·mins of every format, against the independent route.
#[test]
fn pieces_are_the_dequantized_values() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    for ty in [QuantType::TQ1_0, QuantType::TQ2_0, QuantType::MXFP4] {
        let name = ty.name().to_lowercase();
        let blocks = std::fs::read(format!("{dir}/{name}.bin")).unwrap();
        let want: Vec<f32> = std::fs::read(format!("{dir}/{name}.f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(blocks.len() / ty.block_bytes() * ty.block_elems(), want.len(), "{name}");
        let got = dequantized(ty, &blocks);
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: test dequantizer vs gguf");
    }
    for ty in QuantType::ALL {
        let w = random_weights(ty, 4, ty.block_elems(), 7, false);
        let want = dequantized(ty, &w);
        for (b, block) in w.chunks_exact(ty.block_bytes()).enumerate() {
            for j in 0..ty.pieces() {
                let p = scalar::piece(ty, block, j);
                for i in 0..QK {
                    let h = i / 16;
                    let scaled = p.d as f64 * f64::from(p.sc[h]) * f64::from(p.q[i]);
                    let v = scaled + p.m as f64 - p.dmin as f64 * f64::from(p.mins[h]);
                    let e = want[b * ty.block_elems() + j * QK + i] as f64;
                    // The f32 dequantizers round d·sc, its product with q, the offset and the sum: 4 roundings.
                    let tol =
                        4.0 * U * (scaled.abs() + (p.m as f64).abs() + (p.dmin as f64 * f64::from(p.mins[h])).abs());
                    assert!((v - e).abs() <= tol, "{} block {b} piece {j} element {i}: {v} vs {e}", ty.name());
                }
            }
        }
    }
}

#[test]
fn quantize_row_matches_scalar_bit_for_bit() {
    for path in simd_paths() {
        for (blocks, seed) in [(1, 1), (3, 2), (18, 3), (48, 4), (200, 5)] {
            let mut x = random_acts(1, blocks * QK, seed);
            // Exact ties at .5 steps (d = 1): rounding must be half to even in every path.
            x[..QK].iter_mut().enumerate().for_each(|(i, v)| *v = if i == 0 { 127.0 } else { i as f32 - 15.5 });
            if blocks > 2 {
                x[QK..2 * QK].fill(0.0);
                x[2 * QK..3 * QK].fill(-1e-37);
            }
            let (mut got, mut want) = (vec![BlockQ8::default(); blocks], vec![BlockQ8::default(); blocks]);
            (path.quantize_row)(&x, &mut got);
            scalar::quantize_row(&x, &mut want);
            assert_eq!(got, want, "{} {blocks} blocks", path.name);
            assert_eq!(want[0].qs[1..5], [-14, -14, -12, -12]);
        }
    }
}

#[test]
fn quantize_row_non_finite_blocks_become_nan() {
    for path in quant::paths() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut x = random_acts(1, 3 * QK, 9);
            x[QK + 17] = bad;
            let mut b = vec![BlockQ8::default(); 3];
            (path.quantize_row)(&x, &mut b);
            assert!(b[1].d.is_nan() && b[1].s.is_nan() && b[1].qs == [0; QK], "{} {bad}", path.name);
            assert!(b[0].d.is_finite() && b[2].d.is_finite(), "{} {bad}: neighbours", path.name);
        }
    }
}

#[test]
fn quantization_error_is_half_a_step() {
    // |x − d·q| ≤ d/2 (plus rounding of x·(1/d)) for every value: what the QuantLinear bound rests on.
    let x = random_acts(4, 512, 13);
    for (xb, b) in x.chunks_exact(QK).zip(quantized(&x, 512)) {
        for (&v, &q) in xb.iter().zip(&b.qs) {
            let err = (v as f64 - b.d as f64 * q as f64).abs();
            assert!(err <= b.d as f64 * (0.5 + 128.0 * 4.0 * U), "{v} -> {q}·{}", b.d);
        }
        assert_eq!(b.s, b.d * b.qs.iter().map(|&q| q as i32).sum::<i32>() as f32);
    }
}

#[test]
fn matmul_exact_on_edge_shapes() {
    // n covers the GEMV (1..3 rows), the batched kernels' tiles (AVX2: 4 tokens, NEON: 2) with every
    // remainder, and more than one token block (AVX2: 128, NEON: 32); m every remainder of 8-row panels
    // and GEMV groups, and of NEON's 4-row tiles.
    for path in quant::paths() {
        for ty in QuantType::ALL {
            for k in ks(ty) {
                for (n, m) in [(1, 13), (2, 8), (3, 17), (4, 9), (5, 4), (7, 3), (9, 1), (130, 11)] {
                    check(path, ty, n, k, m, (n * 10_000 + k * 10 + m) as u64, true);
                }
            }
        }
    }
}

#[test]
fn matmul_within_rounding_on_random_data() {
    for path in quant::paths() {
        for ty in QuantType::ALL {
            let b = ty.block_elems();
            for (n, k, m) in [(1, 2 * b, 19), (1, 6 * b, 9), (2, 3 * b, 7), (7, 6 * b, 5), (40, b, 10), (3, b, 3)] {
                check(path, ty, n, k, m, (n + k + m) as u64, false);
            }
        }
    }
}

/// A token's outputs do not depend on the batch it comes in: every path computes each output with the
/// same float operations whether it multiplies one activation row or many (on random data, where any
/// difference in the order of additions would show).
#[test]
fn batched_rows_equal_rows_one_at_a_time() {
    for path in quant::paths() {
        for ty in QuantType::ALL {
            let (n, k, m) = (9, 3 * ty.block_elems(), 21);
            let w = random_weights(ty, m, k, 5, false);
            let acts = quantized(&random_acts(n, k, 6), k);
            let mut batched = vec![f32::NAN; n * m];
            (path.matmul)(ty, &w, &acts, &mut batched, k);
            for t in 0..n {
                let mut one = vec![f32::NAN; m];
                (path.matmul)(ty, &w, &acts[t * k / QK..][..k / QK], &mut one, k);
                assert_eq!(one, batched[t * m..][..m], "{} {} token {t}", path.name, ty.name());
            }
        }
    }
}

#[test]
fn public_matmul_is_exact_for_any_thread_count() {
    // Exact data makes the result independent of how work is split, so every thread count must match
    // the scalar reference bit for bit. Decode shapes large enough to go parallel with m not a multiple
    // of the chunk; batches with n not a multiple of the thread count; a batch big enough that
    // quantizing it splits rows across threads.
    for threads in [1, 2, 3] {
        lowbit_kernels::set_threads(threads);
        for ty in QuantType::ALL {
            let b = ty.block_elems();
            for (n, k, m) in [(1, 3 * b, 2003), (1, 1024, 70), (2, b, 50), (5, 3 * b, 17), (70, 1024, 9), (1, b, 1)] {
                let w = random_weights(ty, m, k, 31, true);
                let x = pow2_acts(n, k, 32);
                let mut acts = QuantizedActs::new();
                acts.quantize(&x, n, k);
                assert_eq!(acts.blocks(), quantized(&x, k), "{threads} threads: quantize {n}×{k}");
                assert_eq!((acts.rows(), acts.k()), (n, k));
                let mut want = vec![f32::NAN; n * m];
                scalar::matmul(ty, &w, &quantized(&x, k), &mut want, k);
                let mut got = vec![f32::NAN; n * m];
                quant::matmul_quant(ty, &w, &acts, &mut got, m);
                assert_eq!(got, want, "{threads} threads, {} {n}×{k}×{m}", ty.name());
                let mut got = vec![f32::NAN; n * m];
                quant::matmul_quant_f32(ty, ActRounding::Blocks32, &w, &x, &mut got, n, k, m);
                assert_eq!(got, want, "{threads} threads, {} {n}×{k}×{m} (f32 input)", ty.name());
                // llama.cpp's rounding: one shared scale per super-block for the 256-element formats.
                let llama = if b == QK_K { superblocks(&x) } else { quantized(&x, k) };
                acts.quantize_for(ty, ActRounding::LlamaCpp, &x, n, k);
                assert_eq!(acts.blocks(), llama, "{} {n}×{k}: llama.cpp rounding", ty.name());
                scalar::matmul(ty, &w, &llama, &mut want, k);
                quant::matmul_quant_f32(ty, ActRounding::LlamaCpp, &w, &x, &mut got, n, k, m);
                assert_eq!(got, want, "{threads} threads, {} {n}×{k}×{m} (llama.cpp rounding)", ty.name());
            }
        }
    }
}

#[test]
fn quantized_acts_reuse_shrinks_and_grows() {
    let mut acts = QuantizedActs::new();
    for (n, k) in [(3, 64), (1, 32), (5, 96), (2, 64)] {
        let x = random_acts(n, k, (n * k) as u64);
        acts.quantize(&x, n, k);
        assert_eq!(acts.blocks(), quantized(&x, k), "{n}×{k}");
    }
}

#[test]
fn public_matmul_degenerate_shapes() {
    let mut acts = QuantizedActs::new();
    acts.quantize(&[], 0, 64);
    quant::matmul_quant(QuantType::Q4_0, &[0; 36], &acts, &mut [], 1);
    acts.quantize(&[1.0; 64], 1, 64);
    quant::matmul_quant(QuantType::Q8_0, &[], &acts, &mut [], 0);
}

#[test]
#[should_panic(expected = "not a positive multiple of 32")]
fn k_must_be_whole_blocks() {
    QuantizedActs::new().quantize(&[0.0; 40], 1, 40);
}

#[test]
#[should_panic(expected = "not a multiple of the Q4_K block of 256")]
fn k_must_be_whole_super_blocks() {
    let mut acts = QuantizedActs::new();
    acts.quantize(&[0.0; 288], 1, 288);
    quant::matmul_quant(QuantType::Q4K, &[0; 144], &acts, &mut [0.0], 1);
}

#[test]
#[should_panic(expected = "w has 35 bytes")]
fn weight_length_is_checked() {
    let mut acts = QuantizedActs::new();
    acts.quantize(&[0.0; 32], 1, 32);
    quant::matmul_quant(QuantType::Q8_0, &[0; 35], &acts, &mut [0.0], 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Random formats, shapes and data: every path within twice the rounding bound of the scalar
    /// reference, the reference within it of the f64 value; power-of-two data exactly equal.
    #[test]
    fn matmul_matches_reference(ty in 0..QuantType::ALL.len(), n in 1..10usize, blocks in 1..5usize, m in 1..20usize,
                                seed in any::<u64>(), exact in any::<bool>()) {
        let ty = QuantType::ALL[ty];
        let k = blocks * ty.block_elems();
        for path in quant::paths() {
            check(path, ty, n, k, m, seed, exact && k <= 1024);
        }
    }

    #[test]
    fn quantize_matches_scalar(blocks in 1..20usize, seed in any::<u64>()) {
        let x = random_acts(1, blocks * QK, seed);
        let want = quantized(&x, blocks * QK);
        for path in simd_paths() {
            let mut got = vec![BlockQ8::default(); blocks];
            (path.quantize_row)(&x, &mut got);
            prop_assert_eq!(&got, &want);
        }
    }
}
