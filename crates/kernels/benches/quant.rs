//! Throughput of the quantized matmul (`matmul_quant_f32`: activation quantization included) on the
//! shapes of SmolLM2-135M.
//!
//!     cargo bench -p lowbit-kernels --bench quant [-- THREADS] [decode|prefill] [FORMAT...]
//!
//! FORMAT is a ggml name (Q4_0, Q4_K, ...); by default the formats of SmolLM2's llama.cpp files (Q8_0,
//! Q4_0, and Q4_K_M's Q5_0/Q4_K/Q6_K).
//!
//! Decode (n = 1) reports GB/s of weight bytes read (compare with the machine's read bandwidth, 20.6
//! GB/s on two threads of this project's machine) and the equivalent int8 GOP/s; "hot" repeats one
//! weight matrix (it stays in cache when it fits), "cold" cycles through copies totalling 256 MiB, as
//! decode does when it walks every layer once per token. Prefill reports GOP/s (2 per weight per token)
//! next to `matmul_f32` on the same shape.

use std::hint::black_box;
use std::time::Instant;

use lowbit_kernels::quant::{self, matmul_quant_f32, QuantType};
use lowbit_kernels::{matmul_f32, set_threads, threads};

fn main() {
    // `cargo bench` passes --bench; anything else is a thread count or the part to run.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    set_threads(args.iter().find_map(|a| a.parse().ok()).unwrap_or(2));
    let parts = ["decode", "prefill"];
    let run = |part: &str| !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part);
    let mut types: Vec<QuantType> =
        QuantType::ALL.into_iter().filter(|t| args.iter().any(|a| a.eq_ignore_ascii_case(t.name()))).collect();
    if types.is_empty() {
        types = vec![QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_0, QuantType::Q4K, QuantType::Q6K];
    }
    println!("path {}, {} threads", quant::active().name, threads());
    // SmolLM2's shapes: gate/up (576 → 1536), down (1536 → 576), the tied lm_head (576 → 49152); the
    // k-quants only where k is whole super-blocks (llama.cpp keeps the others in Q5_0/Q8_0).
    let super_ok = |ty: QuantType, k: usize| k.is_multiple_of(ty.block_elems());
    if run("decode") {
        for &ty in &types {
            for (k, m) in [(576, 1536), (1536, 576), (576, 49_152)] {
                if super_ok(ty, k) {
                    decode(ty, k, m);
                }
            }
        }
    }
    if run("prefill") {
        for &ty in &types {
            for (n, k, m) in [(16, 576, 1536), (512, 576, 1536), (512, 1536, 576)] {
                if super_ok(ty, k) {
                    prefill(ty, n, k, m);
                }
            }
        }
    }
}

fn decode(ty: QuantType, k: usize, m: usize) {
    let x = random_f32(k, 1);
    let bytes = m * ty.row_bytes(k);
    let copies = ((256 << 20) / bytes).max(1);
    let ws: Vec<Vec<u8>> = (0..copies).map(|c| random_blocks(ty, m * k / ty.block_elems(), c as u64 + 2)).collect();
    let mut out = vec![0.0; m];
    let mut hot_out = vec![0.0; m];
    let mut hot = || matmul_quant_f32(ty, &ws[0], &x, &mut hot_out, 1, k, m);
    let mut i = 0;
    let mut cold = || {
        i = (i + 1) % ws.len();
        matmul_quant_f32(ty, &ws[i], &x, &mut out, 1, k, m)
    };
    let [hot, cold] = seconds_per_call([&mut hot, &mut cold]);
    let gop = (2 * m * k) as f64 / 1e9;
    for (label, s) in [("hot ", hot), ("cold", cold)] {
        println!(
            "decode  {} 1×{k} · ({m}×{k})ᵀ {label}: {:9.1} µs  {:6.1} GB/s  {:6.1} GOP/s",
            ty.name(),
            s * 1e6,
            bytes as f64 / 1e9 / s,
            gop / s
        );
    }
}

fn prefill(ty: QuantType, n: usize, k: usize, m: usize) {
    let x = random_f32(n * k, 1);
    let w = random_blocks(ty, m * k / ty.block_elems(), 2);
    let wf = random_f32(m * k, 3);
    let mut out = vec![0.0; n * m];
    let mut out_f32 = vec![0.0; n * m];
    let mut q = || matmul_quant_f32(ty, &w, &x, &mut out, n, k, m);
    let mut f = || matmul_f32(&x, &wf, &mut out_f32, n, k, m);
    let [tq, tf] = seconds_per_call([&mut q, &mut f]);
    let gop = (2 * n * m * k) as f64 / 1e9;
    println!(
        "prefill {} {n}×{k} · ({m}×{k})ᵀ: {:8.2} ms {:6.1} GOP/s | matmul_f32 {:8.2} ms {:6.1} GFLOP/s",
        ty.name(),
        tq * 1e3,
        gop / tq,
        tf * 1e3,
        gop / tf
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

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// Uniform in [-1, 1).
fn random_f32(len: usize, seed: u64) -> Vec<f32> {
    let mut r = xorshift(seed);
    (0..len).map(|_| (r() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()
}

/// `blocks` blocks of `ty` with random codes and packed scales, and f16 fields of about 2⁻⁷ (f16 0x2000
/// + mantissa). The speed does not depend on the values; finite ones keep the outputs readable.
fn random_blocks(ty: QuantType, blocks: usize, seed: u64) -> Vec<u8> {
    let mut r = xorshift(seed);
    let mut w: Vec<u8> = (0..blocks * ty.block_bytes()).map(|_| r() as u8).collect();
    let fields: &[usize] = match ty {
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
        QuantType::TQ1_0 => &[52],
        QuantType::TQ2_0 => &[64],
        QuantType::MXFP4 => &[],
        _ => &[0],
    };
    for b in w.chunks_exact_mut(ty.block_bytes()) {
        for &f in fields {
            b[f..f + 2].copy_from_slice(&(0x2000 | (r() as u16 & 0x3FF)).to_le_bytes());
        }
    }
    w
}
