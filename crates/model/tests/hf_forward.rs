//! The Hugging Face path end to end: tiny random Llama (BF16, tied), Qwen2 (F16, biases, sharded)
//! and Gemma 3 (F32, QK-norm, sliding window 4 on a 12-token input) directories, opened through
//! `ModelSource`, loaded with `F32Factory`, and run; logits must match those of an independent numpy
//! forward pass written from transformers' modeling code (scripts/golden/gen_hf_forward.py, which
//! also writes the fixtures under tests/data/hf_forward).
//!
//! Tolerance: `ATOL` = 1e-4 absolute on logits of magnitude up to ~18 (std ~2-4). The golden is
//! float64 arithmetic on the stored weights; lowbit computes in f32 (relative precision 6e-8), with
//! sums of 48-160 terms and ten or so dependent steps (norms, softmax, residual adds) per layer.
//! The generator runs its own forward in float32 and finds it within 1.0e-5 (llama), 8.6e-6 (qwen2)
//! and 3.3e-6 (gemma3) of the float64 logits, and lowbit lands within 8.6e-6, 3.8e-6 and 2.0e-6;
//! 1e-4 leaves 10-50x room for another summation order, while every deliberate bug the generator
//! tries (interleaved RoPE, wrong GQA head mapping, missing biases, wrong or swapped RoPE bases,
//! norm without +1, no embedding scale, head_dim instead of query_pre_attn_scalar, window off by
//! one or absent, no QK-norm, no causal mask) moves some logit by at least 0.69 (6900x ATOL); exact
//! instead of tanh GELU moves one by 1.6e-3 (16x).
//! The top-1 logit beats the runner-up by at least 0.014 (140x ATOL) at every position, so argmax
//! must agree exactly.

use std::path::{Path, PathBuf};

use lowbit_formats::config::{Activation, Arch, AttentionKind, ModelConfig, RopeStyle};
use lowbit_formats::source::ModelSource;
use lowbit_formats::DType;
use lowbit_model::{F32Factory, Logits, Model};

const ATOL: f32 = 1e-4;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf_forward")
}

/// A `.npy` array (format 1.x/2.x/3.x, C order, little-endian): its dtype string and shape, and
/// the raw data bytes.
fn read_npy(path: &Path) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
        v => panic!("{}: .npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let field = |key: &str| {
        let at = header.find(&format!("'{key}':")).unwrap_or_else(|| panic!("{header}: no {key}")) + key.len() + 3;
        header[at..].trim_start()
    };
    let descr = field("descr");
    let descr = descr[1..].split('\'').next().unwrap().to_string();
    assert!(field("fortran_order").starts_with("False"), "{}: Fortran order", path.display());
    let shape_text = field("shape");
    let shape = shape_text[1..shape_text.find(')').unwrap()]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, shape, bytes[start + header_len..].to_vec())
}

struct Golden {
    ids: Vec<u32>,
    vocab: usize,
    /// Row-major `[ids.len(), vocab]`.
    logits: Vec<f32>,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let (descr, shape, data) = read_npy(&data_dir().join(format!("{name}.input_ids.npy")));
        assert_eq!(descr, "<i4");
        assert_eq!(shape.len(), 1);
        let ids: Vec<u32> =
            data.chunks_exact(4).map(|b| u32::try_from(i32::from_le_bytes(b.try_into().unwrap())).unwrap()).collect();
        assert_eq!(ids.len(), shape[0]);

