//! Every kernel path against the scalar reference, and the references against independent values.
//!
//! Tolerances. Summing k products in f32 in any order (sequential, 8 lanes then a tree, blocks of k
//! added afterwards, with or without FMA) returns Σ aᵢbᵢ within γ_k·Σ|aᵢbᵢ| of the exact value, where
//! γ_k = k·u/(1 − k·u) and u = 2⁻²⁴ (Higham, Accuracy and Stability of Numerical Algorithms, §3.1).
//! Two such results differ by at most 2·γ_k·Σ|aᵢbᵢ|: that bound cannot fail from rounding alone, and
//! it is still ~100× smaller than dropping or doubling one term of a random vector. Small-integer
//! inputs make every partial sum exact, so there any two correct paths must agree bit for bit: those
//! tests catch indexing errors that a tolerance could hide.

use lowbit_kernels::dispatch::{self, Kernels};
use lowbit_kernels::scalar;
use lowbit_testdata::{gamma, Rng};
use proptest::prelude::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The bound on |a − b| for two f32 dot products of the same vectors.
fn dot_tol(a: &[f32], b: &[f32]) -> f64 {
    2.0 * gamma(a.len()) * a.iter().zip(b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum::<f64>()
}

/// Deterministic values in [-1, 1), or small integers in [-8, 8) when `ints`.
fn values(len: usize, seed: u64, ints: bool) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| if ints { (r.next_u64() >> 60) as f32 - 8.0 } else { r.unit() }).collect()
}

fn simd_paths() -> impl Iterator<Item = &'static Kernels> {
    dispatch::paths().into_iter().skip(1)
}

#[test]
fn scalar_is_first_and_active_is_last() {
    let paths = dispatch::paths();
    assert_eq!(paths[0].name, "scalar");
    assert_eq!(dispatch::active().name, paths.last().unwrap().name);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert_eq!(dispatch::active().name, "avx2");
    }
}

#[test]
fn dot_matches_scalar() {
    let lens = (0..=70).chain([255, 256, 257, 511, 576, 1000, 1537]);
    for path in simd_paths() {
        for len in lens.clone() {
            let (a, b) = (values(len, 1, false), values(len, 2, false));
            let (got, want) = ((path.dot_f32)(&a, &b), scalar::dot_f32(&a, &b));
            assert!(((got - want) as f64).abs() <= dot_tol(&a, &b), "{} len {len}: {got} vs {want}", path.name);
            let (a, b) = (values(len, 3, true), values(len, 4, true));
            assert_eq!((path.dot_f32)(&a, &b), scalar::dot_f32(&a, &b), "{} len {len} (ints)", path.name);
        }
    }
}

#[test]
fn axpy_matches_scalar() {
    for path in simd_paths() {
        for len in (0..=40).chain([1001]) {
            let x = values(len, 5, false);
            let y0 = values(len, 6, false);
            let (mut got, mut want) = (y0.clone(), y0.clone());
            (path.axpy_f32)(0.37, &x, &mut got);
            scalar::axpy_f32(0.37, &x, &mut want);
            for i in 0..len {
                // The scalar reference rounds 0.37·x and then the sum; FMA rounds once.
                let tol = 2.0 * U * ((0.37 * x[i]).abs() + want[i].abs()) as f64;
                assert!(((got[i] - want[i]) as f64).abs() <= tol, "{} len {len} [{i}]", path.name);
            }
            let (x, y0) = (values(len, 7, true), values(len, 8, true));
            let (mut got, mut want) = (y0.clone(), y0);
            (path.axpy_f32)(-3.0, &x, &mut got);
            scalar::axpy_f32(-3.0, &x, &mut want);
            assert_eq!(got, want, "{} len {len} (ints)", path.name);
        }
    }
}

/// Compares `path`'s single-threaded matmul with the scalar one, by the dot-product bound (real
/// values) or exactly (integers).
fn check_matmul(path: &Kernels, n: usize, k: usize, m: usize, seed: u64, ints: bool) {
    let x = values(n * k, seed, ints);
    let w = values(m * k, seed + 1, ints);
    let mut got = vec![f32::NAN; n * m];
    let mut want = vec![f32::NAN; n * m];
    (path.matmul_f32)(&x, &w, &mut got, k);
    scalar::matmul_f32(&x, &w, &mut want, k);
    check_against(&got, &want, &x, &w, n, k, m, ints, path.name);
}

