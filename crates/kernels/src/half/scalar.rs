//! Reference 16-bit float kernels: the specification the SIMD paths are tested against.

use super::HalfType;

pub fn widen(ty: HalfType, w: &[u16], out: &mut [f32]) {
    assert_eq!(w.len(), out.len(), "widen: length mismatch");
    out.iter_mut().zip(w).for_each(|(o, &b)| *o = ty.to_f32(b));
}

/// out[o] = Σ_i x[i]·W[o, i], added left to right in f32.
pub fn gemv(ty: HalfType, x: &[f32], w: &[u16], out: &mut [f32]) {
    assert_eq!(w.len(), out.len() * x.len(), "gemv: w has {} weights, want {}×{}", w.len(), out.len(), x.len());
    if x.is_empty() {
        return out.fill(0.0);
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = row.iter().zip(x).fold(0.0, |s, (&b, &v)| s + ty.to_f32(b) * v);
    }
}