        let (descr, shape, data) = read_npy(&data_dir().join(format!("{name}.logits.npy")));
        assert_eq!(descr, "<f4");
        assert_eq!(shape.len(), 2);
        assert_eq!(shape[0], ids.len());
        let logits: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(logits.len(), shape[0] * shape[1]);
        Golden { ids, vocab: shape[1], logits }
    }

    fn row(&self, t: usize) -> &[f32] {
        &self.logits[t * self.vocab..(t + 1) * self.vocab]
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Compares logits rows `first..` of the golden with `got`; returns the largest absolute error.
fn compare(name: &str, mode: &str, golden: &Golden, first: usize, got: &[f32]) -> f32 {
    let rows = golden.ids.len() - first;
    assert_eq!(got.len(), rows * golden.vocab, "{name} {mode}: logits length");
    let mut worst = 0f32;
    for r in 0..rows {
        let (want, have) = (golden.row(first + r), &got[r * golden.vocab..(r + 1) * golden.vocab]);
        for (v, (&w, &h)) in want.iter().zip(have).enumerate() {
            let err = (w - h).abs();
            assert!(
                err <= ATOL,
                "{name} {mode}: position {} token {v}: got {h}, golden {w} (|err| {err:.2e} > {ATOL:.0e})",
                first + r
            );
            worst = worst.max(err);
        }
        assert_eq!(argmax(have), argmax(want), "{name} {mode}: argmax at position {}", first + r);
    }
    worst
}

/// Loads fixture `name`, lets `check_config` inspect what was read, then runs the golden input
/// four ways: all at once, token by token through the KV cache, as two chunks (5 + 7 tokens: the
/// second chunk starts past the sliding window with cached keys), and all at once asking only for
/// the last row.
fn run_fixture(name: &str, check_config: impl Fn(&ModelConfig, &ModelSource)) {
    let golden = Golden::load(name);
    let n = golden.ids.len();
    let source = ModelSource::open(&data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let config = source.config().unwrap();
    assert_eq!(config.vocab_size, golden.vocab, "{name}: vocab_size");
    check_config(&config, &source);
    let model = Model::load(&source, &F32Factory).unwrap_or_else(|e| panic!("{name}: {e}"));

    let mut cache = model.new_cache(n).unwrap();
    let all = model.forward(&golden.ids, &mut cache, Logits::From(0)).unwrap();
    assert_eq!(cache.len(), n);
    let err_all = compare(name, "one call", &golden, 0, &all);

    let mut cache = model.new_cache(n).unwrap();
    let mut stepwise = Vec::with_capacity(n * golden.vocab);
    for (t, &id) in golden.ids.iter().enumerate() {
        let row = model.forward(&[id], &mut cache, Logits::From(0)).unwrap();
        assert_eq!(cache.len(), t + 1);
        stepwise.extend(row);
    }
    let err_step = compare(name, "token by token", &golden, 0, &stepwise);

    let mut cache = model.new_cache(n).unwrap();
    let mut chunked = model.forward(&golden.ids[..5], &mut cache, Logits::From(0)).unwrap();
    chunked.extend(model.forward(&golden.ids[5..], &mut cache, Logits::From(0)).unwrap());
    let err_chunk = compare(name, "5 + 7 tokens", &golden, 0, &chunked);

    let mut cache = model.new_cache(n).unwrap();
    let last = model.forward(&golden.ids, &mut cache, Logits::Last).unwrap();
    let err_last = compare(name, "last row only", &golden, n - 1, &last);

    eprintln!(
        "{name}: max |logit - golden|: one call {err_all:.2e}, token by token {err_step:.2e}, \
         5 + 7 {err_chunk:.2e}, last only {err_last:.2e} (tolerance {ATOL:.0e})"
    );
}

fn dtype_of(source: &ModelSource, name: &str) -> DType {
    source.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}")).dtype
}

#[test]
fn golden_inputs_are_long_enough() {
    // The Gemma fixture must run past its sliding window for the window to matter.
    for name in ["llama", "qwen2", "gemma3"] {
        let g = Golden::load(name);
        assert_eq!(g.ids.len(), 12, "{name}");
        assert_eq!(g.logits.len(), 12 * g.vocab, "{name}");
        assert!(g.logits.iter().all(|v| v.is_finite()), "{name}");
    }
}

/// model_type llama: tied embeddings (no lm_head tensor), GQA 4/2, head_dim 16, BF16 weights.
#[test]
fn llama_bf16_tied_matches_numpy() {
    run_fixture("llama", |c, source| {
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!((c.hidden_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim), (64, 2, 4, 2, 16));
        assert_eq!((c.rope_theta, c.rope_style, c.rms_eps), (10_000.0, RopeStyle::Neox, 1e-5));
        assert!(c.tie_embeddings && !c.qkv_bias);
        assert_eq!(c.layer_attention, vec![AttentionKind::Full; 2]);
        assert_eq!((c.norm_weight_offset, c.embedding_scale, c.activation), (0.0, None, Activation::Silu));
        assert!(!source.tensor_names().contains(&"output.weight"), "a tied checkpoint has no lm_head");
        assert_eq!(dtype_of(source, "blk.1.attn_q.weight"), DType::BF16);
        assert_eq!(dtype_of(source, "token_embd.weight"), DType::BF16);
    });
}

/// model_type qwen2: q/k/v biases, untied lm_head, head_dim derived from hidden/heads, F16,
/// two shards with an index.
#[test]
fn qwen2_f16_sharded_matches_numpy() {
    run_fixture("qwen2", |c, source| {
        assert_eq!(c.arch, Arch::Qwen2);
        assert_eq!((c.hidden_size, c.intermediate_size, c.n_heads, c.n_kv_heads, c.head_dim), (64, 160, 4, 2, 16));
        assert_eq!((c.rope_theta, c.rms_eps), (1e6, 1e-6));
        assert!(!c.tie_embeddings && c.qkv_bias);
        assert_eq!(c.layer_attention, vec![AttentionKind::Full; 2]);
        assert_eq!(dtype_of(source, "output.weight"), DType::F16);
        assert_eq!(dtype_of(source, "blk.0.attn_k.bias"), DType::F16);
        // One tensor from each shard.
        assert_eq!(dtype_of(source, "blk.0.attn_q.weight"), DType::F16);
        assert_eq!(dtype_of(source, "blk.1.ffn_down.weight"), DType::F16);
    });
}

/// model_type gemma3_text: QK-norm, four norms per block stored as w (applied as 1 + w),
/// gelu_pytorch_tanh, query_pre_attn_scalar 24 with head_dim 16, sliding window 4 on layers 0 and
/// 2, local RoPE base 1e4 and global 1e6, embeddings scaled by sqrt(48), F32.
#[test]
fn gemma3_f32_sliding_matches_numpy() {
    run_fixture("gemma3", |c, source| {
        assert_eq!(c.arch, Arch::Gemma3);
        assert_eq!((c.hidden_size, c.q_dim(), c.n_layers, c.n_kv_heads), (48, 64, 3, 2));
        assert_eq!(
            c.layer_attention,
            vec![AttentionKind::Sliding { window: 4 }, AttentionKind::Full, AttentionKind::Sliding { window: 4 }]
        );
        assert_eq!((c.rope_theta, c.rope_theta_sliding), (1e6, Some(1e4)));
        assert_eq!(c.attention_scale, 1.0 / 24f32.sqrt());
        assert_eq!(c.embedding_scale, Some(48f32.sqrt()));
        assert_eq!((c.norm_weight_offset, c.activation), (1.0, Activation::GeluTanh));
        assert!(c.tie_embeddings, "Gemma 3 ties by default; the key is absent");
        for t in ["attn_q_norm", "attn_k_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"] {
            assert_eq!(dtype_of(source, &format!("blk.2.{t}.weight")), DType::F32, "{t}");
        }
    });
}
