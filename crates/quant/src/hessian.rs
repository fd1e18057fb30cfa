//! Second moments of a projection's input over calibration tokens: GPTQ's Hessian `H = 2/n · Σ x·xᵀ`,
//! whose diagonal over 2 is also the importance matrix (mean x² per column, llama.cpp's imatrix).

/// `Σ x·xᵀ` (f64) and the number of tokens `x` it has seen.
#[derive(Clone, Debug)]
pub struct Hessian {
    dim: usize,
    sum: Vec<f64>,
    tokens: usize,
    /// `xᵀ` of the latest batch and its f32 product, kept to avoid reallocating per batch.
    transposed: Vec<f32>,
    product: Vec<f32>,
}

impl Hessian {
    pub fn new(dim: usize) -> Hessian {
        Hessian { dim, sum: vec![0.0; dim * dim], tokens: 0, transposed: Vec::new(), product: vec![0.0; dim * dim] }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Adds `n` tokens' inputs `x` (`[n, dim]`). The batch's product is an f32 GEMM (each entry sums at
    /// most one batch of tokens); batches accumulate in f64, so long calibration runs lose no precision.
    pub fn add(&mut self, x: &[f32], n: usize) {
        let d = self.dim;
        assert_eq!(x.len(), n * d, "Hessian::add: {} values for {n}×{d}", x.len());
        if n == 0 {
            return;
        }
        self.transposed.resize(d * n, 0.0);
        for (t, row) in x.chunks_exact(d).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                self.transposed[i * n + t] = v;
            }
        }
        lowbit_kernels::matmul_f32(&self.transposed, &self.transposed, &mut self.product, d, n, d);
        self.sum.iter_mut().zip(&self.product).for_each(|(s, &p)| *s += f64::from(p));
        self.tokens += n;
    }

    /// GPTQ's `H = 2/n · Σ x·xᵀ`, row-major `dim × dim`.
    pub fn matrix(&self) -> Vec<f64> {
        let scale = 2.0 / self.tokens.max(1) as f64;
        self.sum.iter().map(|s| s * scale).collect()
    }

    /// Mean `x²` per input column: the importance of each column (llama.cpp's imatrix).
    pub fn importance(&self) -> Vec<f32> {
        let n = self.tokens.max(1) as f64;
        (0..self.dim).map(|i| (self.sum[i * self.dim + i] / n) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_the_outer_products() {
        let x = [1.0f32, 2.0, 0.0, -1.0, 3.0, 1.0];
        let mut h = Hessian::new(3);
        h.add(&x[..3], 1);
        h.add(&x[3..], 1);
        // Σ x·xᵀ = [1,2,0]ᵀ[1,2,0] + [-1,3,1]ᵀ[-1,3,1]; H = 2/2 of it.
        assert_eq!(h.matrix(), vec![2.0, -1.0, -1.0, -1.0, 13.0, 3.0, -1.0, 3.0, 1.0]);
        assert_eq!(h.importance(), vec![1.0, 6.5, 0.5]);
        let mut once = Hessian::new(3);
        once.add(&x, 2);
        assert_eq!(once.matrix(), h.matrix());
    }
}