#[allow(clippy::too_many_arguments)]
fn check_against(
    got: &[f32],
    want: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    k: usize,
    m: usize,
    exact: bool,
    what: &str,
) {
    for t in 0..n {
        for o in 0..m {
            let (g, e) = (got[t * m + o], want[t * m + o]);
            if exact {
                assert_eq!(g, e, "{what} {n}×{k}×{m} at ({t}, {o})");
            } else {
                let tol = dot_tol(&x[t * k..][..k], &w[o * k..][..k]);
                assert!(((g - e) as f64).abs() <= tol, "{what} {n}×{k}×{m} at ({t}, {o}): {g} vs {e}, tol {tol:e}");
            }
        }
    }
}

#[test]
fn matmul_matches_scalar_on_edge_shapes() {
    // n, m cover 1, every tile remainder (tiles are 3×4, GEMV groups 4) and several tiles; k covers
    // tails of 1..7 lanes, a single lane, and k > 768 where the kernel splits k into stretches.
    for path in simd_paths() {
        for n in [1, 2, 3, 4, 5, 17] {
            for k in [1, 7, 8, 9, 33, 581, 1700] {
                for m in [1, 2, 3, 4, 5, 13] {
                    check_matmul(path, n, k, m, (n * 1000 + k * 10 + m) as u64, false);
                    check_matmul(path, n, k, m, (n * 1000 + k * 10 + m) as u64, true);
                }
            }
        }
    }
}

#[test]
fn matmul_uses_cache_blocks_of_w() {
    // m large enough that w spans several L2 blocks at each of these k.
    for path in simd_paths() {
        for (n, k, m) in [(6, 64, 900), (9, 777, 100)] {
            check_matmul(path, n, k, m, 11, true);
            check_matmul(path, n, k, m, 12, false);
        }
    }
}

/// `matmul_f32`, and the same product forced through the gemm crate, against the scalar reference.
fn check_public(x: &[f32], w: &[f32], n: usize, k: usize, m: usize, exact: bool, what: &str) {
    let mut want = vec![f32::NAN; n * m];
    scalar::matmul_f32(x, w, &mut want, k);
    let mut got = vec![f32::NAN; n * m];
    lowbit_kernels::matmul_f32(x, w, &mut got, n, k, m);
    check_against(&got, &want, x, w, n, k, m, exact, &format!("public, {what}"));
    let mut got = vec![f32::NAN; n * m];
    lowbit_kernels::matmul_f32_gemm(x, w, &mut got, n, k, m);
    check_against(&got, &want, x, w, n, k, m, exact, &format!("gemm, {what}"));
}

#[test]
fn public_matmul_is_exact_on_integers_for_any_thread_count() {
    // Integer inputs make the result independent of how work is split: every thread count must give
    // the scalar answer bit for bit. Shapes: a decode GEMV big enough to go parallel (m·k ≥ 32768)
    // with m not a multiple of the chunk, prefills with n not a multiple of the thread count, and
    // prefills from GEMM_MIN_ROWS on, which go to the gemm crate.
    let g = lowbit_kernels::GEMM_MIN_ROWS;
    let shapes = [
        (1, 67, 1001),
        (1, 640, 1536),
        (2, 67, 600),
        (17, 67, 130),
        (5, 9, 3),
        (g - 1, 33, 7),
        (g, 33, 7),
        (g + 3, 67, 50),
    ];
    for threads in [1, 2, 3, 4] {
        lowbit_kernels::set_threads(threads);
        for (n, k, m) in shapes {
            let (x, w) = (values(n * k, 21, true), values(m * k, 22, true));
            check_public(&x, &w, n, k, m, true, &format!("{threads} threads"));
        }
    }
}

