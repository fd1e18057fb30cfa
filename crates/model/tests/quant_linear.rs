//! `QuantLinear` and `NativeFactory`: native matmuls of every GGUF block format against the same weights
//! dequantized by `lowbit_formats` (the independent reading of the GGUF layouts), on random matrices and
//! on the real SmolLM2 model.

use std::sync::Arc;

use lowbit_formats::dequant::dequantize;
use lowbit_formats::source::{ModelSource, TensorRef};
use lowbit_formats::DType;
use lowbit_kernels::quant::scalar::f16_to_f32 as half_to_f32;
use lowbit_kernels::quant::{QuantType, QuantizedActs, QK};
use lowbit_model::quant_linear::native_type;
use lowbit_model::{
    DenseF32, F16Factory, F32Factory, Linear, LinearFactory, Logits, Model, NativeFactory, QuantLinear,
};
use lowbit_testdata::Rng;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// The formats tested on random blocks: the legacy and k-quant ones (`random_blocks` fills their f16
/// fields; the ternary formats and MXFP4 are covered by lowbit-kernels' tests/quant.rs).
fn tested_types() -> impl Iterator<Item = QuantType> {
    QuantType::ALL.into_iter().filter(|ty| !matches!(ty, QuantType::TQ1_0 | QuantType::TQ2_0 | QuantType::MXFP4))
}

/// The storage type `native_type` maps to `ty`.
fn storage_type(ty: QuantType) -> DType {
    (0..=u8::MAX.into()).filter_map(DType::from_ggml).find(|&d| native_type(d) == Some(ty)).unwrap()
}

/// Byte offsets of a block's f16 fields (d, and m or dmin).
fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
        _ => &[0],
    }
}

/// Random blocks: all byte values as codes and packed scales, f16 fields of either sign with magnitudes
/// 2⁻⁸..2⁻¹ (2⁻¹⁴..2⁻⁷ for the k-quants, whose sub-scales multiply them by up to 63 or 127).
fn random_blocks(ty: QuantType, blocks: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut w: Vec<u8> = (0..blocks * ty.block_bytes()).map(|_| r.next_u64() as u8).collect();
    let low = if ty.block_elems() == QK { 7 } else { 1 };
    for b in w.chunks_exact_mut(ty.block_bytes()) {
        for &f in f16_fields(ty) {
            let h = (r.next_u64() as u16 & 0x8000)
                | (low + (r.next_u64() % 7) as u16) << 10
                | (r.next_u64() as u16 & 0x3FF);
            b[f..f + 2].copy_from_slice(&h.to_le_bytes());
        }
    }
    w
}

/// Activations with a spread of block magnitudes and occasional outliers, as hidden states have.
fn random_acts(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|i| {
            let scale = 2f32.powi((i / QK % 7) as i32 - 3);
            r.unit() * scale * if r.next_u64().is_multiple_of(64) { 20.0 } else { 1.0 }
        })
        .collect()
}

