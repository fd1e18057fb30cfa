//! Throughput of `matmul_f32` on the shapes of SmolLM2-135M and Gemma 3's lm_head.
//!
//!     cargo bench -p lowbit-kernels --bench matmul [-- THREADS] [decode|prefill]
//!
//! Decode (n = 1) reports GB/s of weights read (compare with the machine's read bandwidth) and
//! GFLOP/s; "hot" repeats one weight matrix (it stays in cache when it fits), "cold" cycles through
//! copies totalling 256 MiB, as decode does when it walks every layer once per token. Prefill compares
//! this crate's tile kernel (split across threads like `matmul_f32` does) with the `gemm` crate on the
//! same row-major x and (m, k) weights; `matmul_f32` picks between them by n (GEMM_MIN_ROWS).

mod common;

use common::{cold_copies, hot_and_cold, seconds_per_call, Args};
use lowbit_kernels::{dispatch, matmul_f32, matmul_f32_gemm, parallel_chunks_mut, threads, GEMM_MIN_ROWS};
use lowbit_testdata::Rng;

fn main() {
    let args = Args::from_env();
    println!("path {}, {} threads", dispatch::active().name, threads());
    if args.runs("decode") {
        for (k, m) in [(576, 1536), (1536, 576), (640, 262_144)] {
            decode(k, m);
        }
    }
    if args.runs("prefill") {
        for (n, k, m) in [
            (16, 576, 1536),
            (64, 576, 1536),
            (128, 576, 1536),
            (256, 576, 1536),
            (512, 576, 1536),
            (512, 640, 262_144),
        ] {
            prefill(n, k, m);
        }
    }
}

fn decode(k: usize, m: usize) {
    let x = Rng::new(1).units(k);
    let ws: Vec<Vec<f32>> = (0..cold_copies(4 * m * k)).map(|c| Rng::new(c as u64 + 2).units(m * k)).collect();
    let gb = (4 * m * k) as f64 / 1e9;
    let gflop = (2 * m * k) as f64 / 1e9;
    let [hot, cold] = hot_and_cold(&ws, m, |w, out| matmul_f32(&x, w, out, 1, k, m));
    for (label, s) in [("hot ", hot), ("cold", cold)] {
        if label == "hot " && ws.len() == 1 {
            continue;
        }
        println!(
            "decode  1×{k} · ({m}×{k})ᵀ {label}: {:9.1} µs  {:6.1} GB/s  {:6.1} GFLOP/s",
            s * 1e6,
            gb / s,
            gflop / s
        );
    }
}

fn prefill(n: usize, k: usize, m: usize) {
    let x = Rng::new(1).units(n * k);
    let w = Rng::new(2).units(m * k);
    let gflop = (2 * n * m * k) as f64 / 1e9;
    // The tile kernel split across threads as matmul_f32 does below GEMM_MIN_ROWS.
    let mut tiles_out = vec![0.0; n * m];
    let rows = n.div_ceil(threads());
    let kern = dispatch::active().matmul_f32;
    let mut tiles = || {
        parallel_chunks_mut(&mut tiles_out, rows * m, &|i, part| {
            kern(&x[i * rows * k..][..part.len() / m * k], &w, part, k)
        })
    };
    let mut gemm_out = vec![0.0; n * m];
    let mut via_gemm = || matmul_f32_gemm(&x, &w, &mut gemm_out, n, k, m);
    let [t_tiles, t_gemm] = seconds_per_call([&mut tiles, &mut via_gemm]);
    let max_diff = tiles_out.iter().zip(&gemm_out).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let used = if n < GEMM_MIN_ROWS { "tiles" } else { "gemm" };
    println!(
        "prefill {n}×{k} · ({m}×{k})ᵀ: tiles {:8.2} ms {:6.1} GFLOP/s | gemm crate {:8.2} ms {:6.1} GFLOP/s | \
         matmul_f32 uses {used} | max |Δ| {max_diff:.1e}",
        t_tiles * 1e3,
        gflop / t_tiles,
        t_gemm * 1e3,
        gflop / t_gemm
    );
}
