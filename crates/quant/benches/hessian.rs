//! `Hessian::add` on SmolLM2-135M's projection inputs (dim 576 for attention and up/gate, 1536 for down)
//! with batches of 512 tokens, against the full `dim × dim` product it replaced (the same transpose, one
//! `matmul_f32` of `xᵀ` by itself and an f64 sum over every entry).
//!
//!     cargo bench -p lowbit-quant --bench hessian [-- THREADS]
//!
//! The two alternate within each of 5 rounds of about 0.2 s each and the median round is reported, so that
//! load from other processes on a shared machine affects both alike.

use lowbit_kernels::{matmul_f32, set_threads, threads};
use lowbit_quant::hessian::Hessian;
use lowbit_testdata::{seconds_per_call, Rng};

fn main() {
    let arg = std::env::args().skip(1).filter(|a| !a.starts_with("--")).find_map(|a| a.parse().ok());
    set_threads(arg.unwrap_or(2));
    println!("{} threads, ms per batch (median of 5 rounds)", threads());
    let n = 512;
    for d in [576, 1536] {
        let x = Rng::new(1).units(n * d);
        let mut full = FullProduct::new(d);
        let mut h = Hessian::new(d);
        let [t_full, t_add] = seconds_per_call([&mut || full.add(&x, n), &mut || h.add(&x, n)]);
        println!(
            "dim {d:>4}, {n} tokens: full product {:7.2} ms | Hessian::add {:7.2} ms | {:.2}× faster",
            t_full * 1e3,
            t_add * 1e3,
            t_full / t_add
        );
    }
}

/// The whole of `Σ x·xᵀ` from one GEMM, lower triangle included.
struct FullProduct {
    dim: usize,
    sum: Vec<f64>,
    transposed: Vec<f32>,
    product: Vec<f32>,
}

impl FullProduct {
    fn new(dim: usize) -> FullProduct {
        FullProduct { dim, sum: vec![0.0; dim * dim], transposed: Vec::new(), product: vec![0.0; dim * dim] }
    }

    fn add(&mut self, x: &[f32], n: usize) {
        let d = self.dim;
        self.transposed.resize(d * n, 0.0);
        for (t, row) in x.chunks_exact(d).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                self.transposed[i * n + t] = v;
            }
        }
        matmul_f32(&self.transposed, &self.transposed, &mut self.product, d, n, d);
        self.sum.iter_mut().zip(&self.product).for_each(|(s, &p)| *s += f64::from(p));
    }
}
