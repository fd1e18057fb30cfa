//! Hugging Face tensor names -> lowbit's canonical names, which are llama.cpp's GGUF names.
//!
//! The map is a pure rename: a tensor keeps its bytes, dtype and shape. Names this module does
//! not know (vision towers, future additions) are returned unchanged, so nothing a checkpoint
//! holds is silently dropped.
//!
//! GPT-OSS follows llama.cpp's `gpt-oss` tensor names where llama.cpp has one:
//!
//! | Hugging Face (`model.layers.N.` …)        | canonical (`blk.N.` …)           |
//! |-------------------------------------------|----------------------------------|
//! | `input_layernorm.weight`                  | `attn_norm.weight`               |
//! | `post_attention_layernorm.weight`         | `post_attention_norm.weight`     |
//! | `self_attn.sinks`                         | `attn_sinks.weight`              |
//! | `mlp.router.{weight,bias}`                | `ffn_gate_inp.{weight,bias}`     |
//! | `mlp.experts.gate_up_proj`                | `ffn_gate_up_exps.weight`        |
//! | `mlp.experts.gate_up_proj_{blocks,scales,bias}` | `ffn_gate_up_exps.{blocks,scales,bias}` |
//! | `mlp.experts.down_proj`                   | `ffn_down_exps.weight`           |
//! | `mlp.experts.down_proj_{blocks,scales,bias}` | `ffn_down_exps.{blocks,scales,bias}` |
//!
//! llama.cpp's converter splits the fused gate/up experts into `ffn_gate_exps` and `ffn_up_exps`;
//! that split moves data (gate and up rows interleave: gate = even rows, up = odd rows), so a
//! rename cannot do it and the fused tensor keeps llama.cpp's fused name `ffn_gate_up_exps`.
//! The MXFP4 halves keep their Hugging Face meaning under `.blocks` / `.scales`
//! (U8 `[experts, rows, cols/32, 16]` and `[experts, rows, cols/32]`). Unquantized expert weights
//! (`.weight`) keep transformers' layout `[experts, in, out]`, the transpose of a Linear weight.

use crate::config::Arch;

/// The canonical name of the Hugging Face tensor `hf_name` in a checkpoint of `arch`.
pub fn hf_to_canonical(arch: Arch, hf_name: &str) -> String {
    let stripped = strip_multimodal_prefix(arch, hf_name);
    let name: &str = &stripped;
    match name {
        "model.embed_tokens.weight" => return "token_embd.weight".to_string(),
        "model.norm.weight" => return "output_norm.weight".to_string(),
        "lm_head.weight" => return "output.weight".to_string(),
        _ => {}
    }
    layer_name(arch, name).unwrap_or_else(|| hf_name.to_string())
}

/// Gemma 3's multimodal checkpoints nest the text model: older transformers write
/// `language_model.model.layers…` and `language_model.lm_head…`, newer ones
/// `model.language_model.layers…` with `lm_head` at the top.
fn strip_multimodal_prefix(arch: Arch, name: &str) -> std::borrow::Cow<'_, str> {
    if arch != Arch::Gemma3 {
        return name.into();
    }
    if let Some(rest) = name.strip_prefix("language_model.") {
        return rest.into();
    }
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        return format!("model.{rest}").into();
    }
    name.into()
}

/// `model.layers.N.<module>.<suffix>` -> `blk.N.<stem>.<suffix>`.
fn layer_name(arch: Arch, name: &str) -> Option<String> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let canonical_rest = if arch == Arch::GptOss { gpt_oss_special(rest) } else { None };
    let canonical_rest = match canonical_rest {
        Some(r) => r,
        None => {
            let (module, suffix) = rest.rsplit_once('.')?;
            if suffix != "weight" && suffix != "bias" {
                return None;
            }
            format!("{}.{suffix}", module_stem(arch, module)?)
        }
    };
    Some(format!("blk.{layer}.{canonical_rest}"))
}

/// The GGUF stem of a per-layer module that carries `.weight` / `.bias`.
fn module_stem(arch: Arch, module: &str) -> Option<&'static str> {
    Some(match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "input_layernorm" => "attn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        // Llama-style blocks have one norm before the MLP; Gemma 3 and GPT-OSS name their norms
        // after where they sit, and llama.cpp follows them.
        "post_attention_layernorm" => match arch {
            Arch::Llama | Arch::Qwen2 => "ffn_norm",
            Arch::Gemma3 | Arch::GptOss => "post_attention_norm",
        },
        "pre_feedforward_layernorm" if arch == Arch::Gemma3 => "ffn_norm",
        "post_feedforward_layernorm" if arch == Arch::Gemma3 => "post_ffw_norm",
        "self_attn.q_norm" if arch == Arch::Gemma3 => "attn_q_norm",
        "self_attn.k_norm" if arch == Arch::Gemma3 => "attn_k_norm",
        "mlp.router" if arch == Arch::GptOss => "ffn_gate_inp",
        _ => return None,
    })
}

