//! Parameter counts: from a `ModelConfig` alone (what `inspect` shows for a bare config.json),
//! and from the tensors of an open model (which checks the former).
//!
//! Active parameters are those one token's forward pass multiplies with: every non-expert
//! weight, `experts_per_token` experts per MoE layer, and an untied output projection. The input
//! embedding is a row lookup and is not counted as active. This is the convention of OpenAI's
//! GPT-OSS model card (20.9B total, 3.6B active for gpt-oss-20b).

use crate::config::{Arch, ModelConfig};
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::source::{ModelSource, TensorRef};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCount {
    /// The input embedding table.
    pub embedding: u64,
    /// The untied output projection; 0 when it is tied to the embedding.
    pub lm_head: u64,
    /// All routed experts, weights and biases; 0 for a dense model.
    pub experts: u64,
    /// The experts one token uses: `experts_per_token` of them in every MoE layer.
    pub experts_active: u64,
    /// Everything else: attention, norms, dense MLPs, routers.
    pub other: u64,
}

impl ParamCount {
    pub fn total(&self) -> u64 {
        self.embedding + self.lm_head + self.experts + self.other
    }

    pub fn active(&self) -> u64 {
        self.lm_head + self.experts_active + self.other
    }

    /// Makes sure `total` and `active` cannot overflow.
    fn checked(self) -> Result<ParamCount> {
        sum(&[self.embedding, self.lm_head, self.experts, self.other])?;
        sum(&[self.lm_head, self.experts_active, self.other])?;
        Ok(self)
    }
}

fn overflow() -> FormatError {
    FormatError::Invalid("parameter count overflows 64 bits".to_string())
}

fn prod(factors: &[usize]) -> Result<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f as u64)).ok_or_else(overflow)
}

fn sum(terms: &[u64]) -> Result<u64> {
    terms.iter().try_fold(0u64, |acc, &t| acc.checked_add(t)).ok_or_else(overflow)
}

/// Parameters of one transformer block outside the routed experts.
fn block_shared(cfg: &ModelConfig) -> Result<u64> {
    let (h, q, kv) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim());
    let projections = sum(&[prod(&[q, h])?, prod(&[2, kv, h])?, prod(&[h, q])?])?;
    // q/k/v biases; Llama-style attention_bias and GPT-OSS bias o_proj as well, Qwen2 does not.
    let biases = match (cfg.qkv_bias, cfg.arch) {
        (false, _) => 0,
        (true, Arch::Qwen2) => sum(&[q as u64, prod(&[2, kv])?])?,
        (true, _) => sum(&[q as u64, prod(&[2, kv])?, h as u64])?,
    };
    let sinks = if cfg.attention_sinks { cfg.n_heads as u64 } else { 0 };
    let norms = match cfg.arch {
        // input, post-attention, pre- and post-feedforward norms, and per-head q/k norms.
        Arch::Gemma3 => sum(&[prod(&[4, h])?, prod(&[2, cfg.head_dim])?])?,
        Arch::Llama | Arch::Qwen2 | Arch::GptOss => prod(&[2, h])?,
    };
    let mlp = match &cfg.moe {
        // The router (with GPT-OSS's bias); the experts are counted apart.
        Some(moe) => sum(&[prod(&[moe.n_experts, h])?, moe.n_experts as u64])?,
        None => prod(&[3, h, cfg.intermediate_size])?,
    };
    sum(&[projections, biases, sinks, norms, mlp])
}

/// One GPT-OSS expert: fused gate/up (2·I × H, bias 2·I) and down (H × I, bias H).
fn one_expert(cfg: &ModelConfig) -> Result<u64> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    sum(&[prod(&[2, i, h])?, prod(&[2, i])?, prod(&[h, i])?, h as u64])
}

/// Counts from the hyperparameters alone.
pub fn from_config(cfg: &ModelConfig) -> Result<ParamCount> {
    let embedding = prod(&[cfg.vocab_size, cfg.hidden_size])?;
    let (experts, experts_active) = match &cfg.moe {
        Some(moe) => {
            let expert = one_expert(cfg)?;
            let all = prod(&[cfg.n_layers, moe.n_experts])?.checked_mul(expert).ok_or_else(overflow)?;
            let active = prod(&[cfg.n_layers, moe.experts_per_token])?.checked_mul(expert).ok_or_else(overflow)?;
            (all, active)
        }
        None => (0, 0),
    };
    let blocks = block_shared(cfg)?.checked_mul(cfg.n_layers as u64).ok_or_else(overflow)?;
    ParamCount {
        embedding,
        lm_head: if cfg.tie_embeddings { 0 } else { embedding },
        experts,
        experts_active,
        other: sum(&[blocks, cfg.hidden_size as u64])?,
    }
    .checked()
}

/// Parameters stored in a tensor. MXFP4 expert blocks (Hugging Face GPT-OSS) hold two 4-bit
/// values per byte; their per-32 scales are quantization data, not parameters.
fn tensor_params(t: &TensorRef) -> u64 {
    let elements = t.n_elements() as u64;
    match t.dtype {
        DType::U8 if t.name.ends_with(".blocks") => elements * 2,
        DType::U8 if t.name.ends_with(".scales") => 0,
        _ => elements,
    }
}

fn is_expert(name: &str) -> bool {
    name.contains("_exps.")
}

