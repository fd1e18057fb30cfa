//! The quantized kernels: every path against the scalar reference, and the reference against an f64
//! evaluation of dequantize(weights) · dequantize(quantize(x)).
//!
//! Activation quantization must agree bit for bit across paths (same scalar scale arithmetic, same
//! products, round half to even). For the matmul, the integer dot product of each pair of blocks is
//! exact in every path; what differs is how the per-block float terms are added (the scalar reference
//! term by term, AVX2 per lane with FMAs and then across lanes).
//!
//! Tolerances. Let mag = Σ_b (|d_w·d_a|·Σ_i |q_w,i·q_a,i| + |m_w·d_a·Σ_i q_a,i|) for one output, over its
//! blocks b (m_w = 0 except for Q4_1). Each path forms its result from at most 8·nb + nb terms (lane
//! partial sums times a rounded scale product, and Q4_1's m_w·s_a), each carrying at most 3 roundings
//! (d_w·d_a, the product with the partial sum, s_a = d_a·Σq), added with at most 2·nb + 3 additions
//! along any path of the summation tree. By the standard bound (Higham, Accuracy and Stability of
//! Numerical Algorithms, §3.1) each path is within γ_{2nb+6}·mag of the exact value, γ_n = n·u/(1 − n·u),
//! u = 2⁻²⁴; two paths differ by at most twice that. This cannot fail from rounding alone and is still
//! orders of magnitude below the effect of a wrong code, nibble, scale or block. With power-of-two
//! scales and small sums every partial sum is exact, and there the paths must agree exactly.

use lowbit_kernels::quant::{self, scalar, BlockQ8, QuantKernels, QuantType, QuantizedActs, QK};
use proptest::prelude::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

fn simd_paths() -> impl Iterator<Item = &'static QuantKernels> {
    quant::paths().into_iter().skip(1)
}

/// A xorshift stream: cheap, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// f16 bits of a normal value with random sign, mantissa and an exponent giving 2⁻¹⁰..2⁵.
fn random_f16(r: &mut Rng) -> u16 {
    let exp = 5 + r.below(16) as u16;
    (r.below(2) as u16) << 15 | exp << 10 | r.below(1024) as u16
}

/// m rows of k/32 random blocks of `ty`. With `pow2`, scales are ±1 or ±2 and Q4_1 minimums ±1 or ±2,
/// so that (with the activations of `pow2_acts`) every product and partial sum is exact.
fn random_weights(ty: QuantType, m: usize, k: usize, seed: u64, pow2: bool) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let pow2_f16 = |r: &mut Rng| [0x3C00u16, 0x4000, 0xBC00, 0xC000][r.below(4) as usize];
    let mut w = Vec::with_capacity(m * ty.row_bytes(k));
    for _ in 0..m * k / QK {
        let d = if pow2 { pow2_f16(&mut r) } else { random_f16(&mut r) };
        w.extend(d.to_le_bytes());
        if ty == QuantType::Q4_1 {
            let m = if pow2 { pow2_f16(&mut r) } else { random_f16(&mut r) };
            w.extend(m.to_le_bytes());
        }
        let code_bytes = if ty == QuantType::Q8_0 { 32 } else { 16 };
        // Every byte value, so Q8_0 includes −128 and both nibbles take all 16 codes.
        w.extend((0..code_bytes).map(|_| r.below(256) as u8));
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

/// Activations that quantize exactly: per block one element ±127·d and the rest integers in [-8, 8]
/// times d, d = 1 or 0.5. Then every code is the value / d and every term of the matmul is a multiple
/// of 0.5 below 2²² in magnitude for k ≤ 1024 (|Σ q_w·q_a| ≤ 128·(127 + 31·8) per block), so every
/// partial sum in any order is exact.
fn pow2_acts(n: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(n * k);
    for _ in 0..n * k / QK {
        let d = if r.below(2) == 0 { 1.0 } else { 0.5 };
        let peak = r.below(QK as u64) as usize;
        x.extend((0..QK).map(|i| {
            let q = if i == peak { 127.0 * if r.below(2) == 0 { 1.0 } else { -1.0 } } else { r.below(17) as f32 - 8.0 };
            q * d
        }));
    }
    x
}

fn f16_to_f64(b: &[u8]) -> f64 {
    scalar::f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64
}

/// Weight row o dequantized to f64 by the plain reading of the layout: (q − 8)·d, q·d + m, q·d.
fn dequantize_row(ty: QuantType, w: &[u8], k: usize, o: usize) -> Vec<f64> {
    let row = &w[o * ty.row_bytes(k)..][..ty.row_bytes(k)];
    let mut out = vec![0.0; k];
    for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
        let y = &mut out[b * QK..][..QK];
        let d = f16_to_f64(block);
        match ty {
            QuantType::Q8_0 => y.iter_mut().zip(&block[2..]).for_each(|(y, &q)| *y = (q as i8) as f64 * d),
            QuantType::Q4_0 | QuantType::Q4_1 => {
                let (m, codes, offset) = if ty == QuantType::Q4_1 {
                    (f16_to_f64(&block[2..]), &block[4..], 0.0)
                } else {
                    (0.0, &block[2..], 8.0)
                };
                for (j, &c) in codes.iter().enumerate() {
                    y[j] = ((c & 15) as f64 - offset) * d + m;
                    y[j + 16] = ((c >> 4) as f64 - offset) * d + m;
                }
            }
        }
    }
    out
}

