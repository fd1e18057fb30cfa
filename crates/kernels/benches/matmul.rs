//! Throughput of `matmul_f32` on the shapes of SmolLM2-135M and Gemma 3's lm_head.
//!
//!     cargo bench -p lowbit-kernels --bench matmul [-- THREADS] [decode|prefill]
//!
//! Decode (n = 1) reports GB/s of weights read (compare with the machine's read bandwidth) and
//! GFLOP/s; "hot" repeats one weight matrix (it stays in cache when it fits), "cold" cycles through
//! copies totalling 256 MiB, as decode does when it walks every layer once per token. Prefill compares
//! this crate's tile kernel (split across threads like `matmul_f32` does) with the `gemm` crate on the
//! same row-major x and (m, k) weights; `matmul_f32` picks between them by n (GEMM_MIN_ROWS).

use std::hint::black_box;
use std::time::Instant;

use lowbit_kernels::{dispatch, matmul_f32, parallel_chunks_mut, set_threads, threads, GEMM_MIN_ROWS};

fn main() {
    // `cargo bench` passes --bench; anything else is a thread count or the part to run.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    set_threads(args.iter().find_map(|a| a.parse().ok()).unwrap_or(2));
    let run = |part: &str| args.iter().all(|a| a.parse::<usize>().is_ok() || a == part);
    println!("path {}, {} threads", dispatch::active().name, threads());
    if run("decode") {
        for (k, m) in [(576, 1536), (1536, 576), (640, 262_144)] {
            decode(k, m);
        }
    }
    if run("prefill") {
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
    let x = random(k, 1);
    let copies = (256 << 20) / (4 * m * k);
    let ws: Vec<Vec<f32>> = (0..copies.max(1)).map(|c| random(m * k, c as u64 + 2)).collect();
    let mut out = vec![0.0; m];
    let gb = (4 * m * k) as f64 / 1e9;
    let gflop = (2 * m * k) as f64 / 1e9;
    let mut hot_out = vec![0.0; m];
    let mut hot = || matmul_f32(&x, &ws[0], &mut hot_out, 1, k, m);
    let mut i = 0;
    let mut cold = || {
        i = (i + 1) % ws.len();
        matmul_f32(&x, &ws[i], &mut out, 1, k, m)
    };
    let [hot, cold] = seconds_per_call([&mut hot, &mut cold]);
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
    let x = random(n * k, 1);
    let w = random(m * k, 2);
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
    let par = if threads() > 1 { gemm::Parallelism::Rayon(threads()) } else { gemm::Parallelism::None };
    let mut via_gemm = || {
        // SAFETY: dst is n×m with row stride m, lhs n×k with row stride k, and rhs = wᵀ (k×m) read
        // through strides (row stride 1, column stride k); all three slices have exactly those sizes.
        unsafe {
            gemm::gemm(
                n,
                m,
                k,
                gemm_out.as_mut_ptr(),
                1,
                m as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    };
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

/// Seconds per call of each function: the median over 5 rounds, each round timing a batch of about
/// 0.2 s (at least one call) of every function in turn, so that load from other processes, which
/// varies over time, affects all of them alike.
fn seconds_per_call<const N: usize>(mut fs: [&mut dyn FnMut(); N]) -> [f64; N] {
    let batch: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            f();
            ((0.2 / start.elapsed().as_secs_f64()) as usize).max(1)
        })
        .collect();
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..5 {
        for (j, f) in fs.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..batch[j] {
                f();
            }
            times[j].push(start.elapsed().as_secs_f64() / batch[j] as f64);
        }
    }
    black_box(&mut fs);
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[2]
    })
}

/// Uniform in [-1, 1) from a xorshift generator: cheap to fill 671 MB with.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
