//! The split-MXFP4 kernels (Hugging Face's layout of GPT-OSS's experts): every path against the scalar
//! reference, and the reference against an f64 evaluation with the weights dequantized by lowbit-formats'
//! independent reading of the layout. Tolerances as in tests/quant.rs (Higham's bound for k/32 + 8 float
//! additions of terms with at most 4 roundings); with power-of-two activations and small sums every
//! partial sum is exact, and the paths must agree exactly.

use lowbit_formats::dequant::dequantize_split_mxfp4;
use lowbit_kernels::quant::split_mxfp4::{matmul_split_mxfp4, CODE_BYTES};
use lowbit_kernels::quant::{self, scalar, BlockQ8, QuantizedActs, QK};
use lowbit_testdata::{gamma, Rng};

/// m rows of k: random codes, exponents around 2^0 (2^-8..2^8) or exactly 2^0 when `unit`.
fn random_matrix(m: usize, k: usize, seed: u64, unit: bool) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng::new(seed);
    let codes = (0..m * k / 2).map(|_| r.below(256) as u8).collect();
    let scales = (0..m * k / QK).map(|_| if unit { 127 } else { 119 + r.below(17) as u8 }).collect();
    (codes, scales)
}

fn acts(n: usize, k: usize, seed: u64, exact: bool) -> Vec<BlockQ8> {
    let mut r = Rng::new(seed);
    let x: Vec<f32> = (0..n * k)
        .map(|i| match exact {
            // One ±127 per block, small integers elsewhere: codes equal the values.
            true if i % QK == 0 => {
                if r.below(2) == 0 {
                    127.0
                } else {
                    -127.0
                }
            }
            true => r.below(5) as f32 - 2.0,
            false => r.unit() * 2f32.powi(r.below(8) as i32 - 4),
        })
        .collect();
    let mut blocks = vec![BlockQ8::default(); n * k / QK];
    for (xr, br) in x.chunks_exact(k).zip(blocks.chunks_exact_mut(k / QK)) {
        scalar::quantize_row(xr, br);
    }
    blocks
}

fn check(n: usize, k: usize, m: usize, seed: u64, exact: bool) {
    let (codes, scales) = random_matrix(m, k, seed, exact);
    let w = dequantize_split_mxfp4(&codes, &scales).unwrap();
    let a = acts(n, k, seed + 1, exact);
    let mut want = vec![f32::NAN; n * m];
    (scalar_path().matmul_split_mxfp4)(&codes, &scales, &a, &mut want, k);
    for t in 0..n {
        for o in 0..m {
            let (mut exact_sum, mut mag) = (0f64, 0f64);
            for i in 0..k {
                let x = a[t * k / QK + i / QK].d as f64 * a[t * k / QK + i / QK].qs[i % QK] as f64;
                exact_sum += w[o * k + i] as f64 * x;
                mag += (w[o * k + i] as f64 * x).abs();
            }
            let e = want[t * m + o] as f64;
            match exact {
                true => assert_eq!(e, exact_sum, "reference {n}×{k}×{m} at ({t}, {o})"),
                false => assert!((e - exact_sum).abs() <= gamma(k / 16 + 10) * mag, "reference at ({t}, {o})"),
            }
        }
    }
    for path in quant::paths().into_iter().skip(1) {
        let mut got = vec![f32::NAN; n * m];
        (path.matmul_split_mxfp4)(&codes, &scales, &a, &mut got, k);
        for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
            let (t, o) = (i / m, i % m);
            let mag: f64 = (0..k)
                .map(|j| {
                    (w[o * k + j] as f64 * a[t * k / QK + j / QK].d as f64 * a[t * k / QK + j / QK].qs[j % QK] as f64)
                        .abs()
                })
                .sum();
            match exact {
                true => assert_eq!(g, e, "{} {n}×{k}×{m} at ({t}, {o})", path.name),
                false => assert!(
                    ((g - e) as f64).abs() <= 2.0 * gamma(k / 16 + 10) * mag,
                    "{} {n}×{k}×{m} at ({t}, {o}): {g} vs {e}",
                    path.name
                ),
            }
        }
    }
}

fn scalar_path() -> &'static quant::QuantKernels {
    quant::paths()[0]
}

#[test]
fn every_path_matches_the_reference_exactly_on_exact_data() {
    for (n, k, m, seed) in [(1, 32, 1, 1), (1, 96, 7, 2), (3, 64, 5, 3), (5, 128, 9, 4), (9, 32, 3, 5)] {
        check(n, k, m, seed, true);
    }
}

#[test]
fn every_path_is_within_rounding_on_random_data() {
    // GPT-OSS-20B's experts are 2880 wide (90 blocks); 5 tokens cover a full and a partial group of 4.
    for (n, k, m, seed) in [(1, 2880, 8, 11), (5, 2880, 6, 12), (2, 320, 33, 13)] {
        check(n, k, m, seed, false);
    }
}

#[test]
fn the_threaded_entry_is_the_active_kernel() {
    let (n, k, m) = (3, 2880, 40);
    let (codes, scales) = random_matrix(m, k, 21, false);
    let x: Vec<f32> = {
        let mut r = Rng::new(22);
        (0..n * k).map(|_| r.unit()).collect()
    };
    let mut qa = QuantizedActs::new();
    qa.quantize(&x, n, k);
    let mut got = vec![0f32; n * m];
    matmul_split_mxfp4(&codes, &scales, &qa, &mut got);
    let mut want = vec![0f32; n * m];
    (quant::active().matmul_split_mxfp4)(&codes, &scales, qa.blocks(), &mut want, k);
    assert_eq!(got, want);
    assert_eq!(codes.len(), m * k / QK * CODE_BYTES);
}

#[test]
#[should_panic(expected = "not whole rows")]
fn mismatched_lengths_panic_with_a_message() {
    let a = acts(1, 64, 1, true);
    let mut out = [0f32; 1];
    (scalar_path().matmul_split_mxfp4)(&[0; 31], &[127, 127], &a, &mut out, 64);
}
