//! `ModelConfig` from a Hugging Face `config.json`.
//!
//! Size keys (vocabulary, width, depth, heads, experts) are required: transformers' class
//! defaults describe one particular model size (GPT-OSS's are the 120B's), so taking them for
//! a file that omits the key would silently build another model. Keys whose transformers default
//! does not depend on the model size may be omitted; each such default is named where it is
//! used. Features `ModelConfig` cannot express (rope scaling other than GPT-OSS's YaRN, logit
//! soft-capping, MLP biases) are `Unsupported` errors rather than being ignored.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{Activation, Arch, AttentionKind, ModelConfig, MoeConfig, RopeStyle, YarnConfig};
use crate::error::{FormatError, Result};

/// More layers than any published model by an order of magnitude; bounds the per-layer vector
/// built from a config that has no tensors to check it against.
pub const MAX_LAYERS: usize = 4096;

/// Reads and parses a JSON file; errors name the file.
pub fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|source| FormatError::Io { path: path.to_path_buf(), cause: source })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| FormatError::InFile { path: path.to_path_buf(), what: format!("not valid JSON: {e}") })
}

impl ModelConfig {
    /// Builds the config of a Hugging Face checkpoint from its parsed `config.json`; `path`
    /// names the file in errors.
    pub fn from_hf_json(path: &Path, json: &Value) -> Result<ModelConfig> {
        let root = Keys::new(path, json, String::new())?;
        let model_type = root.str("model_type")?;
        let cfg = match model_type {
            "llama" => llama_family(&root, Family::Llama)?,
            "mistral" => llama_family(&root, Family::Mistral)?,
            "qwen2" => llama_family(&root, Family::Qwen2)?,
            "gemma3_text" => gemma3(&root, &root)?,
            // The multimodal wrapper keeps the text model's keys under `text_config`.
            "gemma3" => match root.child("text_config")? {
                Some(text) => gemma3(&root, &text)?,
                None => gemma3(&root, &root)?,
            },
            "gpt_oss" => gpt_oss(&root)?,
            other => return Err(root.unsupported(format!("model_type {other:?}"))),
        };
        Ok(cfg)
    }
}

/// Typed access to one JSON object of a config file. A `null` value counts as absent, as it
/// does for transformers' config classes. Errors name the file and the full key path.
struct Keys<'a> {
    path: &'a Path,
    prefix: String,
    map: &'a Map<String, Value>,
}

impl<'a> Keys<'a> {
    fn new(path: &'a Path, value: &'a Value, prefix: String) -> Result<Keys<'a>> {
        match value.as_object() {
            Some(map) => Ok(Keys { path, prefix, map }),
            None => Err(FormatError::InFile {
                path: path.to_path_buf(),
                what: format!("{}: expected a JSON object, found {}", Self::object_name(&prefix), short(value)),
            }),
        }
    }

    fn object_name(prefix: &str) -> &str {
        if prefix.is_empty() {
            "top level"
        } else {
            prefix.trim_end_matches('.')
        }
    }

    fn err(&self, key: &str, problem: impl std::fmt::Display) -> FormatError {
        FormatError::InFile { path: self.path.to_path_buf(), what: format!("{}{key}: {problem}", self.prefix) }
    }

    fn unsupported(&self, what: String) -> FormatError {
        FormatError::Unsupported { path: self.path.to_path_buf(), what }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn require(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| self.err(key, "missing"))
    }

    fn child(&self, key: &str) -> Result<Option<Keys<'a>>> {
        self.get(key).map(|v| Keys::new(self.path, v, format!("{}{key}.", self.prefix))).transpose()
    }

    fn str(&self, key: &str) -> Result<&'a str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.err(key, format!("expected a string, found {}", short(v))))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.has(key).then(|| self.str(key)).transpose()
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.require(key)?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, found {}", short(v))))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.has(key).then(|| self.usize(key)).transpose()
    }

    fn f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.err(key, format!("expected a finite number, found {}", short(v))))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.has(key).then(|| self.f32(key)).transpose()
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {}", short(v)))),
        }
    }

    fn token_id(&self, key: &str, v: &Value) -> Result<u32> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.err(key, format!("expected a token id, found {}", short(v))))
    }

    /// A token id or a list of them (`eos_token_id` is a list in several releases).
    fn token_ids(&self, key: &str) -> Result<Option<Vec<u32>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items.iter().map(|v| self.token_id(key, v)).collect::<Result<_>>().map(Some),
            Some(v) => Ok(Some(vec![self.token_id(key, v)?])),
        }
    }

    fn opt_token_id(&self, key: &str) -> Result<Option<u32>> {
        self.get(key).map(|v| self.token_id(key, v)).transpose()
    }
}

