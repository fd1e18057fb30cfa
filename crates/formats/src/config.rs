//! Architecture hyperparameters, whatever file they came from.
//!
//! One struct for every supported architecture: model code reads only this, never a
//! config.json key or a GGUF metadata key. `from_gguf` lives here, `from_hf_json` in
//! `hf_config`.

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama, Mistral, SmolLM2 (no biases).
    Llama,
    /// Qwen2: Llama with biases on q/k/v.
    Qwen2,
    Gemma3,
    GptOss,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
            Arch::GptOss => "gpt_oss",
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimensions (2i, 2i+1) rotate together. llama.cpp's converter permutes the q/k rows of
    /// Llama checkpoints so that GGUF llama files use this style.
    Interleaved,
    /// Dimensions (i, i + d/2) rotate together: Hugging Face checkpoints, and GGUF qwen2/gemma3.
    Neox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: silu(gate) * up.
    Silu,
    /// GeGLU with the tanh approximation of gelu (Gemma).
    GeluTanh,
}

/// Attention span of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    Full,
    /// Attends to the last `window` positions, itself included.
    Sliding {
        window: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    pub experts_per_token: usize,
}

/// YaRN context extension (GPT-OSS).
#[derive(Clone, Debug, PartialEq)]
pub struct YarnConfig {
    pub factor: f32,
    pub original_context: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the MLP (per expert for MoE).
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    /// RoPE base of full-attention layers.
    pub rope_theta: f32,
    /// RoPE base of sliding-window layers where it differs (Gemma 3: 10,000).
    pub rope_theta_sliding: Option<f32>,
    pub rope_style: RopeStyle,
    /// Leading dimensions of each head that rotate (the whole head in every supported model).
    pub rope_dim: usize,
    pub yarn: Option<YarnConfig>,
    pub context_length: usize,
    pub tie_embeddings: bool,
    /// Biases on q/k/v (Qwen2, GPT-OSS).
    pub qkv_bias: bool,
    /// Per-layer attention span, `n_layers` entries.
    pub layer_attention: Vec<AttentionKind>,
    /// Added to every RMSNorm weight before use: Hugging Face Gemma stores `w` and computes
    /// `x * (1 + w)`; llama.cpp's converter stores `1 + w` already (offset 0).
    pub norm_weight_offset: f32,
    /// Input embeddings are multiplied by this (Gemma: sqrt(hidden_size)).
    pub embedding_scale: Option<f32>,
    /// Attention scores are q·k times this (1/sqrt(head_dim) unless the config says otherwise).
    pub attention_scale: f32,
    pub activation: Activation,
    pub moe: Option<MoeConfig>,
    /// GPT-OSS: one learned logit per head joins the softmax denominator.
    pub attention_sinks: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Rows of the key/value projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Reads the hyperparameters of a GGUF file from its `{arch}.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let path = file.path();
        let err = |what: String| FormatError::InFile { path: path.to_path_buf(), what };
        let arch_name = file.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma3" => Arch::Gemma3,
            GPT_OSS_GGUF => Arch::GptOss,
            other => {
                return Err(FormatError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("architecture {other:?}"),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
        let hidden_size = usize_key("embedding_length")?;
        let n_layers = usize_key("block_count")?;
        let n_heads = usize_key("attention.head_count")?;
        let n_kv_heads = file.get_u64(&key("attention.head_count_kv")).map(|v| v as usize).unwrap_or(n_heads);
        if n_layers == 0 || n_layers > crate::hf_config::MAX_LAYERS {
            return Err(err(format!("block_count {n_layers} is outside 1..={}", crate::hf_config::MAX_LAYERS)));
        }
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || hidden_size == 0 {
            return Err(err(format!(
                "inconsistent attention shape: {n_heads} heads, {n_kv_heads} kv heads, {n_layers} layers, width {hidden_size}"
            )));
        }
        let head_dim = match file.get_u64(&key("attention.key_length")) {
            Ok(v) => v as usize,
            Err(_) if hidden_size % n_heads == 0 => hidden_size / n_heads,
            Err(_) => return Err(err(format!("width {hidden_size} is not divisible by {n_heads} heads"))),
        };
        let vocab_size = match file.get_u64(&key("vocab_size")) {
            Ok(v) => v as usize,
            Err(_) => file.get_array_len("tokenizer.ggml.tokens")?,
        };
        let rope_dim = file.get_u64(&key("rope.dimension_count")).map(|v| v as usize).unwrap_or(head_dim);
        let rms_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_theta = file.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0);
        let context_length = usize_key("context_length")?;
        let tie_embeddings = file.tensor_info("output.weight").is_none();
        let bos_token_id = file.get_u64("tokenizer.ggml.bos_token_id").ok().map(|v| v as u32);
        let eos_token_ids =
            file.get_u64("tokenizer.ggml.eos_token_id").ok().map(|v| vec![v as u32]).unwrap_or_default();

        let mut cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: usize_key("feed_forward_length")?,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps,
            rope_theta,
            rope_theta_sliding: None,
            rope_style: if arch == Arch::Llama { RopeStyle::Interleaved } else { RopeStyle::Neox },
            rope_dim,
            yarn: None,
            context_length,
            tie_embeddings,
            qkv_bias: arch == Arch::Qwen2,
            layer_attention: vec![AttentionKind::Full; n_layers],
            norm_weight_offset: 0.0,
            embedding_scale: None,
            attention_scale: 1.0 / (head_dim as f32).sqrt(),
            activation: Activation::Silu,
            moe: None,
            attention_sinks: false,
            bos_token_id,
            eos_token_ids,
        };
        if arch == Arch::Gemma3 {
            // llama.cpp hard-codes Gemma 3's pattern: every sixth layer is global, the rest
            // slide; sliding layers use base 10,000 (`rope.freq_base` is the global base).
            let window = usize_key("attention.sliding_window")?;
            cfg.layer_attention = (0..n_layers)
                .map(|i| if (i + 1) % 6 == 0 { AttentionKind::Full } else { AttentionKind::Sliding { window } })
                .collect();
            cfg.rope_theta_sliding = Some(10_000.0);
            cfg.embedding_scale = Some((hidden_size as f32).sqrt());
            cfg.activation = Activation::GeluTanh;
        }
        if arch == Arch::GptOss {
            // llama.cpp's gpt-oss: experts have their own width, YaRN comes from the rope.scaling keys with
            // transformers' default betas.
            cfg.layer_attention = gguf_gpt_oss_layers(n_layers, usize_key("attention.sliding_window")?);
            cfg.intermediate_size = usize_key("expert_feed_forward_length")?;
            let n_experts = usize_key("expert_count")?;
            let experts_per_token = usize_key("expert_used_count")?;
            if n_experts == 0 || experts_per_token == 0 || experts_per_token > n_experts {
                return Err(err(format!("{experts_per_token} of {n_experts} experts per token")));
            }
            cfg.moe = Some(MoeConfig { n_experts, experts_per_token });
            if file.get_str(&key("rope.scaling.type"))? != "yarn" {
                return Err(err("rope.scaling.type must be \"yarn\" for gpt-oss".into()));
            }
            let factor = file.get_f32(&key("rope.scaling.factor"))?;
            if factor <= 1.0 {
                return Err(err(format!("rope.scaling.factor {factor} does not extend the context")));
            }
            cfg.yarn = Some(YarnConfig {
                factor,
                original_context: usize_key("rope.scaling.original_context_length")?,
                beta_fast: file.get_f32(&key("rope.scaling.yarn_beta_fast")).unwrap_or(32.0),
                beta_slow: file.get_f32(&key("rope.scaling.yarn_beta_slow")).unwrap_or(1.0),
            });
            cfg.rope_style = RopeStyle::Neox;
            cfg.qkv_bias = true;
            cfg.attention_sinks = true;
        }
        Ok(cfg)
    }
}

/// llama.cpp's architecture name for GPT-OSS (`LLM_ARCH_OPENAI_MOE`).
pub const GPT_OSS_GGUF: &str = "gpt-oss";

/// The attention of a GGUF gpt-oss model's layers: llama.cpp slides over `window` on even layers
/// (`load_swa_pattern(ml, 2)`) and attends fully on odd ones.
pub fn gguf_gpt_oss_layers(n_layers: usize, window: usize) -> Vec<AttentionKind> {
    let kind = |i: usize| if i.is_multiple_of(2) { AttentionKind::Sliding { window } } else { AttentionKind::Full };
    (0..n_layers).map(kind).collect()
}
