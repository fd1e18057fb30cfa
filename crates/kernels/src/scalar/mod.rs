//! Reference kernels: plain loops in the obvious order. They define what every SIMD path must compute
//! (up to the summation order and the accuracy of `exp`), and they are the fallback on CPUs without a
//! SIMD path.

/// Σ a[i]·b[i], summed left to right.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    a.iter().zip(b).fold(0.0, |s, (&x, &y)| s + x * y)
}

/// y += alpha·x
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f32: length mismatch");
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// out[t·m + o] = dot(x[t·k..][..k], w[o·k..][..k]) with n = x.len()/k, m = w.len()/k.
pub fn matmul_f32(x: &[f32], w: &[f32], out: &mut [f32], k: usize) {
    let (n, m) = crate::dispatch::matmul_dims(x, w, out, k);
    for t in 0..n {
        for o in 0..m {
            out[t * m + o] = dot_f32(&x[t * k..][..k], &w[o * k..][..k]);
        }
    }
}

/// One row: out = x / sqrt(mean(x²) + eps) · (w + weight_offset).
pub fn rmsnorm_row(x: &[f32], w: &[f32], eps: f32, weight_offset: f32, out: &mut [f32]) {
    assert!(x.len() == w.len() && out.len() == w.len(), "rmsnorm_row: length mismatch");
    let mean_sq = x.iter().fold(0.0, |s, &v| s + v * v) / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * (g + weight_offset);
    }
}

/// x = exp(x - max x) / Σ exp(x - max x). Subtracting the maximum keeps `exp` finite; a row that is all
/// -inf has no defined softmax and comes out as NaN.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// silu(x) = x·σ(x) = x / (1 + e^-x); for very negative x, e^-x overflows to +inf and the result is -0,
/// the correctly rounded value of a number smaller than f32 can hold.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation (PyTorch `gelu(approximate="tanh")`, HF `gelu_pytorch_tanh`):
/// 0.5·x·(1 + tanh(y)), y = sqrt(2/π)·(x + 0.044715·x³).
/// Computed through the identity 0.5·(1 + tanh(y)) = σ(2y) = 1 / (1 + e^-2y): the textbook form loses
/// all relative precision for x below about -4, where 1 + tanh(y) cancels to a few ulps of 1.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + (-2.0 * y).exp())
}

/// gate = silu(gate)·up
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// gate = gelu_tanh(gate)·up
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_tanh_mul: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}