/// A value rendered for an error message, cut short so a hostile file cannot flood the message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

/// The attention geometry and sizes every architecture has.
struct Shape {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Shape {
    fn check(self, k: &Keys) -> Result<Shape> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((key, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(k.err(key, "must be positive"));
        }
        if self.n_layers > MAX_LAYERS {
            return Err(k.err("num_hidden_layers", format!("{} is more than {MAX_LAYERS}", self.n_layers)));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(k.err(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads {}", self.n_kv_heads, self.n_heads),
            ));
        }
        Ok(self)
    }
}

/// Per-layer attention spans from `layer_types` when the file has it, else from `fallback`
/// (`true` = sliding). `window` is `sliding_window`, needed only if some layer slides.
fn layer_kinds(
    k: &Keys,
    n_layers: usize,
    window: Option<usize>,
    fallback: impl Fn(usize) -> bool,
) -> Result<Vec<AttentionKind>> {
    let sliding = || match window {
        Some(w) if w > 0 => Ok(AttentionKind::Sliding { window: w }),
        Some(_) => Err(k.err("sliding_window", "must be positive")),
        None => Err(k.err("sliding_window", "missing, but some layers slide")),
    };
    let Some(types) = k.get("layer_types") else {
        return (0..n_layers).map(|i| if fallback(i) { sliding() } else { Ok(AttentionKind::Full) }).collect();
    };
    let types =
        types.as_array().ok_or_else(|| k.err("layer_types", format!("expected a list, found {}", short(types))))?;
    if types.len() != n_layers {
        return Err(k.err("layer_types", format!("{} entries for {n_layers} layers", types.len())));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            Some("full_attention") => Ok(AttentionKind::Full),
            Some("sliding_attention") => sliding(),
            _ => Err(k.err("layer_types", format!("unknown layer type {}", short(t)))),
        })
        .collect()
}

/// The RoPE settings object: newer transformers write `rope_parameters` (with `rope_theta`
/// inside), releases before 5.0 `rope_scaling` beside a top-level `rope_theta`.
fn rope_block<'a>(k: &Keys<'a>) -> Result<Option<Keys<'a>>> {
    match k.child("rope_parameters")? {
        Some(p) => Ok(Some(p)),
        None => k.child("rope_scaling"),
    }
}

/// `rope_type` (or its older spelling `type`) of a RoPE settings object; "default" when absent.
fn rope_type<'a>(rope: &Keys<'a>) -> Result<&'a str> {
    Ok(match rope.opt_str("rope_type")? {
        Some(t) => t,
        None => rope.opt_str("type")?.unwrap_or("default"),
    })
}

fn rope_theta(k: &Keys, rope: Option<&Keys>) -> Result<Option<f32>> {
    match k.opt_f32("rope_theta")? {
        Some(t) => Ok(Some(t)),
        None => rope.map(|r| r.opt_f32("rope_theta")).transpose().map(Option::flatten),
    }
}

/// Rejects RoPE scaling for architectures where lowbit implements only plain RoPE.
fn require_plain_rope(rope: Option<&Keys>) -> Result<()> {
    let Some(rope) = rope else { return Ok(()) };
    match rope_type(rope)? {
        "default" => Ok(()),
        other => Err(rope.unsupported(format!("{}rope_type {other:?} (only plain RoPE is implemented)", rope.prefix))),
    }
}