/// Counts from the tensors of an open model; `cfg` gives the share of experts a token uses.
pub fn from_tensors(source: &ModelSource, cfg: &ModelConfig) -> Result<ParamCount> {
    let mut count = ParamCount::default();
    for name in source.tensor_names() {
        let t = source.tensor(name)?;
        let n = tensor_params(&t);
        let slot = match name {
            "token_embd.weight" => &mut count.embedding,
            "output.weight" => &mut count.lm_head,
            _ if is_expert(name) => &mut count.experts,
            _ => &mut count.other,
        };
        *slot = slot.checked_add(n).ok_or_else(overflow)?;
    }
    if count.experts > 0 {
        let err = |what: String| FormatError::InFile { path: source.path().to_path_buf(), what };
        let moe =
            cfg.moe.as_ref().ok_or_else(|| err("expert tensors in a model whose config has no experts".into()))?;
        let n_experts = moe.n_experts as u64;
        match count.experts.checked_div(n_experts) {
            Some(per_expert) if per_expert * n_experts == count.experts => {
                count.experts_active = per_expert.checked_mul(moe.experts_per_token as u64).ok_or_else(overflow)?;
            }
            _ => return Err(err(format!("{} expert parameters do not split into {n_experts} experts", count.experts))),
        }
    }
    count.checked()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

    fn shared(rel: &str) -> PathBuf {
        Path::new(SHARED).join(rel)
    }

    fn hf_config(rel: &str) -> ModelConfig {
        let path = shared(rel);
        let json = crate::hf_config::read_json(&path).unwrap();
        ModelConfig::from_hf_json(&path, &json).unwrap()
    }

    /// OpenAI's model card: 20.9B total, 3.6B active. The exact figures were derived by hand
    /// from the released shapes (per layer: attention 26,555,904 incl. norms and sinks, router
    /// 92,192, 32 experts of 24,891,840; embedding and lm_head 201,088 x 2880 each).
    #[test]
    fn gpt_oss_20b_from_config() {
        let c = from_config(&hf_config("reference/gpt-oss-20b/config.json")).unwrap();
        assert_eq!(c.total(), 20_914_757_184);
        assert_eq!(c.active(), 3_608_307_264);
        assert_eq!(c.embedding, 579_133_440);
        assert_eq!(c.lm_head, 579_133_440);
        assert_eq!(c.experts, 24 * 32 * 24_891_840);
        assert_eq!(c.experts_active, 24 * 4 * 24_891_840);
    }

    /// The release's index states the checkpoint's byte size. Expert weights are MXFP4
    /// (16 bytes of nibbles plus one scale byte per 32 values), expert biases and everything
    /// else BF16; the config-derived counts must reproduce that size exactly.
    #[test]
    fn gpt_oss_20b_counts_match_the_index_size() {
        let cfg = hf_config("reference/gpt-oss-20b/config.json");
        let c = from_config(&cfg).unwrap();
        let index = crate::hf_config::read_json(&shared("reference/gpt-oss-20b/model.safetensors.index.json")).unwrap();
        let total_size = index["metadata"]["total_size"].as_u64().unwrap();
        let (h, i, e, l) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, 32u64, cfg.n_layers as u64);
        let expert_weights = l * e * (2 * i * h + h * i);
        assert!(expert_weights.is_multiple_of(32));
        let mxfp4_bytes = expert_weights / 2 + expert_weights / 32;
        let bf16_bytes = 2 * (c.total() - expert_weights);
        assert_eq!(mxfp4_bytes + bf16_bytes, total_size);
    }

    /// transformers' tiny GPT-OSS checkpoints: the fp32 one and the MXFP4 one (blocks/scales).
    #[test]
    fn gpt_oss_tiny_fixtures_config_equals_tensors() {
        for dir in ["fixtures/gpt-oss-tiny/tiny_f32", "fixtures/gpt-oss-tiny/tiny_mxfp4"] {
            let source = ModelSource::open(&shared(dir)).unwrap();
            let cfg = source.config().unwrap();
            let from_cfg = from_config(&cfg).unwrap();
            assert_eq!(from_tensors(&source, &cfg).unwrap(), from_cfg, "{dir}");
            assert!(from_cfg.experts_active > 0 && from_cfg.experts_active < from_cfg.experts);
        }
    }

    /// Totals from PyPI `gguf`'s GGUFReader (sum of n_elements over all tensors).
    #[test]
    fn real_gguf_config_equals_tensors() {
        for (file, total) in [(lowbit_testdata::SMOLLM2, 134_515_008u64), (lowbit_testdata::GEMMA3, 268_098_176)] {
            let Some(path) = lowbit_testdata::model(file) else { continue };
            let source = ModelSource::open(&path).unwrap();
            let cfg = source.config().unwrap();
            let from_cfg = from_config(&cfg).unwrap();
            assert_eq!(from_tensors(&source, &cfg).unwrap(), from_cfg, "{file}");
            assert_eq!(from_cfg.total(), total, "{file}");
            // Both tie their output projection to the embedding.
            assert_eq!(from_cfg.lm_head, 0, "{file}");
            assert_eq!(from_cfg.active(), total - from_cfg.embedding, "{file}");
        }
    }

    #[test]
    fn absurd_configs_overflow_into_errors() {
        let mut cfg = hf_config("reference/gpt-oss-20b/config.json");
        cfg.hidden_size = usize::MAX / 2;
        assert!(from_config(&cfg).unwrap_err().to_string().contains("overflows"));
    }
}