/// On odd shapes, for each format:
///
/// 1. QuantLinear equals Σ_i W[o, i]·x̃[t, i] evaluated in f64, with W dequantized by lowbit_formats and
///    x̃ the quantized activations (d_a·q_a), within the kernels' float-rounding bound γ_{k/16+10}·mag,
///    mag = Σ_i (|W[o, i]| + 2·ob)·|x̃ᵢ| with ob a bound on the block's offsets (tests/quant.rs of
///    lowbit-kernels derives it). This checks the kernels' reading of the GGUF layouts against the
///    formats crate's.
/// 2. QuantLinear ≈ DenseF32 on the dequantized weights within the activation-quantization error: each
///    x̃ᵢ differs from xᵢ by at most half a step, d_b/2 with d_b = max|x| of its block / 127 (plus
///    2⁻¹⁶·d_b for the rounding of x·(1/d)), so |Δy| ≤ Σ_b (d_b/2)·Σ_{i∈b}|W[o, i]|, plus the rounding
///    bound of 1. and the f32 product's, γ_{2k}·Σ_i |W[o, i]|·|xᵢ|.
#[test]
fn quant_linear_matches_dequantized_weights() {
    let mut worst_rel = 0f64;
    for ty in tested_types() {
        let dtype = storage_type(ty);
        for (n, k, m) in [(1, 32usize, 1), (3, 96, 7), (5, 800, 13), (1, 576, 37), (17, 224, 9), (2, 1536, 3)] {
            let k = k.next_multiple_of(ty.block_elems());
            let seed = (n * 7 + k * 11 + m * 13) as u64;
            let blocks = random_blocks(ty, m * k / ty.block_elems(), seed);
            let w = dequantize(dtype, &blocks, m * k).unwrap();
            let x = random_acts(n * k, seed + 1);
            let q = QuantLinear::new(ty, blocks, m, k).unwrap();
            let dense = DenseF32::new(w.clone().into(), m, k);
            assert_eq!((q.in_features(), q.out_features()), (k, m));
            let (mut yq, mut yf) = (vec![f32::NAN; n * m], vec![f32::NAN; n * m]);
            q.forward(&x, n, &mut yq);
            dense.forward(&x, n, &mut yf);

            let mut acts = QuantizedActs::new();
            acts.quantize(&x, n, k);
            let xq: Vec<f64> = acts.blocks().iter().flat_map(|b| b.qs.map(|c| b.d as f64 * c as f64)).collect();
            let step: Vec<f64> = acts.blocks().iter().map(|b| b.d as f64).collect();
            for t in 0..n {
                for o in 0..m {
                    let wr = &w[o * k..][..k];
                    let (xr, xqr) = (&x[t * k..][..k], &xq[t * k..][..k]);
                    let got = yq[t * m + o] as f64;
                    let exact_q: f64 = wr.iter().zip(xqr).map(|(&a, &b)| a as f64 * b).sum();
                    let row = &q.blocks()[o * ty.row_bytes(k)..][..ty.row_bytes(k)];
                    let ob = |i: usize| offset_bound(ty, &row[i / ty.block_elems() * ty.block_bytes()..]);
                    let mag: f64 = (0..k).map(|i| ((wr[i] as f64).abs() + 2.0 * ob(i)) * xqr[i].abs()).sum();
                    let tol_q = gamma(k / 16 + 10) * mag;
                    let what = format!("{} {n}×{k}×{m} at ({t}, {o})", ty.name());
                    assert!((got - exact_q).abs() <= tol_q, "{what}: {got} vs {exact_q}, tol {tol_q:e}");

                    let mut act_err = 0.0;
                    let mut rounding = 0.0;
                    for (b, (wb, xb)) in wr.chunks_exact(QK).zip(xr.chunks_exact(QK)).enumerate() {
                        let d = step[t * k / QK + b];
                        let wsum: f64 = wb.iter().map(|&v| (v as f64).abs()).sum();
                        act_err += d * (0.5 + 1.0 / 65536.0) * wsum;
                        rounding += wb.iter().zip(xb).map(|(&v, &u)| (v as f64).abs() * (u as f64).abs()).sum::<f64>();
                    }
                    let tol = act_err + tol_q + gamma(2 * k) * rounding;
                    let diff = (got - yf[t * m + o] as f64).abs();
                    assert!(diff <= tol, "{what}: native {got} vs dense {}, tol {tol:e}", yf[t * m + o]);
                    worst_rel = worst_rel.max(diff / tol);
                }
            }
        }
    }
    // How much of the worst-case bound the error uses: random rounding errors cancel, so typically a
    // small fraction.
    eprintln!("largest |native − dense| / bound: {worst_rel:.3}");
}

/// A bound on |offset| of the elements of a block: Q4_1/Q5_1's m, Q4_K/Q5_K's dmin·63, Q2_K's dmin·15.
fn offset_bound(ty: QuantType, block: &[u8]) -> f64 {
    let f16_at = |i: usize| f64::from(half_to_f32(u16::from_le_bytes([block[i], block[i + 1]]))).abs();
    match ty {
        QuantType::Q4_1 | QuantType::Q5_1 => f16_at(2),
        QuantType::Q4K | QuantType::Q5K => f16_at(2) * 63.0,
        QuantType::Q2K => f16_at(82) * 15.0,
        _ => 0.0,
    }
}

fn tensor<'a>(name: &'a str, dtype: DType, shape: Vec<usize>, data: &'a [u8]) -> TensorRef<'a> {
    TensorRef { name, dtype, shape, data }
}

