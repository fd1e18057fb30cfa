//! The 16-bit float kernels: every path against the scalar reference, the reference against values
//! computed independently (numpy's float16 for a few known bit patterns, f64 sums), and the prefill
//! slabs against the GEMV. Tolerances as in tests/kernels.rs: two f32 dot products of the same k
//! terms differ by at most 2·γ_k·Σ|terms|, and small-integer inputs make every path exact.

use lowbit_kernels::half::{self, matmul_half, HalfType};
use lowbit_testdata::{gamma, Rng};

/// Weights whose values are finite and of moderate size: sign, exponent near 1, random mantissa.
fn weights(ty: HalfType, len: usize, seed: u64) -> Vec<u16> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| {
            let v = r.next_u64();
            let mant = (v & 0x3FF) as u16;
            let sign = ((v >> 20) & 1) as u16;
            let exp = 13 + ((v >> 24) % 4) as u16; // 2^-2 .. 2^1
            let f16 = sign << 15 | exp << 10 | mant;
            match ty {
                HalfType::F16 => f16,
                HalfType::BF16 => (half_to_f32_bits(f16) >> 16) as u16,
            }
        })
        .collect()
}

fn half_to_f32_bits(h: u16) -> u32 {
    HalfType::F16.to_f32(h).to_bits()
}

fn activations(len: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).units(len)
}

#[test]
fn reference_conversion_matches_numpy_float16() {
    // numpy: np.array([bits], np.uint16).view(np.float16).astype(np.float32)
    for (bits, want) in [(0x3C00u16, 1.0f32), (0x3555, 0.333_251_95), (0xC900, -10.0), (0x0001, 5.960_464_5e-8)] {
        assert_eq!(HalfType::F16.to_f32(bits), want, "{bits:#x}");
    }
    assert_eq!(HalfType::BF16.to_f32(0x3FC0), 1.5);
    assert_eq!(HalfType::BF16.to_f32(0xC2F7), -123.5);
}

#[test]
fn every_path_widens_every_bit_pattern_like_the_reference() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for ty in HalfType::ALL {
        let mut want = vec![0.0; all.len()];
        (half::SCALAR.widen)(ty, &all, &mut want);
        for path in half::paths() {
            // An odd length exercises the tail.
            let mut got = vec![0.0; all.len() - 3];
            (path.widen)(ty, &all[3..], &mut got);
            for (i, (g, w)) in got.iter().zip(&want[3..]).enumerate() {
                let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
                assert!(same, "{} {}: pattern {:#x} gave {g} want {w}", path.name, ty.name(), i + 3);
            }
        }
    }
}

#[test]
fn every_path_gemv_matches_the_reference() {
    for ty in HalfType::ALL {
        for (m, k) in [(1, 1), (4, 8), (7, 13), (9, 576), (33, 1536), (6, 2883), (5, 2880)] {
            let w = weights(ty, m * k, (m * k) as u64);
            let x = activations(k, k as u64 + 7);
            let mut want = vec![0.0; m];
            (half::SCALAR.gemv)(ty, &x, &w, &mut want);
            // The reference against an f64 sum of the same terms.
            for o in 0..m {
                let terms: Vec<f64> = (0..k).map(|i| ty.to_f32(w[o * k + i]) as f64 * x[i] as f64).collect();
                let exact: f64 = terms.iter().sum();
                let bound = gamma(k) * terms.iter().map(|t| t.abs()).sum::<f64>();
                assert!((want[o] as f64 - exact).abs() <= bound, "{} scalar row {o} of {m}×{k}", ty.name());
            }
            for path in half::paths() {
                let mut got = vec![0.0; m];
                (path.gemv)(ty, &x, &w, &mut got);
                for o in 0..m {
                    let scale: f64 = (0..k).map(|i| (ty.to_f32(w[o * k + i]) * x[i]).abs() as f64).sum();
                    let diff = (got[o] - want[o]).abs() as f64;
                    assert!(diff <= 2.0 * gamma(k) * scale, "{} {} row {o} of {m}×{k}: {diff}", path.name, ty.name());
                }
            }
        }
    }
}

#[test]
fn small_integers_are_exact_on_every_path() {
    // Weights and activations in [-8, 8): every partial sum is an integer below 2^24.
    let (m, k) = (12, 100);
    for ty in HalfType::ALL {
        let mut r = Rng::new(3);
        let vals: Vec<f32> = (0..m * k).map(|_| (r.next_u64() >> 60) as f32 - 8.0).collect();
        let w: Vec<u16> = vals
            .iter()
            .map(|&v| match ty {
                HalfType::F16 => f16_bits(v),
                HalfType::BF16 => (v.to_bits() >> 16) as u16,
            })
            .collect();
        let x: Vec<f32> = (0..k).map(|_| (r.next_u64() >> 60) as f32 - 8.0).collect();
        let want: Vec<f32> = (0..m).map(|o| (0..k).map(|i| vals[o * k + i] * x[i]).sum()).collect();
        for path in half::paths() {
            let mut got = vec![0.0; m];
            (path.gemv)(ty, &x, &w, &mut got);
            assert_eq!(got, want, "{} {}", path.name, ty.name());
        }
    }
}

/// The f16 bits of a small integer (exactly representable).
fn f16_bits(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let sign = if v < 0.0 { 0x8000 } else { 0 };
    let a = v.abs();
    let e = a.log2().floor() as i32;
    let mant = ((a / 2f32.powi(e) - 1.0) * 1024.0) as u16;
    sign | ((e + 15) as u16) << 10 | mant
}

#[test]
fn prefill_slabs_match_the_gemv_per_token() {
    lowbit_kernels::set_threads(2);
    // 130 rows: two full slabs of 64 and a short one.
    let (n, k, m) = (5, 96, 130);
    for ty in HalfType::ALL {
        let w = weights(ty, m * k, 11);
        let x = activations(n * k, 12);
        let mut got = vec![0.0; n * m];
        matmul_half(ty, &x, &w, &mut got, n, k, m);
        for t in 0..n {
            let mut want = vec![0.0; m];
            matmul_half(ty, &x[t * k..][..k], &w, &mut want, 1, k, m);
            for o in 0..m {
                let scale: f64 = (0..k).map(|i| (ty.to_f32(w[o * k + i]) * x[t * k + i]).abs() as f64).sum();
                let diff = (got[t * m + o] - want[o]).abs() as f64;
                assert!(diff <= 2.0 * gamma(k) * scale, "{} token {t} row {o}: {diff}", ty.name());
            }
        }
    }
}