#[test]
fn public_matmul_degenerate_shapes() {
    let mut out = vec![f32::NAN; 6];
    lowbit_kernels::matmul_f32(&[], &[], &mut out, 2, 0, 3);
    assert_eq!(out, [0.0; 6]);
    let mut out = vec![f32::NAN; 6];
    lowbit_kernels::matmul_f32_gemm(&[], &[], &mut out, 2, 0, 3);
    assert_eq!(out, [0.0; 6]);
    lowbit_kernels::matmul_f32(&[], &[1.0, 2.0], &mut [], 0, 2, 1);
    lowbit_kernels::matmul_f32(&[1.0, 2.0], &[], &mut [], 1, 2, 0);
}

#[test]
#[should_panic(expected = "w has 5 elements, want 3×2")]
fn public_matmul_rejects_wrong_lengths() {
    lowbit_kernels::matmul_f32(&[0.0; 2], &[0.0; 5], &mut [0.0; 3], 1, 2, 3);
}

proptest! {
    #[test]
    fn matmul_random_shapes(n in 1usize..20, k in 1usize..300, m in 1usize..40, seed in any::<u64>()) {
        for path in simd_paths() {
            check_matmul(path, n, k, m, seed, false);
        }
        let (x, w) = (values(n * k, seed, false), values(m * k, seed ^ 1, false));
        check_public(&x, &w, n, k, m, false, "random shapes");
    }

    #[test]
    fn public_matmul_random_shapes_around_the_gemm_switch(
        dn in 0usize..40, k in 1usize..100, m in 1usize..40, seed in any::<u64>()
    ) {
        let n = lowbit_kernels::GEMM_MIN_ROWS - 20 + dn;
        let (x, w) = (values(n * k, seed, false), values(m * k, seed ^ 1, false));
        check_public(&x, &w, n, k, m, false, "around the gemm switch");
    }

    #[test]
    fn dot_random_lengths(len in 0usize..2000, seed in any::<u64>()) {
        let (a, b) = (values(len, seed, false), values(len, seed ^ 1, false));
        let want = scalar::dot_f32(&a, &b);
        for path in simd_paths() {
            let got = (path.dot_f32)(&a, &b);
            prop_assert!(((got - want) as f64).abs() <= dot_tol(&a, &b));
        }
    }
}

#[test]
fn rmsnorm_hand_computed() {
    // Row 1: x = [3, 4, 0, 0]: mean(x²) = 25/4 = 6.25, + eps 2.75 = 9, sqrt = 3, x/3 = [1, 4/3, 0, 0].
    // Row 2: x = [0, -7, 2, 0]: mean(x²) = 53/4 = 13.25, + 2.75 = 16, sqrt = 4, x/4 = [0, -1.75, 0.5, 0].
    // Times w = [2, 0.5, 7, -1]; every step is exact in f32.
    let x = [3.0, 4.0, 0.0, 0.0, 0.0, -7.0, 2.0, 0.0];
    let w = [2.0, 0.5, 7.0, -1.0];
    for path in dispatch::paths() {
        let mut out = [0.0; 8];
        for (r, o) in x.chunks(4).zip(out.chunks_mut(4)) {
            (path.rmsnorm_row)(r, &w, 2.75, 0.0, o);
        }
        close(&out, &[2.0, 2.0 / 3.0, 0.0, 0.0, 0.0, -0.875, 3.5, 0.0], 4.0 * U, path.name);
        // Gemma stores w − 1: the offset 1 multiplies by [3, 1.5, 8, 0].
        for (r, o) in x.chunks(4).zip(out.chunks_mut(4)) {
            (path.rmsnorm_row)(r, &w, 2.75, 1.0, o);
        }
        close(&out, &[3.0, 2.0, 0.0, 0.0, 0.0, -2.625, 4.0, 0.0], 4.0 * U, path.name);
    }
    let mut out = [0.0; 8];
    lowbit_kernels::rmsnorm(&x, &w, 2.75, 1.0, &mut out);
    close(&out, &[3.0, 2.0, 0.0, 0.0, 0.0, -2.625, 4.0, 0.0], 4.0 * U, "public");
}

/// |got − want| ≤ rel·|want| elementwise (rel = 0 asks for equality).
fn close(got: &[f32], want: &[f32], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
        assert!(((g - e) as f64).abs() <= rel * (e as f64).abs(), "{what} [{i}]: {g} vs {e}");
    }
}