#[test]
fn native_factory_keeps_legacy_blocks_and_dequantizes_the_rest() {
    let q41 = random_blocks(QuantType::Q4_1, 4, 1);
    let l = NativeFactory::default().build(&tensor("blk.0.ffn_up.weight", DType::Q4_1, vec![2, 64], &q41)).unwrap();
    assert_eq!((l.storage(), l.weight_bytes(), l.in_features(), l.out_features()), ("Q4_1".into(), 80, 64, 2));

    let q80 = random_blocks(QuantType::Q8_0, 2, 2);
    let embd = tensor("token_embd.weight", DType::Q8_0, vec![2, 32], &q80);
    let deq: Arc<[f32]> = dequantize(DType::Q8_0, &q80, 64).unwrap().into();
    let l = NativeFactory::default().build(&embd).unwrap();
    assert_eq!(l.storage(), "Q8_0");
    // A one-hot input quantizes to code 127 with d = fl(1/127): x̃ = x up to one rounding, so native and
    // f32 agree to a few ulps.
    let mut x = vec![0.0; 32];
    x[5] = 1.0;
    let (mut yq, mut yf) = ([0.0; 2], [0.0; 2]);
    l.forward(&x, 1, &mut yq);
    DenseF32::new(deq.clone(), 2, 32).forward(&x, 1, &mut yf);
    assert!(yq.iter().zip(&yf).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs()), "{yq:?} vs {yf:?}");

    // F32 goes through F32Factory, F16/BF16 stay 16-bit (HalfLinear); every block format is native.
    let f32_bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let l = NativeFactory::default().build(&tensor("output.weight", DType::F32, vec![2, 2], &f32_bytes)).unwrap();
    assert_eq!(l.storage(), "F32");
    let l = NativeFactory::default().build(&tensor("blk.0.ffn_down.weight", DType::F16, vec![1, 2], &[0; 4])).unwrap();
    assert_eq!((l.storage(), l.weight_bytes()), ("F16".into(), 4));
    let l =
        NativeFactory::default().build(&tensor("blk.0.ffn_down.weight", DType::Q6K, vec![2, 256], &[0; 420])).unwrap();
    assert_eq!((l.storage(), l.weight_bytes()), ("Q6_K".into(), 420));
    let e = NativeFactory::default()
        .build(&tensor("blk.1.ffn_down.weight", DType::Q4K, vec![2, 128], &[0; 144]))
        .err()
        .unwrap();
    assert!(e.to_string().contains("blk.1.ffn_down.weight") && e.to_string().contains("256"), "{e}");
}

/// The FP16 build holds each weight as the nearest F16 of its dequantized value (rounded here by the `half` crate)
/// and multiplies as f32 would with those weights.
#[test]
fn f16_factory_rounds_every_storage_to_f16() {
    let q41 = random_blocks(QuantType::Q4_1, 4, 7);
    let deq = dequantize(DType::Q4_1, &q41, 128).unwrap();
    let l = F16Factory.build(&tensor("blk.0.ffn_up.weight", DType::Q4_1, vec![2, 64], &q41)).unwrap();
    assert_eq!((l.storage(), l.weight_bytes(), l.in_features(), l.out_features()), ("F16".into(), 256, 64, 2));
    let rounded: Vec<f32> = deq.iter().map(|&v| half::f16::from_f32(v * 1.001).to_f32()).collect();
    let l = F16Factory.build(&tensor("output.weight", DType::F32, vec![2, 64], &f32_bytes(&deq, 1.001))).unwrap();
    let x = Rng::new(3).units(64);
    let (mut got, mut want) = ([0.0; 2], [0.0; 2]);
    l.forward(&x, 1, &mut got);
    DenseF32::new(rounded.into(), 2, 64).forward(&x, 1, &mut want);
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())), "{got:?} vs {want:?}");
    assert!(F16Factory.build(&tensor("output.weight", DType::F32, vec![2, 64], &[0; 12])).is_err());
}

fn f32_bytes(values: &[f32], factor: f32) -> Vec<u8> {
    values.iter().flat_map(|v| (v * factor).to_le_bytes()).collect()
}

