//! The one place lowbit calls faer: the factor of the inverse Hessian that GPTQ sweeps with.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// `U`, upper triangular with `H⁻¹ = Uᵀ·U`, for a symmetric positive definite `h` (`n × n`, row-major),
/// row-major; `None` when `h` is not positive definite.
///
/// This is GPTQ's `cholesky(cholesky_inverse(cholesky(H)), upper=True)`: row `i` of `U`, right of the
/// diagonal, says how the error of column `i` spreads over the later columns once the earlier ones are fixed.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Option<Vec<f64>> {
    assert_eq!(h.len(), n * n, "inverse_cholesky_upper: {} values for {n}×{n}", h.len());
    let a = Mat::from_fn(n, n, |i, j| h[i * n + j]);
    let inv = a.llt(Side::Lower).ok()?.inverse();
    let l = inv.llt(Side::Lower).ok()?;
    let l = l.L();
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = l[(j, i)];
        }
    }
    u.iter().all(|v| v.is_finite()).then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_reproduces_the_inverse() {
        // H = A·Aᵀ + I for a fixed A: symmetric positive definite.
        let n = 5;
        let a: Vec<f64> = (0..n * n).map(|i| ((i * 7 + 3) % 11) as f64 / 5.0 - 1.0).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] =
                    (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_cholesky_upper(&h, n).unwrap();
        // (Uᵀ·U)·H = I.
        for i in 0..n {
            for j in 0..n {
                let hinv_row = |r: usize, c: usize| (0..n).map(|k| u[k * n + r] * u[k * n + c]).sum::<f64>();
                let v: f64 = (0..n).map(|k| hinv_row(i, k) * h[k * n + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "({i},{j}) = {v}");
            }
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
        let mut singular = h.clone();
        singular.iter_mut().take(n).for_each(|v| *v = 0.0);
        singular.iter_mut().step_by(n).for_each(|v| *v = 0.0);
        assert!(inverse_cholesky_upper(&singular, n).is_none());
    }
}