#[test]
fn rmsnorm_matches_scalar() {
    // mean(x²) sums positive terms, so its relative error is at most γ_len in either order; the
    // rsqrt and the two products add a few u, identical in both paths except for what they inherit.
    for path in simd_paths() {
        for len in (1..=40).chain([576, 640, 1001]) {
            let x = values(len, 31, false);
            let w = values(len, 32, false);
            let (mut got, mut want) = (vec![0.0; len], vec![0.0; len]);
            (path.rmsnorm_row)(&x, &w, 1e-6, 1.0, &mut got);
            scalar::rmsnorm_row(&x, &w, 1e-6, 1.0, &mut want);
            close(&got, &want, gamma(len) + 8.0 * U, path.name);
        }
    }
}

#[test]
fn softmax_hand_computed() {
    // exp(0) : exp(ln 2) : exp(ln 3) = 1 : 2 : 3; shifting every input by 1000 changes nothing, and
    // -inf gets weight exactly 0. Lengths 3 and 5 end in partial vectors on every path, which must not
    // take part in the maximum (with a shift of -1000, a stray 0 there would underflow every exp).
    let want = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0, 0.0];
    for path in dispatch::paths() {
        for shift in [0.0, 1000.0, -1000.0] {
            for len in [3, 4, 5] {
                let mut x = [shift, 2f32.ln() + shift, 3f32.ln() + shift, f32::NEG_INFINITY, f32::NEG_INFINITY];
                (path.softmax_inplace)(&mut x[..len]);
                // ln 2 and ln 3 are rounded to f32 (and the shifted ones to ulp(1000) = 6e-5 absolute),
                // which moves the weights by up to that much relative; exp and the sum add a few u.
                let rel = if shift == 0.0 { 8.0 * U } else { 2.0 * 6.2e-5 };
                close(&x[..len], &want[..len], rel, path.name);
            }
        }
    }
}

#[test]
fn softmax_matches_scalar() {
    // Same subtraction of the same maximum in both paths; then exp within 1.4u (SIMD) or 1 ulp
    // (libm), a sum of positive terms (γ_len) and one product each.
    for path in simd_paths() {
        for len in (1..=40).chain([200, 1001]) {
            let x: Vec<f32> = values(len, 41, false).iter().map(|v| 20.0 * v).collect();
            let (mut got, mut want) = (x.clone(), x);
            (path.softmax_inplace)(&mut got);
            scalar::softmax_inplace(&mut want);
            close(&got, &want, gamma(len) + 8.0 * U, path.name);
        }
    }
}

/// (x, silu(x), gelu_tanh(x)) computed with mpmath at 50 significant digits (printed as the nearest
/// f64) from the textbook definitions x/(1 + e^-x) and 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))):
///     mp.dps = 50; s = x / (1 + mp.exp(-x))
///     g = x / 2 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) * (x + mp.mpf('0.044715') * x**3)))
/// numpy in f64 (x / (1 + np.exp(-x)), 0.5*x*(1+np.tanh(...))) agrees to 13 digits or more for x ≥ -3; below
/// that its 1 + tanh cancels (it returns -0.0 at x = -10, the true value is -1.2e-37).
const ACTIVATIONS: [(f64, f64, f64); 22] = [
    (-20.0, -4.122307236380407e-08, 0.0),
    (-10.0, -0.00045397868702434395, -1.2040923482098107e-37),
    (-6.0, -0.014835738939808645, -8.439646700762297e-11),
    (-5.0, -0.03346425462142428, -2.291796196629506e-07),
    (-3.0, -0.14227761953270035, -0.003637392081773019),
    (-2.5, -0.18964545005310887, -0.015084266089998582),
    (-1.0, -0.2689414213699951, -0.1588080093917233),
    (-0.5, -0.18877033439907273, -0.15428599017485609),
    (-0.125, -0.05859882832828047, -0.05628280137577661),
    (-0.0009765625, -0.0004880428314398462, -0.00048790078905422456),
    (0.0, 0.0, 0.0),
    (0.0009765625, 0.0004885196685601537, 0.0004886617109457754),
    (0.125, 0.06640117167171954, 0.06871719862422339),
    (0.5, 0.3112296656009273, 0.34571400982514394),
    (1.0, 0.7310585786300049, 0.8411919906082767),
    (1.5, 1.2263617142904655, 1.3995715769802328),
    (2.5, 2.310354549946891, 2.484915733910001),
    (3.0, 2.8577223804672998, 2.996362607918227),
    (5.0, 4.966535745378576, 4.999999770820381),
    (6.0, 5.985164261060191, 5.9999999999156035),
    (10.0, 9.999546021312975, 10.0),
    (20.0, 19.99999995877693, 20.0),
];

