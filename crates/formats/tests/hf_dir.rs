//! A sharded Hugging Face directory written by numpy + the Python `safetensors` package
//! (scripts/golden/gen_hf_tiny.py), read through `ModelSource`: config fields, canonical names,
//! file order, shapes, dtypes and values must all be what the script wrote.

use std::path::{Path, PathBuf};

use lowbit_formats::config::{Arch, AttentionKind, RopeStyle};
use lowbit_formats::source::ModelSource;
use lowbit_formats::{params, DType, FormatError};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf_tiny")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

#[test]
fn config_fields() {
    let source = ModelSource::open(&fixture()).unwrap();
    let want = &expected()["config"];
    let c = source.config().unwrap();
    assert_eq!(source.path(), fixture());
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(c.vocab_size, usize_of(&want["vocab_size"]));
    assert_eq!(c.hidden_size, usize_of(&want["hidden_size"]));
    assert_eq!(c.intermediate_size, usize_of(&want["intermediate_size"]));
    assert_eq!(c.n_layers, usize_of(&want["num_hidden_layers"]));
    assert_eq!(c.n_heads, usize_of(&want["num_attention_heads"]));
    assert_eq!(c.n_kv_heads, usize_of(&want["num_key_value_heads"]));
    assert_eq!(c.head_dim, usize_of(&want["head_dim"]));
    assert_eq!(c.context_length, usize_of(&want["max_position_embeddings"]));
    assert_eq!(c.rms_eps, want["rms_norm_eps"].as_f64().unwrap() as f32);
    assert_eq!(c.rope_theta, want["rope_theta"].as_f64().unwrap() as f32);
    assert_eq!(c.rope_style, RopeStyle::Neox);
    assert!(!c.tie_embeddings && !c.qkv_bias && c.moe.is_none());
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2, 5]);
    assert_eq!(c.layer_attention, vec![AttentionKind::Full; 2]);
    assert!(source.gguf().is_none());
}

#[test]
fn canonical_names_in_file_order() {
    let source = ModelSource::open(&fixture()).unwrap();
    let want: Vec<String> =
        expected()["file_order"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(want.len(), 21);
    assert_eq!(source.tensor_names(), want);
    let ModelSource::Hf(model) = &source else { panic!("not an HF source") };
    assert_eq!(model.shards().len(), 2);
    for t in model.tensors() {
        assert_eq!(expected()["tensors"][&t.canonical]["hf_name"], t.hf_name.as_str());
    }
}

#[test]
fn shapes_dtypes_and_values() {
    let source = ModelSource::open(&fixture()).unwrap();
    let expected = expected();
    let tensors = expected["tensors"].as_object().unwrap();
    let mut dtypes_seen = std::collections::HashSet::new();
    for (name, want) in tensors {
        let t = source.tensor(name).unwrap();
        let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(usize_of).collect();
        let dtype = match want["dtype"].as_str().unwrap() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => panic!("{other}"),
        };
        dtypes_seen.insert(dtype);
        assert_eq!((t.name, &t.shape, t.dtype), (name.as_str(), &shape, dtype));
        assert_eq!(t.data.len(), shape.iter().product::<usize>() * dtype.block_bytes(), "{name}");

        let (shape_f32, values) = source.tensor_f32(name).unwrap();
        assert_eq!(shape_f32, shape);
        for pair in want["samples"].as_array().unwrap() {
            // The samples are f32 values; serde_json's f64 parse may be an ulp off, which the
            // conversion back to f32 absorbs.
            let (i, v) = (usize_of(&pair[0]), pair[1].as_f64().unwrap() as f32);
            assert_eq!(values[i], v, "{name}[{i}]");
        }
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want_sum = want["sum"].as_f64().unwrap();
        assert!((sum - want_sum).abs() <= 1e-9 * values.len() as f64, "{name}: sum {sum} vs {want_sum}");
    }
    assert_eq!(dtypes_seen.len(), 3);
}

/// Tensor bytes are borrowed from the shard maps: asking twice gives the same memory.
#[test]
fn data_is_borrowed() {
    let source = ModelSource::open(&fixture()).unwrap();
    let a = source.tensor("blk.1.attn_q.weight").unwrap().data.as_ptr();
    let b = source.tensor("blk.1.attn_q.weight").unwrap().data.as_ptr();
    assert_eq!(a, b);
}

#[test]
fn missing_tensor_is_typed() {
    let source = ModelSource::open(&fixture()).unwrap();
    assert!(
        matches!(source.tensor("blk.9.attn_q.weight"), Err(FormatError::MissingTensor(n)) if n == "blk.9.attn_q.weight")
    );
    // Hugging Face names are not canonical names.
    assert!(matches!(source.tensor("model.norm.weight"), Err(FormatError::MissingTensor(_))));
}

/// Every tensor is where the config says it should be: counting from tensors and from the
/// config agree, and the untied lm_head is its own vocab x width matrix.
#[test]
fn parameter_counts_agree() {
    let source = ModelSource::open(&fixture()).unwrap();
    let cfg = source.config().unwrap();
    let from_tensors = params::from_tensors(&source, &cfg).unwrap();
    assert_eq!(from_tensors, params::from_config(&cfg).unwrap());
    assert_eq!(from_tensors.lm_head, 96 * 64);
    assert_eq!(from_tensors.embedding, 96 * 64);
}

/// The directory's config.json alone opens as structure without tensors.
#[test]
fn config_json_alone() {
    let path = fixture().join("config.json");
    let source = ModelSource::open(&path).unwrap();
    assert!(matches!(source, ModelSource::ConfigOnly { .. }));
    assert_eq!(source.path(), path);
    assert_eq!(source.config().unwrap(), ModelSource::open(&fixture()).unwrap().config().unwrap());
    assert!(source.tensor_names().is_empty());
    assert!(matches!(source.tensor("token_embd.weight"), Err(FormatError::MissingTensor(_))));
}

/// A lone shard is refused with a typed error that says what to open instead.
#[test]
fn lone_safetensors_file_is_refused() {
    let path = fixture().join("model-00001-of-00002.safetensors");
    let e = ModelSource::open(&path).unwrap_err();
    assert!(matches!(&e, FormatError::Unsupported { path: p, .. } if *p == path), "{e}");
}
