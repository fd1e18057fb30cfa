//! GPT-OSS against Hugging Face transformers: the two tiny random checkpoints of
//! ../shared/fixtures/gpt-oss-tiny (made by its make_fixtures.py with transformers 5.23; `tiny_f32` in f32,
//! `tiny_mxfp4` with MXFP4 experts and the rest BF16) and their golden outputs for a 24-token input: logits,
//! the hidden states after the embedding and each block, every block's router logits, and 8 greedy tokens
//! decoded with the KV cache. The input is longer than the sliding window (8), the router's top-2 of 4
//! experts differs from token to token, and its SwiGLU clamp is reached (np_ref.py counts the hits).
//!
//! Tolerance 1e-4 absolute, the bar, for the reference runtime (every weight in f32): the goldens are
//! float32 PyTorch, and the fixture's own independent numpy forward (np_ref.py) lands within ~6e-6. The native
//! runtime keeps the MXFP4 experts packed and multiplies int8-quantized activations, which moves values by a
//! percent of the largest value here (measured: logits 7.2e-2 of 4.0, hidden states 0.24 of 22.6, router
//! 5.2e-2 of 6.5), because this random model's expert inputs have outliers that coarsen the int8 steps of
//! their blocks; it must agree on every greedy token and stay within [`NATIVE_REL`] of the largest value.

use std::path::{Path, PathBuf};

use lowbit_formats::gguf_convert::convert_gpt_oss;
use lowbit_formats::gguf_tokenizer::{BpeVocab, TOKEN_NORMAL};
use lowbit_formats::source::ModelSource;
use lowbit_formats::DType;
use lowbit_model::{F32Factory, LinearFactory, Logits, Model, NativeFactory, Site};

const ATOL: f32 = 1e-4;
/// Int8 activations (a step of max|x|/127 per 32 values) through two blocks, relative to the largest value.
const NATIVE_REL: f32 = 3e-2;

fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/gpt-oss-tiny").join(variant)
}

/// The golden file, read here with a few lines of its own: it holds I64 tensors, which no model file has.
struct Golden {
    header: serde_json::Value,
    data: Vec<u8>,
}