/// GPT-OSS tensors whose Hugging Face names carry no `.weight` / `.bias` suffix.
fn gpt_oss_special(rest: &str) -> Option<String> {
    if rest == "self_attn.sinks" {
        return Some("attn_sinks.weight".to_string());
    }
    let experts = rest.strip_prefix("mlp.experts.")?;
    let (projection, part) = match experts.rsplit_once('_') {
        Some((p, part @ ("blocks" | "scales" | "bias"))) => (p, part),
        _ => (experts, "weight"),
    };
    let stem = match projection {
        "gate_up_proj" => "ffn_gate_up_exps",
        "down_proj" => "ffn_down_exps",
        _ => return None,
    };
    Some(format!("{stem}.{part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(arch: Arch, pairs: &[(&str, &str)]) {
        for (hf, want) in pairs {
            assert_eq!(hf_to_canonical(arch, hf), *want, "{hf}");
        }
    }

    #[test]
    fn llama_names_follow_llama_cpp() {
        map(
            Arch::Llama,
            &[
                ("model.embed_tokens.weight", "token_embd.weight"),
                ("model.norm.weight", "output_norm.weight"),
                ("lm_head.weight", "output.weight"),
                ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
                ("model.layers.12.self_attn.k_proj.weight", "blk.12.attn_k.weight"),
                ("model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"),
                ("model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"),
                ("model.layers.3.input_layernorm.weight", "blk.3.attn_norm.weight"),
                ("model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"),
                ("model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight"),
                ("model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight"),
                ("model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"),
            ],
        );
        map(Arch::Qwen2, &[("model.layers.1.self_attn.q_proj.bias", "blk.1.attn_q.bias")]);
    }

    #[test]
    fn gemma3_norms_keep_their_positions() {
        map(
            Arch::Gemma3,
            &[
                ("model.layers.5.post_attention_layernorm.weight", "blk.5.post_attention_norm.weight"),
                ("model.layers.5.pre_feedforward_layernorm.weight", "blk.5.ffn_norm.weight"),
                ("model.layers.5.post_feedforward_layernorm.weight", "blk.5.post_ffw_norm.weight"),
                ("model.layers.5.self_attn.q_norm.weight", "blk.5.attn_q_norm.weight"),
                ("model.layers.5.self_attn.k_norm.weight", "blk.5.attn_k_norm.weight"),
                ("language_model.model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
                ("model.language_model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
                ("language_model.model.embed_tokens.weight", "token_embd.weight"),
                ("language_model.lm_head.weight", "output.weight"),
                // The vision tower has no GGUF text-model name and stays as it is.
                ("vision_tower.vision_model.post_layernorm.weight", "vision_tower.vision_model.post_layernorm.weight"),
            ],
        );
    }

    #[test]
    fn gpt_oss_names_follow_llama_cpp() {
        map(
            Arch::GptOss,
            &[
                ("model.layers.7.self_attn.sinks", "blk.7.attn_sinks.weight"),
                ("model.layers.7.self_attn.o_proj.bias", "blk.7.attn_output.bias"),
                ("model.layers.7.post_attention_layernorm.weight", "blk.7.post_attention_norm.weight"),
                ("model.layers.7.mlp.router.weight", "blk.7.ffn_gate_inp.weight"),
                ("model.layers.7.mlp.router.bias", "blk.7.ffn_gate_inp.bias"),
                ("model.layers.7.mlp.experts.gate_up_proj_blocks", "blk.7.ffn_gate_up_exps.blocks"),
                ("model.layers.7.mlp.experts.gate_up_proj_scales", "blk.7.ffn_gate_up_exps.scales"),
                ("model.layers.7.mlp.experts.gate_up_proj_bias", "blk.7.ffn_gate_up_exps.bias"),
                ("model.layers.7.mlp.experts.gate_up_proj", "blk.7.ffn_gate_up_exps.weight"),
                ("model.layers.7.mlp.experts.down_proj_blocks", "blk.7.ffn_down_exps.blocks"),
                ("model.layers.7.mlp.experts.down_proj", "blk.7.ffn_down_exps.weight"),
            ],
        );
    }

    #[test]
    fn unknown_names_are_kept() {
        for name in [
            "model.layers.x.self_attn.q_proj.weight",
            "model.layers.1.self_attn.rotary_emb.inv_freq",
            "model.layers.1.mlp.experts.up_proj_blocks",
            "model.layers.1.self_attn.q_norm.weight",
            "something.else",
        ] {
            assert_eq!(hf_to_canonical(Arch::Llama, name), name);
        }
        // Only GPT-OSS has sinks and routers; elsewhere the names pass through.
        assert_eq!(hf_to_canonical(Arch::Llama, "model.layers.1.self_attn.sinks"), "model.layers.1.self_attn.sinks");
    }

    /// Every tensor of the released GPT-OSS-20B maps to a distinct canonical name in llama.cpp's
    /// `blk.N.` / top-level scheme: none is passed through unmapped.
    #[test]
    fn every_gpt_oss_20b_name_maps() {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/gpt-oss-20b/model.safetensors.index.json");
        let text = std::fs::read_to_string(path).unwrap();
        let index: serde_json::Value = serde_json::from_str(&text).unwrap();
        let map = index["weight_map"].as_object().unwrap();
        let mut seen = std::collections::HashSet::new();
        for hf in map.keys() {
            let canonical = hf_to_canonical(Arch::GptOss, hf);
            assert!(
                canonical.starts_with("blk.")
                    || ["token_embd.weight", "output_norm.weight", "output.weight"].contains(&canonical.as_str()),
                "{hf} -> {canonical}"
            );
            assert!(seen.insert(canonical.clone()), "{canonical} twice");
        }
        assert_eq!(seen.len(), 459);
    }
}
