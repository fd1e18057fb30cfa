//! Second moments of a projection's input over calibration tokens: GPTQ's Hessian `H = 2/n · Σ x·xᵀ`,
//! whose diagonal over 2 is also the importance matrix (mean x² per column, llama.cpp's imatrix).

/// Rows of `xᵀ` per job in [`Hessian::add`]: a job multiplies its rows by the rows from its own on, so
/// the product skips the blocks below the diagonal. Smaller tiles skip more of the lower triangle and
/// balance the threads better, but make more, narrower matmuls. With benches/hessian.rs on 2 threads
/// (dim 576 and 1536, 512 tokens), 32 was ahead of 16, 48, 64, 96 and 128.
const TILE: usize = 32;

/// Tokens per block of the transpose in [`Hessian::add`].
const TRANSPOSE_BLOCK: usize = 16;

/// `Σ x·xᵀ` (f64) and the number of tokens `x` it has seen.
#[derive(Clone, Debug)]
pub struct Hessian {
    dim: usize,
    /// Row-major `dim × dim`; only the upper triangle (`j ≥ i`) is accumulated, the matrix being symmetric.
    sum: Vec<f64>,
    tokens: usize,
    /// `xᵀ` of the latest batch and the f32 products of its row tiles, kept to avoid reallocating per
    /// batch. Tile `r` (rows `r·TILE..`) by the rows from its own on is `rows × (dim - r·TILE)`, stored one
    /// after the other.
    transposed: Vec<f32>,
    products: Vec<f32>,
}

impl Hessian {
    pub fn new(dim: usize) -> Hessian {
        let products = (0..dim).step_by(TILE).map(|r0| TILE.min(dim - r0) * (dim - r0)).sum();
        Hessian { dim, sum: vec![0.0; dim * dim], tokens: 0, transposed: Vec::new(), products: vec![0.0; products] }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Adds `n` tokens' inputs `x` (`[n, dim]`). The batch's product is an f32 GEMM (each entry sums at
    /// most one batch of tokens); batches accumulate in f64, so long calibration runs lose no precision.
    ///
    /// The product is split into one job per row tile of `xᵀ`, each a single-threaded matmul followed by
    /// its own rows of the f64 sum, with the jobs spread over the threads: one matmul per tile through
    /// `matmul_f32` would leave the f64 sum to one thread, and split each (narrow) tile across threads.
    pub fn add(&mut self, x: &[f32], n: usize) {
        let d = self.dim;
        assert_eq!(x.len(), n * d, "Hessian::add: {} values for {n}×{d}", x.len());
        if n == 0 {
            return;
        }
        self.transpose(x, n);
        let mut jobs = Vec::with_capacity(d.div_ceil(TILE));
        let (mut sum, mut products) = (&mut self.sum[..], &mut self.products[..]);
        for r0 in (0..d).step_by(TILE) {
            let rows = TILE.min(d - r0);
            let (s, rest) = std::mem::take(&mut sum).split_at_mut(rows * d);
            let (p, more) = std::mem::take(&mut products).split_at_mut(rows * (d - r0));
            jobs.push((r0, s, p));
            (sum, products) = (rest, more);
        }
        let kern = lowbit_kernels::dispatch::active().matmul_f32;
        let t = &self.transposed;
        lowbit_kernels::parallel_chunks_mut(&mut jobs, 1, &|_, job| {
            let (r0, sum, product) = &mut job[0];
            let r0 = *r0;
            let width = d - r0;
            kern(&t[r0 * n..(r0 + product.len() / width) * n], &t[r0 * n..], product, n);
            for (a, (p, s)) in product.chunks_exact(width).zip(sum.chunks_exact_mut(d)).enumerate() {
                s[r0 + a..].iter_mut().zip(&p[a..]).for_each(|(s, &p)| *s += f64::from(p));
            }
        });
        self.tokens += n;
    }

    /// Writes `xᵀ` (`[dim, n]`) into `self.transposed`, a block of tokens at a time, so that each write
    /// fills part of a cache line of a row of `xᵀ` instead of touching a line per value.
    fn transpose(&mut self, x: &[f32], n: usize) {
        const B: usize = TRANSPOSE_BLOCK;
        let d = self.dim;
        self.transposed.resize(d * n, 0.0);
        let whole = n / B * B;
        for t0 in (0..whole).step_by(B) {
            let rows: [&[f32]; B] = std::array::from_fn(|r| &x[(t0 + r) * d..][..d]);
            for (i, dst) in self.transposed.chunks_exact_mut(n).enumerate() {
                for (o, row) in dst[t0..t0 + B].iter_mut().zip(&rows) {
                    *o = row[i];
                }
            }
        }
        for (t, row) in x.chunks_exact(d).enumerate().skip(whole) {
            for (i, &v) in row.iter().enumerate() {
                self.transposed[i * n + t] = v;
            }
        }
    }

    /// GPTQ's `H = 2/n · Σ x·xᵀ`, row-major `dim × dim`.
    pub fn matrix(&self) -> Vec<f64> {
        let scale = 2.0 / self.tokens.max(1) as f64;
        let d = self.dim;
        let mut h = vec![0.0; d * d];
        for i in 0..d {
            for j in i..d {
                h[i * d + j] = self.sum[i * d + j] * scale;
                h[j * d + i] = h[i * d + j];
            }
        }
        h
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

    #[test]
    fn matches_the_f64_sum_over_batches_for_a_dim_that_is_not_a_tile_multiple() {
        let d = 200;
        let mut rng = lowbit_testdata::Rng::new(7);
        let mut h = Hessian::new(d);
        let (mut exact, mut magnitude) = (vec![0.0f64; d * d], vec![0.0f64; d * d]);
        let mut tokens = 0;
        // Token counts that are not a multiple of the transpose block, and a single token.
        for n in [300, 37, 1, 129] {
            let x = rng.units(n * d);
            h.add(&x, n);
            tokens += n;
            for row in x.chunks_exact(d) {
                for i in 0..d {
                    for j in 0..d {
                        let p = f64::from(row[i]) * f64::from(row[j]);
                        exact[i * d + j] += p;
                        magnitude[i * d + j] += p.abs();
                    }
                }
            }
        }
        assert_eq!(h.tokens(), tokens);
        let scale = 2.0 / tokens as f64;
        for (k, (&got, (&want, &mag))) in h.matrix().iter().zip(exact.iter().zip(&magnitude)).enumerate() {
            // f32 products summed over at most 300 tokens: a relative error of a few ulps of f32 of Σ|x_i·x_j|.
            assert!(
                (got - want * scale).abs() <= 1e-5 * mag * scale,
                "H[{}][{}] = {got}, want {}",
                k / d,
                k % d,
                want * scale
            );
        }
        let importance = h.importance();
        for i in 0..d {
            let want = exact[i * d + i] / tokens as f64;
            assert!(
                (f64::from(importance[i]) - want).abs() <= 1e-5 * want,
                "importance[{i}] = {}, want {want}",
                importance[i]
            );
        }
    }
}