#[test]
fn silu_and_gelu_match_high_precision_values() {
    let xs: Vec<f32> = ACTIVATIONS.iter().map(|a| a.0 as f32).collect();
    let ones = vec![1.0; xs.len()];
    for path in dispatch::paths() {
        let mut silu = xs.clone();
        (path.silu_mul)(&mut silu, &ones);
        let mut gelu = xs.clone();
        (path.gelu_tanh_mul)(&mut gelu, &ones);
        for (i, &(x, s, g)) in ACTIVATIONS.iter().enumerate() {
            // silu: exp within 1.4u, then 1 + e and the division: 5u relative, with margin.
            assert!((silu[i] as f64 - s).abs() <= 8.0 * U * s.abs(), "{} silu({x}) = {} vs {s}", path.name, silu[i]);
            // gelu: y = sqrt(2/π)(x + 0.044715x³) carries ~6u of relative rounding (three products,
            // a sum, two f32 constants); e^-2y turns that into 6u·|2y| relative, which reaches the
            // result in proportion e^-2y / (1 + e^-2y).
            let y2 = 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let tol = U * (8.0 + 6.0 * y2.abs() / (1.0 + y2.exp())) * g.abs();
            assert!((gelu[i] as f64 - g).abs() <= tol, "{} gelu_tanh({x}) = {} vs {g}", path.name, gelu[i]);
        }
    }
}

#[test]
fn gated_activations_match_scalar() {
    // Same formulas; the SIMD exp is within 1.4u where libm's is within 1 ulp, and gelu's y may round
    // differently (an FMA), amplified by |2y| as above.
    for path in simd_paths() {
        for len in (0..=40).chain([1001]) {
            let gate: Vec<f32> = values(len, 51, false).iter().map(|v| 12.0 * v).collect();
            let up = values(len, 52, false);
            let (mut got, mut want) = (gate.clone(), gate.clone());
            (path.silu_mul)(&mut got, &up);
            scalar::silu_mul(&mut want, &up);
            close(&got, &want, 10.0 * U, path.name);
            let (mut got, mut want) = (gate.clone(), gate.clone());
            (path.gelu_tanh_mul)(&mut got, &up);
            scalar::gelu_tanh_mul(&mut want, &up);
            for i in 0..len {
                let x = gate[i] as f64;
                let y2 = 2.0 * 0.7978845608 * (x + 0.044715 * x * x * x);
                let tol = U * (10.0 + 12.0 * y2.abs() / (1.0 + y2.exp())) * (want[i] as f64).abs();
                assert!(((got[i] - want[i]) as f64).abs() <= tol, "{} gelu({x}): {} vs {}", path.name, got[i], want[i]);
            }
        }
    }
}

#[test]
fn activations_at_the_ends_of_the_range() {
    let x = [-200.0, -100.0, 100.0, 200.0, f32::INFINITY, f32::NAN, -89.0, 89.0];
    for path in dispatch::paths() {
        let mut s = x;
        (path.silu_mul)(&mut s, &[1.0; 8]);
        let mut g = x;
        (path.gelu_tanh_mul)(&mut g, &[1.0; 8]);
        for (i, &v) in x.iter().enumerate() {
            if v.is_nan() {
                assert!(s[i].is_nan() && g[i].is_nan(), "{} NaN", path.name);
            } else if v > 0.0 {
                assert_eq!((s[i], g[i]), (v, v), "{} at {v}", path.name);
            } else {
                // The true values are below 1e-36 in magnitude.
                assert!(
                    s[i] <= 0.0 && s[i] > -1e-36 && g[i] <= 0.0 && g[i] > -1e-36,
                    "{} at {v}: {} {}",
                    path.name,
                    s[i],
                    g[i]
                );
            }
        }
    }
}