impl Golden {
    fn open(variant: &str) -> Golden {
        let bytes = std::fs::read(fixture(variant).join("golden.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        Golden { header, data: bytes[8 + n..].to_vec() }
    }

    fn raw(&self, name: &str, dtype: &str) -> &[u8] {
        let t = &self.header[name];
        assert_eq!(t["dtype"], dtype, "golden {name}");
        let at = |i: usize| t["data_offsets"][i].as_u64().unwrap() as usize;
        &self.data[at(0)..at(1)]
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        self.raw(name, "F32").chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn tokens(&self, name: &str) -> Vec<u32> {
        self.raw(name, "I64").chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    }
}

/// Max |got − want| and max |want|.
fn max_err(what: &str, got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    (err, want.iter().fold(0.0, |m, v| m.max(v.abs())))
}

/// The hidden states after the embedding and after each block, and each block's router logits, computed one
/// block at a time through the calibration seam.
fn trace(model: &Model, tokens: &[u32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let n = tokens.len();
    let mut cache = model.new_cache(n).unwrap();
    let mut x = model.embed(tokens).unwrap();
    let (mut hidden, mut router) = (vec![x.clone()], Vec::new());
    for b in 0..model.n_blocks() {
        let h = model.site_input(b, Site::AttnIn, &x, n).unwrap();
        let heads = model.attention_heads_of(b, &h, n, &mut cache).unwrap();
        let attn = model.attention_output_of(b, &heads, n).unwrap();
        x.iter_mut().zip(&attn).for_each(|(a, d)| *a += d);
        let h = model.site_input(b, Site::MlpIn, &x, n).unwrap();
        router.push(model.router_logits_of(b, &h, n).unwrap());
        let ffn = model.ffn_output_of(b, &h, n, &mut ()).unwrap();
        x.iter_mut().zip(&ffn).for_each(|(a, d)| *a += d);
        hidden.push(x.clone());
    }
    (hidden, router)
}

/// Greedy decoding of `steps` tokens after `prompt`, one token per forward through the KV cache.
fn greedy(model: &Model, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + steps).unwrap();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..steps {
        let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        out.push(next);
        logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
    }
    out
}

/// (name, max |error|, max |golden|) of every golden tensor against `factory`'s build; checks the greedy
/// tokens exactly.
fn errors(variant: &str, factory: &dyn LinearFactory) -> Vec<(String, f32, f32)> {
    errors_of(&fixture(variant), variant, factory)
}

/// [`errors`] of the model at `path`, against `variant`'s goldens.
fn errors_of(path: &Path, variant: &str, factory: &dyn LinearFactory) -> Vec<(String, f32, f32)> {
    let golden = Golden::open(variant);
    let source = ModelSource::open(path).unwrap();
    let model = Model::load(&source, factory).unwrap();
    let ids = golden.tokens("input_ids");
    let mut cache = model.new_cache(ids.len()).unwrap();
    let logits = model.forward(&ids, &mut cache, Logits::From(0)).unwrap();
    let (mut hidden, router) = trace(&model, &ids);
    // transformers' last hidden state is the final norm's output.
    let last = model.head_input(hidden.last().unwrap());
    *hidden.last_mut().unwrap() = last;
    let mut got = vec![("logits".to_string(), logits)];
    got.extend(hidden.into_iter().enumerate().map(|(i, h)| (format!("hidden_states.{i}"), h)));
    got.extend(router.into_iter().enumerate().map(|(i, r)| (format!("router_logits.{i}"), r)));
    assert_eq!(greedy(&model, &ids, 8), golden.tokens("greedy_tokens"), "{variant}: greedy tokens");
    got.into_iter()
        .map(|(name, v)| {
            let (err, mag) = max_err(&name, &v, &golden.f32s(&name));
            println!("{variant} {name}: max |error| {err:.2e} (max |golden| {mag:.2})");
            (name, err, mag)
        })
        .collect()
}

fn reference_matches(variant: &str) {
    for (name, err, _) in errors(variant, &F32Factory) {
        assert!(err <= ATOL, "{variant} {name}: {err:e} > {ATOL:e}");
    }
}

/// The fixture converted to GGUF as llama.cpp lays GPT-OSS out (gate and up experts split, MXFP4 in ggml's
/// blocks), read back by the GGUF loader, against the same goldens. The tokenizer is a stand-in of the
/// fixture's 512 ids: the model never reads it.
fn gguf_matches(variant: &str) {
    let vocab = BpeVocab {
        pre: "gpt-4o".into(),
        tokens: (0..512).map(|i| format!("t{i}")).collect(),
        token_types: vec![TOKEN_NORMAL; 512],
        merges: Vec::new(),
        bos: Some(0),
        eos: Some(2),
        pad: Some(1),
        add_bos: false,
        chat_template: None,
    };
    let out = std::env::temp_dir().join(format!("lowbit-gpt-oss-{variant}-{}.gguf", std::process::id()));
    let source = ModelSource::open(&fixture(variant)).unwrap();
    convert_gpt_oss(&source, &vocab, variant, &out, &|_, _| {}).unwrap();
    let file = ModelSource::open(&out).unwrap();
    let names = file.tensor_names();
    assert!(names.contains(&"blk.1.ffn_gate_exps.weight") && !names.iter().any(|n| n.contains("gate_up")));
    let experts = file.tensor("blk.0.ffn_up_exps.weight").unwrap().dtype;
    assert_eq!(experts, if variant == "tiny_mxfp4" { DType::MXFP4 } else { DType::F32 });
    let (reference, native) =
        (errors_of(&out, variant, &F32Factory), errors_of(&out, variant, &NativeFactory::default()));
    std::fs::remove_file(&out).unwrap();
    for (name, err, _) in reference {
        assert!(err <= ATOL, "{variant} as GGUF {name}: {err:e} > {ATOL:e}");
    }
    // The native runtime multiplies ggml's MXFP4 blocks by int8 activations (the experts' QuantLinear).
    for (name, err, mag) in native {
        assert!(err <= NATIVE_REL * mag, "{variant} as GGUF, native {name}: {err:e} > {NATIVE_REL} × {mag}");
    }
}

#[test]
fn tiny_f32_as_gguf_matches_transformers() {
    gguf_matches("tiny_f32");
}

#[test]
fn tiny_mxfp4_as_gguf_matches_transformers() {
    gguf_matches("tiny_mxfp4");
}

#[test]
fn tiny_f32_matches_transformers() {
    reference_matches("tiny_f32");
}

#[test]
fn tiny_mxfp4_matches_transformers() {
    reference_matches("tiny_mxfp4");
}

#[test]
fn tiny_mxfp4_on_packed_experts_decodes_the_same_tokens() {
    for (name, err, mag) in errors("tiny_mxfp4", &NativeFactory::default()) {
        assert!(err <= NATIVE_REL * mag, "{name}: {err:e} > {NATIVE_REL} × {mag}");
    }
}
