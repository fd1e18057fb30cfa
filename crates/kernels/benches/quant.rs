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

mod common;

use common::{cold_copies, hot_and_cold, seconds_per_call, Args};
use lowbit_kernels::quant::split_mxfp4::matmul_split_mxfp4_f32;
use lowbit_kernels::quant::{self, matmul_quant_f32, QuantType};
use lowbit_kernels::{matmul_f32, threads};
use lowbit_testdata::Rng;

fn main() {
    let args = Args::from_env();
    let mut types: Vec<QuantType> =
        QuantType::ALL.into_iter().filter(|t| args.words.iter().any(|a| a.eq_ignore_ascii_case(t.name()))).collect();
    if types.is_empty() {
        types = vec![QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_0, QuantType::Q4K, QuantType::Q6K];
    }
    println!("path {}, {} threads", quant::active().name, threads());
    // SmolLM2's shapes: gate/up (576 → 1536), down (1536 → 576), the tied lm_head (576 → 49152); the
    // k-quants only where k is whole super-blocks (llama.cpp keeps the others in Q5_0/Q8_0).
    let super_ok = |ty: QuantType, k: usize| k.is_multiple_of(ty.block_elems());
    if args.runs("decode") {
        for &ty in &types {
            for (k, m) in [(576, 1536), (1536, 576), (576, 49_152)] {
                if super_ok(ty, k) {
                    decode(ty, k, m);
                }
            }
        }
    }
    if args.runs("prefill") {
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
    let x = Rng::new(1).units(k);
    let bytes = m * ty.row_bytes(k);
    let ws: Vec<Vec<u8>> =
        (0..cold_copies(bytes)).map(|c| random_blocks(ty, m * k / ty.block_elems(), c as u64 + 2)).collect();
    let [hot, cold] = hot_and_cold(&ws, m, |w, out| matmul_quant_f32(ty, Default::default(), w, &x, out, 1, k, m));
    report(ty.name(), k, m, bytes, [hot, cold]);
    if ty == QuantType::MXFP4 {
        // The same matrices in Hugging Face's split layout (codes, then scales), on their own kernel.
        let split: Vec<(Vec<u8>, Vec<u8>)> = ws
            .iter()
            .map(|w| {
                let blocks = w.chunks_exact(ty.block_bytes());
                let scales = blocks.clone().map(|b| b[0]).collect();
                (blocks.flat_map(|b| b[1..].iter().copied()).collect(), scales)
            })
            .collect();
        let times = hot_and_cold(&split, m, |(c, s), out| matmul_split_mxfp4_f32(c, s, &x, out, 1, k));
        report("MXFP4 split", k, m, bytes, times);
    }
}

fn report(name: &str, k: usize, m: usize, bytes: usize, [hot, cold]: [f64; 2]) {
    let gop = (2 * m * k) as f64 / 1e9;
    for (label, s) in [("hot ", hot), ("cold", cold)] {
        println!(
            "decode  {name} 1×{k} · ({m}×{k})ᵀ {label}: {:9.1} µs  {:6.1} GB/s  {:6.1} GOP/s",
            s * 1e6,
            bytes as f64 / 1e9 / s,
            gop / s
        );
    }
}

fn prefill(ty: QuantType, n: usize, k: usize, m: usize) {
    let x = Rng::new(1).units(n * k);
    let w = random_blocks(ty, m * k / ty.block_elems(), 2);
    let wf = Rng::new(3).units(m * k);
    let mut out = vec![0.0; n * m];
    let mut out_f32 = vec![0.0; n * m];
    let mut q = || matmul_quant_f32(ty, Default::default(), &w, &x, &mut out, n, k, m);
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

/// `blocks` blocks of `ty` with random codes and packed scales, f16 fields of about 2⁻⁷ (f16 0x2000 plus
/// a mantissa) and MXFP4 exponents near 2⁻⁷. Normal, finite scales keep the outputs readable and the float
/// arithmetic at its usual speed (random E8M0 bytes would make subnormals and infinities, which are slow).
fn random_blocks(ty: QuantType, blocks: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut w: Vec<u8> = (0..blocks * ty.block_bytes()).map(|_| r.next_u64() as u8).collect();
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
            b[f..f + 2].copy_from_slice(&(0x2000 | (r.next_u64() as u16 & 0x3FF)).to_le_bytes());
        }
        if ty == QuantType::MXFP4 {
            b[0] = 120 + (r.next_u64() % 4) as u8;
        }
    }
    w
}