#[test]
fn bad_native_tensors_are_typed_errors_naming_the_tensor() {
    // 96 values are 3 whole Q8_0 blocks, but rows of 48 would split a block.
    let q80 = random_blocks(QuantType::Q8_0, 3, 3);
    let e =
        NativeFactory::default().build(&tensor("blk.3.attn_q.weight", DType::Q8_0, vec![2, 48], &q80)).err().unwrap();
    assert!(e.to_string().contains("blk.3.attn_q.weight") && e.to_string().contains("whole blocks"), "{e}");
    let e =
        NativeFactory::default().build(&tensor("blk.3.attn_k.weight", DType::Q8_0, vec![2, 32], &q80)).err().unwrap();
    assert!(e.to_string().contains("blk.3.attn_k.weight") && e.to_string().contains("102"), "{e}");
    let e = NativeFactory::default().build(&tensor("blk.3.attn_v.weight", DType::Q8_0, vec![96], &q80)).err().unwrap();
    assert!(e.to_string().contains("blk.3.attn_v.weight"), "{e}");
    assert!(QuantLinear::new(QuantType::Q4_0, vec![0; 18], 0, 32).is_err());
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

/// The token ids of tests/data/`fixture`.
fn golden_ids(fixture: &str) -> Vec<u32> {
    let path = format!("{}/tests/data/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    golden["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// The logits of every position of `ids`, computed in one batch (the n > 1 kernels) and one token at a
/// time (the decode GEMV).
fn batched_and_stepwise(model: &Model, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut cache = model.new_cache(64).unwrap();
    let batched = model.forward(ids, &mut cache, Logits::From(0)).unwrap();
    let mut cache = model.new_cache(64).unwrap();
    let mut stepwise = Vec::with_capacity(batched.len());
    for &t in ids {
        stepwise.extend(model.forward(&[t], &mut cache, Logits::Last).unwrap());
    }
    (batched, stepwise)
}

/// How far rows of logits `got` are from `want` (rows of `vocab`).
struct Agreement {
    /// Largest |Δlogit|.
    max_diff: f32,
    /// Rows whose argmax is the same.
    agree: usize,
    /// Largest and mean KL(want‖got).
    max_kl: f64,
    mean_kl: f64,
}

fn agreement(got: &[f32], want: &[f32], vocab: usize) -> Agreement {
    let rows = want.len() / vocab;
    let mut a = Agreement { max_diff: 0.0, agree: 0, max_kl: 0.0, mean_kl: 0.0 };
    for (g, w) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)) {
        a.max_diff = g.iter().zip(w).map(|(x, y)| (x - y).abs()).fold(a.max_diff, f32::max);
        a.agree += usize::from(argmax(g) == argmax(w));
        let kl = kl(w, g);
        a.max_kl = a.max_kl.max(kl);
        a.mean_kl += kl / rows as f64;
    }
    a
}

/// SmolLM2 (Q4_1 layers, Q8_0 tied embedding) loaded with NativeFactory against the same file
/// dequantized to f32, on the 22 tokens of the golden fixture, batched (the n > 1 kernels) and one
/// token at a time (the decode GEMV).
#[test]
fn smollm2_native_logits_match_f32() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let ids = golden_ids("golden_smollm2.json");
    let source = ModelSource::open(&path).unwrap();
    let native = Model::load(&source, &NativeFactory::default()).unwrap();
    let dense = Model::load(&source, &F32Factory).unwrap();
    let vocab = native.config.vocab_size;
    // Both keep the Q8_0 embedding table for lookups (34 bytes per 32 values); the tied head is native
    // Q8_0 in one and f32 in the other; every layer matrix is native Q4_1, 20 bytes per 32 weights
    // instead of 128.
    let table = vocab * native.config.hidden_size;
    let (embedding, layers_f32) = (table / 32 * 34, dense.weight_bytes() - table / 32 * 34 - table * 4);
    assert_eq!(native.weight_bytes(), embedding + embedding + layers_f32 / 128 * 20);

    let mut cache = dense.new_cache(64).unwrap();
    let want = dense.forward(&ids, &mut cache, Logits::From(0)).unwrap();
    let (batched, stepwise) = batched_and_stepwise(&native, &ids);
    // The tile kernels of n > 1 add each output's terms in the same order as the GEMV, and attention and
    // norms work row by row, so the two runs agree exactly today (measured: 0). The bound leaves room
    // for rounding differences elsewhere in the forward pass flipping an activation code; a token or
    // row mix-up in the tiles moves logits by whole units.
    let step_err = batched.iter().zip(&stepwise).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("SmolLM2 native: stepwise vs batched max |Δ| {step_err:.2e}");
    assert!(step_err < 0.1, "native decode differs from native prefill by {step_err}");
    for (label, got) in [("batched", &batched), ("stepwise", &stepwise)] {
        let Agreement { max_diff, agree, max_kl, mean_kl } = agreement(got, &want, vocab);
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
        eprintln!(
            "SmolLM2 native ({label}) vs f32: max |Δlogit| {max_diff:.3} (logits up to {scale:.1}), \
             argmax agrees {agree}/{}, KL max {max_kl:.2e} mean {mean_kl:.2e}",
            ids.len()
        );
        // What quantizing the activations costs by itself, measured independently: the float64 numpy
        // forward of scripts/golden/np_forward.py with every matmul input x (and the final hidden state)
        // replaced by d·round(x/d) per block of 32, d = max|x|/127, moves these logits by up to 1.63,
        // with KL up to 0.029 (mean 0.0049) and the same argmax at all 22 positions; this runtime
        // measured 1.55, 0.021 (mean 0.0046), 21/22 (22/22 with an earlier order of float additions:
        // which codes round which way decides one position). The bounds allow about twice that; a wrong code,
        // scale or block breaks them by orders of magnitude (KL ≫ 1).
        assert!(agree + 1 >= ids.len(), "{label}: argmax agrees at only {agree} of {} positions", ids.len());
        assert!(max_kl < 0.06 && mean_kl < 0.01, "{label}: KL from the f32 model up to {max_kl} (mean {mean_kl})");
        assert!(max_diff < 4.0, "{label}: logits differ by up to {max_diff}");
    }
}