/// (Σ_i W[o, i]·d_a·q_a[i] in f64, the bound γ_{2nb+6}·mag of the module comment) for one output.
fn reference(ty: QuantType, w: &[u8], acts: &[BlockQ8], k: usize, o: usize) -> (f64, f64) {
    let wrow = dequantize_row(ty, w, k, o);
    let row = &w[o * ty.row_bytes(k)..][..ty.row_bytes(k)];
    let (mut exact, mut mag) = (0.0, 0.0);
    for (b, (a, block)) in acts.iter().zip(row.chunks_exact(ty.block_bytes())).enumerate() {
        let da = a.d as f64;
        exact += (0..QK).map(|i| wrow[b * QK + i] * da * a.qs[i] as f64).sum::<f64>();
        let dw = f16_to_f64(block);
        let (m, codes): (f64, Vec<f64>) = match ty {
            QuantType::Q8_0 => (0.0, block[2..].iter().map(|&q| (q as i8) as f64).collect()),
            QuantType::Q4_0 | QuantType::Q4_1 => {
                let (m, c, off) = if ty == QuantType::Q4_1 {
                    (f16_to_f64(&block[2..]), &block[4..], 0.0)
                } else {
                    (0.0, &block[2..], 8.0)
                };
                let mut v = vec![0.0; QK];
                for (j, &byte) in c.iter().enumerate() {
                    v[j] = (byte & 15) as f64 - off;
                    v[j + 16] = (byte >> 4) as f64 - off;
                }
                (m, v)
            }
        };
        let qsum: f64 = a.qs.iter().map(|&q| q as f64).sum();
        mag += (dw * da).abs() * codes.iter().zip(&a.qs).map(|(c, &q)| (c * q as f64).abs()).sum::<f64>()
            + (m * da * qsum).abs();
    }
    (exact, gamma(2 * k / QK + 6) * mag)
}

fn quantized(x: &[f32], k: usize) -> Vec<BlockQ8> {
    let mut blocks = vec![BlockQ8::default(); x.len() / QK];
    for (xr, br) in x.chunks_exact(k).zip(blocks.chunks_exact_mut(k / QK)) {
        scalar::quantize_row(xr, br);
    }
    blocks
}

/// Runs `path` and the scalar reference on one problem and checks them against each other (exactly
/// when `exact`) and the reference against the f64 evaluation.
fn check(path: &QuantKernels, ty: QuantType, n: usize, k: usize, m: usize, seed: u64, exact: bool) {
    let w = random_weights(ty, m, k, seed, exact);
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
            let (r, tol) = reference(ty, &w, &acts[t * k / QK..][..k / QK], k, o);
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
    // n covers GEMV (1), 4×2 tiles with token remainders, and more than one token block (32); m every
    // remainder of 8-row GEMV groups and 4-row tiles; k one block, odd block counts, and k = 1024.
    for path in quant::paths() {
        for ty in QuantType::ALL {
            for n in [1, 2, 3, 5, 33] {
                for k in [32, 96, 224, 1024] {
                    for m in [1, 2, 3, 4, 5, 7, 8, 9, 13, 17] {
                        check(path, ty, n, k, m, (n * 10_000 + k * 10 + m) as u64, true);
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_within_rounding_on_random_data() {
    for path in quant::paths() {
        for ty in QuantType::ALL {
            for (n, k, m) in [(1, 576, 19), (1, 1536, 9), (2, 576, 7), (7, 1536, 5), (40, 288, 6), (3, 32, 3)] {
                check(path, ty, n, k, m, (n + k + m) as u64, false);
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
    let shapes = [(1, 96, 2003), (1, 1024, 70), (2, 96, 50), (5, 224, 17), (70, 1024, 9), (1, 32, 1)];
    for threads in [1, 2, 3, 4] {
        lowbit_kernels::set_threads(threads);
        for ty in QuantType::ALL {
            for (n, k, m) in shapes {
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
                quant::matmul_quant_f32(ty, &w, &x, &mut got, n, k, m);
                assert_eq!(got, want, "{threads} threads, {} {n}×{k}×{m} (f32 input)", ty.name());
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
#[should_panic(expected = "w has 35 bytes")]
fn weight_length_is_checked() {
    let mut acts = QuantizedActs::new();
    acts.quantize(&[0.0; 32], 1, 32);
    quant::matmul_quant(QuantType::Q8_0, &[0; 35], &acts, &mut [0.0], 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random formats, shapes and data: every path within twice the rounding bound of the scalar
    /// reference, the reference within it of the f64 value; power-of-two data exactly equal.
    #[test]
    fn matmul_matches_reference(ty in 0..3usize, n in 1..6usize, nb in 1..40usize, m in 1..12usize,
                                seed in any::<u64>(), exact in any::<bool>()) {
        let k = nb * QK;
        for path in quant::paths() {
            check(path, QuantType::ALL[ty], n, k, m, seed, exact && k <= 1024);
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
