//! The tensors of a checkpoint as its authors released it, from its config alone: names, shapes and
//! dtypes, so that exact sizes (and a synthetic checkpoint of the same shape) follow without the weights.
//!
//! Only GPT-OSS has a known release layout here: MXFP4 experts (U8 codes `[experts, rows, cols/32, 16]`
//! and E8M0 scales `[experts, rows, cols/32]`), everything else BF16, untied lm_head.

use crate::config::{Arch, ModelConfig};
use crate::dtype::DType;

/// One tensor of a released checkpoint, under its Hugging Face name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub hf_name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorSpec {
    /// Bytes of its data (`None` on overflow).
    pub fn bytes(&self) -> Option<u64> {
        let width = match self.dtype {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::I8 => 1,
            _ => return None,
        };
        self.shape.iter().try_fold(width, |acc: u64, &d| acc.checked_mul(d as u64))
    }
}

/// The released tensors of a model of this config, in layer order; `None` for architectures without a
/// known release layout (every one but GPT-OSS).
pub fn released_tensors(cfg: &ModelConfig) -> Option<Vec<TensorSpec>> {
    if cfg.arch != Arch::GptOss {
        return None;
    }
    let moe = cfg.moe.as_ref()?;
    let (d, ff, e, q, kv) = (cfg.hidden_size, cfg.intermediate_size, moe.n_experts, cfg.q_dim(), cfg.kv_dim());
    let spec = |name: String, shape: Vec<usize>, dtype| TensorSpec { hf_name: name, shape, dtype };
    let bf16 = |name: String, shape: Vec<usize>| spec(name, shape, DType::BF16);
    let mut t = vec![bf16("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d])];
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        t.push(bf16(p("input_layernorm.weight"), vec![d]));
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            t.push(bf16(p(&format!("self_attn.{proj}.weight")), vec![rows, d]));
            t.push(bf16(p(&format!("self_attn.{proj}.bias")), vec![rows]));
        }
        t.push(bf16(p("self_attn.o_proj.weight"), vec![d, q]));
        t.push(bf16(p("self_attn.o_proj.bias"), vec![d]));
        t.push(bf16(p("self_attn.sinks"), vec![cfg.n_heads]));
        t.push(bf16(p("post_attention_layernorm.weight"), vec![d]));
        t.push(bf16(p("mlp.router.weight"), vec![e, d]));
        t.push(bf16(p("mlp.router.bias"), vec![e]));
        for (proj, rows, cols) in [("gate_up_proj", 2 * ff, d), ("down_proj", d, ff)] {
            t.push(spec(p(&format!("mlp.experts.{proj}_blocks")), vec![e, rows, cols / 32, 16], DType::U8));
            t.push(spec(p(&format!("mlp.experts.{proj}_scales")), vec![e, rows, cols / 32], DType::U8));
            t.push(bf16(p(&format!("mlp.experts.{proj}_bias")), vec![e, rows]));
        }
    }
    t.push(bf16("model.norm.weight".into(), vec![d]));
    t.push(bf16("lm_head.weight".into(), vec![cfg.vocab_size, d]));
    Some(t)
}

/// The released tensors as lowbit sees them: canonical names, each MXFP4 stack as one `….weight` of shape
/// `[experts, rows, cols]` (its two halves merged), every other tensor as released.
pub fn logical_tensors(cfg: &ModelConfig) -> Option<Vec<(String, Vec<usize>)>> {
    let released = released_tensors(cfg)?;
    Some(
        released
            .into_iter()
            .filter(|t| !t.hf_name.ends_with("_scales"))
            .map(|t| match t.hf_name.strip_suffix("_blocks") {
                // `…experts.gate_up_proj` is the stack's canonical `….ffn_gate_up_exps.weight`.
                Some(base) => {
                    (crate::names::hf_to_canonical(cfg.arch, base), vec![t.shape[0], t.shape[1], t.shape[2] * 32])
                }
                None => (crate::names::hf_to_canonical(cfg.arch, &t.hf_name), t.shape),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf_config::read_json;

    const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/gpt-oss-20b");

    /// The released GPT-OSS-20B: the same 459 names as its safetensors index, and exactly its total_size.
    #[test]
    fn gpt_oss_20b_layout_is_the_releases() {
        let dir = std::path::Path::new(REFERENCE);
        let config = dir.join("config.json");
        let cfg = ModelConfig::from_hf_json(&config, &read_json(&config).unwrap()).unwrap();
        let tensors = released_tensors(&cfg).unwrap();
        let index = read_json(&dir.join("model.safetensors.index.json")).unwrap();
        let mut want: Vec<&str> = index["weight_map"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut got: Vec<&str> = tensors.iter().map(|t| t.hf_name.as_str()).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        let bytes: u64 = tensors.iter().map(|t| t.bytes().unwrap()).sum();
        assert_eq!(bytes, index["metadata"]["total_size"].as_u64().unwrap());
        assert_eq!(bytes, 13_761_264_768);
    }
}