fn activation(k: &Keys, key: &str, default: &str) -> Result<Activation> {
    match k.opt_str(key)?.unwrap_or(default) {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        other => Err(k.unsupported(format!("{}{key} {other:?}", k.prefix))),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Llama,
    Mistral,
    Qwen2,
}

/// Llama, Mistral and Qwen2: the same block with different defaults and bias/window rules.
fn llama_family(k: &Keys, family: Family) -> Result<ModelConfig> {
    let n_heads = k.usize("num_attention_heads")?;
    let hidden_size = k.usize("hidden_size")?;
    // transformers: num_key_value_heads defaults to num_attention_heads (no GQA) and head_dim to
    // hidden_size / num_attention_heads.
    let n_kv_heads = k.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
    let head_dim = match k.opt_usize("head_dim")? {
        Some(d) => d,
        None if n_heads > 0 && hidden_size.is_multiple_of(n_heads) => hidden_size / n_heads,
        None => {
            return Err(k.err(
                "head_dim",
                format!("missing, and hidden_size {hidden_size} is not a multiple of {n_heads} heads"),
            ))
        }
    };
    let shape = Shape {
        vocab_size: k.usize("vocab_size")?,
        hidden_size,
        intermediate_size: k.usize("intermediate_size")?,
        n_layers: k.usize("num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        head_dim,
    }
    .check(k)?;

    if k.opt_bool("mlp_bias")? == Some(true) {
        return Err(k.unsupported("mlp_bias true (MLP biases)".to_string()));
    }
    let rope = rope_block(k)?;
    require_plain_rope(rope.as_ref())?;
    // transformers' Llama/Mistral/Qwen2 defaults: rope_theta 10000, rms_norm_eps 1e-6,
    // untied embeddings; context 2048 (Llama), 4096*32 (Mistral), 32768 (Qwen2).
    let rope_theta = rope_theta(k, rope.as_ref())?.unwrap_or(10_000.0);
    let context_default = match family {
        Family::Llama => 2048,
        Family::Mistral => 4096 * 32,
        Family::Qwen2 => 32768,
    };
    // Qwen2 always has q/k/v biases; Llama has them (on o_proj too) when attention_bias is set.
    let qkv_bias = family == Family::Qwen2 || k.opt_bool("attention_bias")? == Some(true);
    let layer_attention = llama_family_layers(k, family, shape.n_layers)?;
    // Llama's and Mistral's classes default bos/eos to 1/2; Qwen2's have no default.
    let (bos_default, eos_default) = if family == Family::Qwen2 { (None, None) } else { (Some(1), Some(2)) };

    Ok(ModelConfig {
        arch: if family == Family::Qwen2 { Arch::Qwen2 } else { Arch::Llama },
        rms_eps: k.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta,
        rope_theta_sliding: None,
        rope_style: RopeStyle::Neox,
        rope_dim: shape.head_dim,
        yarn: None,
        context_length: k.opt_usize("max_position_embeddings")?.unwrap_or(context_default),
        tie_embeddings: k.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias,
        layer_attention,
        norm_weight_offset: 0.0,
        embedding_scale: None,
        attention_scale: 1.0 / (shape.head_dim as f32).sqrt(),
        activation: activation(k, "hidden_act", "silu")?,
        moe: None,
        attention_sinks: false,
        bos_token_id: k.opt_token_id("bos_token_id")?.or(bos_default),
        eos_token_ids: k.token_ids("eos_token_id")?.unwrap_or_else(|| eos_default.into_iter().collect()),
        vocab_size: shape.vocab_size,
        hidden_size: shape.hidden_size,
        intermediate_size: shape.intermediate_size,
        n_layers: shape.n_layers,
        n_heads: shape.n_heads,
        n_kv_heads: shape.n_kv_heads,
        head_dim: shape.head_dim,
    })
}

fn llama_family_layers(k: &Keys, family: Family, n_layers: usize) -> Result<Vec<AttentionKind>> {
    match family {
        Family::Llama => layer_kinds(k, n_layers, k.opt_usize("sliding_window")?, |_| false),
        // MistralConfig defaults sliding_window to 4096 when the key is absent; an explicit
        // null (Mistral 7B v0.2 onwards) means full attention everywhere.
        Family::Mistral => {
            let window = match k.map.get("sliding_window") {
                None => Some(4096),
                Some(Value::Null) => None,
                Some(_) => Some(k.usize("sliding_window")?),
            };
            layer_kinds(k, n_layers, window, |_| window.is_some())
        }
        // Qwen2Config: use_sliding_window false by default; when set, layers from
        // max_window_layers (default 28) on slide.
        Family::Qwen2 => {
            let enabled = k.opt_bool("use_sliding_window")?.unwrap_or(false);
            let from = k.opt_usize("max_window_layers")?.unwrap_or(28);
            let window = if enabled { k.opt_usize("sliding_window")? } else { None };
            layer_kinds(k, n_layers, window, |i| enabled && i >= from)
        }
    }
}

/// Gemma 3. `top` is the file's top level, `k` the text model's keys (the same object for
/// `gemma3_text`, `text_config` for the multimodal wrapper).
fn gemma3(top: &Keys, k: &Keys) -> Result<ModelConfig> {
    // Gemma3TextConfig defaults that Google's multimodal configs rely on (their text_config
    // omits them): 8 heads, 4 kv heads, head_dim 256, vocabulary 262208.
    let shape = Shape {
        vocab_size: k.opt_usize("vocab_size")?.unwrap_or(262_208),
        hidden_size: k.usize("hidden_size")?,
        intermediate_size: k.usize("intermediate_size")?,
        n_layers: k.usize("num_hidden_layers")?,
        n_heads: k.opt_usize("num_attention_heads")?.unwrap_or(8),
        n_kv_heads: k.opt_usize("num_key_value_heads")?.unwrap_or(4),
        head_dim: k.opt_usize("head_dim")?.unwrap_or(256),
    }
    .check(k)?;
    for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if k.has(key) {
            return Err(k.unsupported(format!("{}{key} (logit soft-capping)", k.prefix)));
        }
    }
    if k.opt_bool("attention_bias")? == Some(true) {
        return Err(k.unsupported(format!("{}attention_bias true", k.prefix)));
    }
    if k.opt_bool("use_bidirectional_attention")? == Some(true) {
        return Err(k.unsupported(format!("{}use_bidirectional_attention true (non-causal attention)", k.prefix)));
    }
    let (rope_theta, rope_theta_sliding) = gemma3_rope(k)?;
    // Gemma3TextConfig defaults: sliding_window 4096, query_pre_attn_scalar 256,
    // rms_norm_eps 1e-6, max_position_embeddings 131072, tied embeddings, bos 2 / eos 1.
    let window = k.opt_usize("sliding_window")?.unwrap_or(4096);
    let pattern = match k.opt_usize("sliding_window_pattern")? {
        Some(p) => Some(p),
        None => k.opt_usize("_sliding_window_pattern")?,
    }
    .unwrap_or(6);
    if pattern == 0 {
        return Err(k.err("sliding_window_pattern", "must be positive"));
    }
    let layer_attention = layer_kinds(k, shape.n_layers, Some(window), |i| !(i + 1).is_multiple_of(pattern))?;
    let scalar = k.opt_f32("query_pre_attn_scalar")?.unwrap_or(256.0);
    if scalar <= 0.0 {
        return Err(k.err("query_pre_attn_scalar", "must be positive"));
    }
    let tie = match k.opt_bool("tie_word_embeddings")? {
        Some(t) => Some(t),
        None => top.opt_bool("tie_word_embeddings")?,
    };
    let bos = match k.opt_token_id("bos_token_id")? {
        Some(b) => Some(b),
        None => top.opt_token_id("bos_token_id")?,
    };
    let eos = match k.token_ids("eos_token_id")? {
        Some(e) => Some(e),
        None => top.token_ids("eos_token_id")?,
    };

    Ok(ModelConfig {
        arch: Arch::Gemma3,
        rms_eps: k.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta,
        rope_theta_sliding: Some(rope_theta_sliding),
        rope_style: RopeStyle::Neox,
        rope_dim: shape.head_dim,
        yarn: None,
        context_length: k.opt_usize("max_position_embeddings")?.unwrap_or(131_072),
        tie_embeddings: tie.unwrap_or(true),
        qkv_bias: false,
        layer_attention,
        // Hugging Face stores w and computes x * (1 + w).
        norm_weight_offset: 1.0,
        embedding_scale: Some((shape.hidden_size as f32).sqrt()),
        attention_scale: 1.0 / scalar.sqrt(),
        activation: activation(k, "hidden_activation", "gelu_pytorch_tanh")?,
        moe: None,
        attention_sinks: false,
        bos_token_id: bos.or(Some(2)),
        eos_token_ids: eos.unwrap_or_else(|| vec![1]),
        vocab_size: shape.vocab_size,
        hidden_size: shape.hidden_size,
        intermediate_size: shape.intermediate_size,
        n_layers: shape.n_layers,
        n_heads: shape.n_heads,
        n_kv_heads: shape.n_kv_heads,
        head_dim: shape.head_dim,
    })
}

/// Gemma 3's (global, sliding) RoPE bases. transformers 5 nests `rope_parameters` by layer type;
/// older files have `rope_theta` (default 1e6) and `rope_local_base_freq` (default 10000) with an
/// optional `rope_scaling` that applies to global layers.
fn gemma3_rope(k: &Keys) -> Result<(f32, f32)> {
    if let Some(params) = k.child("rope_parameters")? {
        if let (Some(full), Some(sliding)) = (params.child("full_attention")?, params.child("sliding_attention")?) {
            require_plain_rope(Some(&full))?;
            require_plain_rope(Some(&sliding))?;
            return Ok((full.f32("rope_theta")?, sliding.f32("rope_theta")?));
        }
    }
    let rope = rope_block(k)?;
    require_plain_rope(rope.as_ref())?;
    let global = rope_theta(k, rope.as_ref())?.unwrap_or(1_000_000.0);
    Ok((global, k.opt_f32("rope_local_base_freq")?.unwrap_or(10_000.0)))
}

fn gpt_oss(k: &Keys) -> Result<ModelConfig> {
    // Every size key is required: GptOssConfig's defaults are the 120B's.
    let shape = Shape {
        vocab_size: k.usize("vocab_size")?,
        hidden_size: k.usize("hidden_size")?,
        intermediate_size: k.usize("intermediate_size")?,
        n_layers: k.usize("num_hidden_layers")?,
        n_heads: k.usize("num_attention_heads")?,
        n_kv_heads: k.usize("num_key_value_heads")?,
        head_dim: k.usize("head_dim")?,
    }
    .check(k)?;
    let moe = gpt_oss_moe(k)?;
    // The clamp of the SwiGLU is not in ModelConfig: model code uses GPT-OSS's 7.0, which is
    // also GptOssConfig's default.
    if let Some(limit) = k.opt_f32("swiglu_limit")? {
        if limit != 7.0 {
            return Err(k.unsupported(format!("swiglu_limit {limit} (only 7.0 is implemented)")));
        }
    }
    let window = k.usize("sliding_window")?;
    // GptOssConfig's default layer_types alternate, starting with a sliding layer.
    let layer_attention = layer_kinds(k, shape.n_layers, Some(window), |i| i.is_multiple_of(2))?;
    let rope = rope_block(k)?.ok_or_else(|| k.err("rope_scaling", "missing (GPT-OSS needs its YaRN parameters)"))?;
    let rope_theta = rope_theta(k, Some(&rope))?.ok_or_else(|| k.err("rope_theta", "missing"))?;
    let yarn = yarn(&rope)?;

    Ok(ModelConfig {
        arch: Arch::GptOss,
        // GptOssConfig defaults that both released sizes share: rms_norm_eps 1e-5,
        // max_position_embeddings 131072, attention_bias true, untied embeddings.
        rms_eps: k.opt_f32("rms_norm_eps")?.unwrap_or(1e-5),
        rope_theta,
        rope_theta_sliding: None,
        rope_style: RopeStyle::Neox,
        rope_dim: shape.head_dim,
        yarn: Some(yarn),
        context_length: k.opt_usize("max_position_embeddings")?.unwrap_or(131_072),
        tie_embeddings: k.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: k.opt_bool("attention_bias")?.unwrap_or(true),
        layer_attention,
        norm_weight_offset: 0.0,
        embedding_scale: None,
        attention_scale: 1.0 / (shape.head_dim as f32).sqrt(),
        activation: activation(k, "hidden_act", "silu")?,
        moe: Some(moe),
        attention_sinks: true,
        bos_token_id: k.opt_token_id("bos_token_id")?,
        eos_token_ids: k.token_ids("eos_token_id")?.unwrap_or_default(),
        vocab_size: shape.vocab_size,
        hidden_size: shape.hidden_size,
        intermediate_size: shape.intermediate_size,
        n_layers: shape.n_layers,
        n_heads: shape.n_heads,
        n_kv_heads: shape.n_kv_heads,
        head_dim: shape.head_dim,
    })
}

/// The release writes the expert count per token twice (`num_experts_per_tok` for
/// transformers, `experts_per_token` for openai/gpt-oss); either will do, both must agree.
fn gpt_oss_moe(k: &Keys) -> Result<MoeConfig> {
    let n_experts = k.usize("num_local_experts")?;
    let per_token = match (k.opt_usize("num_experts_per_tok")?, k.opt_usize("experts_per_token")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(k.err("experts_per_token", format!("{b} disagrees with num_experts_per_tok {a}")))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(k.err("num_experts_per_tok", "missing")),
    };
    if n_experts == 0 || per_token == 0 || per_token > n_experts {
        return Err(k.err("num_experts_per_tok", format!("{per_token} of {n_experts} experts")));
    }
    Ok(MoeConfig { n_experts, experts_per_token: per_token })
}

fn yarn(rope: &Keys) -> Result<YarnConfig> {
    let kind = rope_type(rope)?;
    if kind != "yarn" {
        return Err(rope.unsupported(format!("{}rope_type {kind:?} for GPT-OSS (YaRN expected)", rope.prefix)));
    }
    // transformers rounds the YaRN correction range unless `truncate` is false, and defaults it
    // to true; GPT-OSS is defined with false, which is what model code implements.
    if rope.opt_bool("truncate")? != Some(false) {
        return Err(rope.err("truncate", "must be false (GPT-OSS's unrounded YaRN correction range)"));
    }
    let factor = rope.f32("factor")?;
    if factor <= 1.0 {
        return Err(rope.err("factor", format!("{factor} does not extend the context")));
    }
    if let Some(af) = rope.opt_f32("attention_factor")? {
        let standard = 0.1 * factor.ln() + 1.0;
        if (af - standard).abs() > 1e-6 {
            return Err(rope.unsupported(format!("{}attention_factor {af} (only 0.1 ln(factor) + 1)", rope.prefix)));
        }
    }
    Ok(YarnConfig {
        factor,
        original_context: rope.usize("original_max_position_embeddings")?,
        // transformers' YaRN defaults beta_fast 32 and beta_slow 1 (not size dependent).
        beta_fast: rope.opt_f32("beta_fast")?.unwrap_or(32.0),
        beta_slow: rope.opt_f32("beta_slow")?.unwrap_or(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GPT_OSS_20B: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/gpt-oss-20b/config.json");
    const GPT_OSS_TINY: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/gpt-oss-tiny/tiny_f32/config.json");

    fn parse(json: &Value) -> Result<ModelConfig> {
        ModelConfig::from_hf_json(Path::new("config.json"), json)
    }

    fn load(path: &str) -> Value {
        read_json(Path::new(path)).unwrap()
    }

    fn err_text(json: &Value) -> String {
        parse(json).unwrap_err().to_string()
    }

    #[test]
    fn gpt_oss_20b_release_config() {
        let c = parse(&load(GPT_OSS_20B)).unwrap();
        assert_eq!(c.arch, Arch::GptOss);
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim),
            (201_088, 2880, 2880, 24, 64, 8, 64)
        );
        assert_eq!(c.moe, Some(MoeConfig { n_experts: 32, experts_per_token: 4 }));
        assert_eq!(c.yarn, Some(YarnConfig { factor: 32.0, original_context: 4096, beta_fast: 32.0, beta_slow: 1.0 }));
        assert_eq!(c.rope_theta, 150_000.0);
        assert_eq!(c.rope_style, RopeStyle::Neox);
        assert_eq!(c.rms_eps, 1e-5);
        assert_eq!(c.context_length, 131_072);
        assert!(c.attention_sinks && c.qkv_bias && !c.tie_embeddings);
        assert_eq!(c.attention_scale, 0.125);
        assert_eq!(c.eos_token_ids, vec![200_002]);
        assert_eq!(c.bos_token_id, None);
        assert_eq!(c.layer_attention.len(), 24);
        for (i, kind) in c.layer_attention.iter().enumerate() {
            let want = if i.is_multiple_of(2) { AttentionKind::Sliding { window: 128 } } else { AttentionKind::Full };
            assert_eq!(*kind, want, "layer {i}");
        }
    }

    /// transformers 5 writes `rope_parameters` (rope_theta inside) instead of `rope_scaling`.
    #[test]
    fn gpt_oss_rope_parameters_spelling() {
        let c = parse(&load(GPT_OSS_TINY)).unwrap();
        assert_eq!(c.rope_theta, 150_000.0);
        assert_eq!(c.yarn.as_ref().unwrap().factor, 32.0);
        assert_eq!(c.moe, Some(MoeConfig { n_experts: 4, experts_per_token: 2 }));
        assert_eq!(c.layer_attention, vec![AttentionKind::Sliding { window: 8 }, AttentionKind::Full]);
        assert_eq!((c.head_dim, c.n_heads, c.n_kv_heads), (16, 4, 2));
        assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(0), vec![2]));
    }

    #[test]
    fn gpt_oss_never_takes_size_defaults() {
        let base = load(GPT_OSS_20B);
        for key in [
            "num_local_experts",
            "hidden_size",
            "num_hidden_layers",
            "vocab_size",
            "head_dim",
            "num_key_value_heads",
            "sliding_window",
            "rope_theta",
        ] {
            let mut j = base.clone();
            j.as_object_mut().unwrap().remove(key);
            let e = err_text(&j);
            assert!(e.contains("config.json") && e.contains(key) && e.contains("missing"), "{key}: {e}");
        }
        let mut j = base.clone();
        j.as_object_mut().unwrap().remove("num_experts_per_tok");
        j.as_object_mut().unwrap().remove("experts_per_token");
        assert!(err_text(&j).contains("num_experts_per_tok: missing"));

        for key in ["factor", "original_max_position_embeddings"] {
            let mut j = base.clone();
            j["rope_scaling"].as_object_mut().unwrap().remove(key);
            let e = err_text(&j);
            assert!(e.contains(&format!("rope_scaling.{key}: missing")), "{e}");
        }
        let mut j = base.clone();
        j.as_object_mut().unwrap().remove("rope_scaling");
        assert!(err_text(&j).contains("rope_scaling: missing"));
    }

    #[test]
    fn gpt_oss_rejects_what_it_cannot_represent() {
        let base = load(GPT_OSS_20B);
        let cases: &[(&str, Value, &str)] = &[
            ("experts_per_token", json!(2), "disagrees"),
            ("swiglu_limit", json!(10.0), "swiglu_limit"),
            ("layer_types", json!(["full_attention"]), "1 entries for 24 layers"),
            (
                "rope_scaling",
                json!({"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096}),
                "truncate",
            ),
            ("rope_scaling", json!({"rope_type": "linear", "factor": 8.0}), "linear"),
            ("eos_token_id", json!([200_002, -1]), "eos_token_id"),
            ("num_key_value_heads", json!(7), "does not divide"),
            ("num_hidden_layers", json!(1_000_000_000_000u64), "more than"),
            ("hidden_size", json!(-5), "non-negative integer"),
        ];
        for (key, value, needle) in cases {
            let mut j = base.clone();
            j[*key] = value.clone();
            let e = err_text(&j);
            assert!(e.contains("config.json") && e.contains(needle), "{key}={value}: {e}");
        }
    }

    fn gemma3_270m() -> Value {
        // google/gemma-3-270m's published config.json (layer_types written out by transformers).
        let layer_types: Vec<&str> = (0..18usize)
            .map(|i| if (i + 1).is_multiple_of(6) { "full_attention" } else { "sliding_attention" })
            .collect();
        json!({
            "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
            "attn_logit_softcapping": null, "bos_token_id": 2, "eos_token_id": 1, "final_logit_softcapping": null,
            "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640, "intermediate_size": 2048,
            "layer_types": layer_types, "max_position_embeddings": 32768, "model_type": "gemma3_text",
            "num_attention_heads": 4, "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
            "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
            "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": 512, "vocab_size": 262144
        })
    }

    #[test]
    fn gemma3_text_config() {
        let c = parse(&gemma3_270m()).unwrap();
        assert_eq!(c.arch, Arch::Gemma3);
        assert_eq!((c.hidden_size, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size), (640, 4, 1, 256, 262_144));
        assert_eq!(c.norm_weight_offset, 1.0);
        assert_eq!(c.embedding_scale, Some(640f32.sqrt()));
        assert_eq!(c.attention_scale, 1.0 / 16.0);
        assert_eq!((c.rope_theta, c.rope_theta_sliding), (1e6, Some(1e4)));
        assert_eq!(c.activation, Activation::GeluTanh);
        assert!(c.tie_embeddings);
        assert_eq!(c.layer_attention[4], AttentionKind::Sliding { window: 512 });
        assert_eq!(c.layer_attention[5], AttentionKind::Full);
        assert_eq!(c.layer_attention.iter().filter(|k| **k == AttentionKind::Full).count(), 3);
    }

    /// Without `layer_types` the pattern decides; `query_pre_attn_scalar` need not be head_dim.
    #[test]
    fn gemma3_pattern_and_scalar() {
        let mut j = gemma3_270m();
        let o = j.as_object_mut().unwrap();
        o.remove("layer_types");
        o.remove("_sliding_window_pattern");
        o.insert("sliding_window_pattern".into(), json!(3));
        o.insert("query_pre_attn_scalar".into(), json!(144));
        let c = parse(&j).unwrap();
        let full: Vec<usize> = (0..18).filter(|&i| c.layer_attention[i] == AttentionKind::Full).collect();
        assert_eq!(full, vec![2, 5, 8, 11, 14, 17]);
        assert_eq!(c.attention_scale, 1.0 / 12.0);

        // Default pattern 6 when neither key is present.
        j.as_object_mut().unwrap().remove("sliding_window_pattern");
        let c = parse(&j).unwrap();
        let full: Vec<usize> = (0..18).filter(|&i| c.layer_attention[i] == AttentionKind::Full).collect();
        assert_eq!(full, vec![5, 11, 17]);
    }

    #[test]
    fn gemma3_multimodal_nests_text_config() {
        let j = json!({
            "model_type": "gemma3", "eos_token_id": [1, 106],
            "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                            "num_hidden_layers": 34, "sliding_window": 1024},
            "vision_config": {"model_type": "siglip_vision_model"}
        });
        let c = parse(&j).unwrap();
        assert_eq!((c.hidden_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim), (2560, 34, 8, 4, 256));
        assert_eq!(c.eos_token_ids, vec![1, 106]);
        assert_eq!(c.layer_attention[0], AttentionKind::Sliding { window: 1024 });

        let mut bad = j.clone();
        bad["text_config"].as_object_mut().unwrap().remove("hidden_size");
        assert!(err_text(&bad).contains("text_config.hidden_size: missing"));
        let mut scaled = j.clone();
        scaled["text_config"]["rope_scaling"] = json!({"rope_type": "linear", "factor": 8.0});
        assert!(matches!(parse(&scaled), Err(FormatError::Unsupported { .. })));
    }

    #[test]
    fn gemma3_nested_rope_parameters() {
        let mut j = gemma3_270m();
        let o = j.as_object_mut().unwrap();
        o.remove("rope_theta");
        o.remove("rope_local_base_freq");
        o.insert(
            "rope_parameters".into(),
            json!({"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
        );
        let c = parse(&j).unwrap();
        assert_eq!((c.rope_theta, c.rope_theta_sliding), (1e6, Some(1e4)));
    }

    /// HuggingFaceTB/SmolLM2-135M-Instruct's config.json.
    #[test]
    fn smollm2_llama_config() {
        let j = json!({
            "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
            "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192,
            "mlp_bias": false, "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
            "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
            "rope_theta": 100000, "tie_word_embeddings": true, "vocab_size": 49152
        });
        let c = parse(&j).unwrap();
        assert_eq!((c.arch, c.head_dim, c.n_kv_heads, c.rope_theta), (Arch::Llama, 64, 3, 100_000.0));
        assert_eq!(c.rope_style, RopeStyle::Neox);
        assert!(c.tie_embeddings && !c.qkv_bias);
        assert!(c.layer_attention.iter().all(|k| *k == AttentionKind::Full));

        let mut llama3 = j.clone();
        llama3["rope_scaling"] = json!({"rope_type": "llama3", "factor": 32.0});
        let e = parse(&llama3).unwrap_err();
        assert!(matches!(&e, FormatError::Unsupported { what, .. } if what.contains("llama3")), "{e}");
    }

    #[test]
    fn mistral_and_qwen2_windows_and_biases() {
        let base = json!({"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100});
        let c = parse(&base).unwrap();
        assert_eq!(c.layer_attention, vec![AttentionKind::Sliding { window: 4096 }; 2]);
        let mut no_window = base.clone();
        no_window["sliding_window"] = Value::Null;
        assert_eq!(parse(&no_window).unwrap().layer_attention, vec![AttentionKind::Full; 2]);

        let mut qwen = base.clone();
        qwen["model_type"] = json!("qwen2");
        let c = parse(&qwen).unwrap();
        assert_eq!((c.arch, c.qkv_bias, c.layer_attention[1]), (Arch::Qwen2, true, AttentionKind::Full));
        qwen["use_sliding_window"] = json!(true);
        qwen["sliding_window"] = json!(32);
        qwen["max_window_layers"] = json!(1);
        assert_eq!(
            parse(&qwen).unwrap().layer_attention,
            vec![AttentionKind::Full, AttentionKind::Sliding { window: 32 }]
        );
    }

    #[test]
    fn malformed_configs_are_typed_errors() {
        for (j, needle) in [
            (json!([1, 2]), "expected a JSON object"),
            (json!({}), "model_type: missing"),
            (json!({"model_type": 3}), "model_type: expected a string"),
            (json!({"model_type": "gemma3", "text_config": 5}), "text_config: expected a JSON object"),
        ] {
            let e = err_text(&j);
            assert!(e.contains("config.json") && e.contains(needle), "{e}");
        }
        assert!(matches!(parse(&json!({"model_type": "bert"})), Err(FormatError::Unsupported { .. })));
    }
}