/// Gemma 3 (llama.cpp's Q4_K_M: Q5_0 and Q8_0 matrices, Q4_K and Q6_K on the 2048-wide down
/// projections) loaded with NativeFactory against the same file dequantized to f32, on the 23 tokens of
/// its golden fixture: the k-quant and Q5_0 kernels on a real model, batched and one token at a time.
#[test]
fn gemma3_native_logits_match_f32() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::GEMMA3) else { return };
    let ids = golden_ids("golden_gemma3.json");
    let source = ModelSource::open(&path).unwrap();
    let native = Model::load(&source, &NativeFactory::default()).unwrap();
    let vocab = native.config.vocab_size;
    let (batched, stepwise) = batched_and_stepwise(&native, &ids);
    // Each output is the same float operations whether its token came alone or in a batch.
    assert!(batched == stepwise, "Gemma 3 native: batched and stepwise logits differ");
    drop(native);
    let dense = Model::load(&source, &F32Factory).unwrap();
    let mut cache = dense.new_cache(64).unwrap();
    let want = dense.forward(&ids, &mut cache, Logits::From(0)).unwrap();
    let Agreement { max_diff, agree, max_kl, mean_kl } = agreement(&batched, &want, vocab);
    eprintln!(
        "Gemma 3 native vs f32: max |Δlogit| {max_diff:.3}, argmax agrees {agree}/{}, KL max {max_kl:.2e} mean {mean_kl:.2e}",
        ids.len()
    );
    // Measured: max |Δlogit| 1.73, KL up to 0.032 (mean 0.0043), argmax 23/23: the size of what
    // quantizing the activations costs SmolLM2 by the independent numpy measurement above (KL up to
    // 0.029, mean 0.0049). The bounds allow about three times that; a wrong code, scale or block breaks
    // them by orders of magnitude.
    assert!(agree + 1 >= ids.len(), "argmax agrees at only {agree} of {} positions", ids.len());
    assert!(max_kl < 0.1 && mean_kl < 0.015, "KL from the f32 model up to {max_kl} (mean {mean_kl})");
}

/// KL(p‖q) in nats of the softmaxes of two logit rows.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(&a, &b)| a.exp() * (a - b)).sum()
}

fn log_softmax(r: &[f32]) -> Vec<f64> {
    let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + r.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    r.iter().map(|&v| v as f64 - lse).collect()
}
