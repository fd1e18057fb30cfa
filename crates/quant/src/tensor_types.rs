//! Which storage type each tensor gets: llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp, without
//! `--imatrix`, `--tensor-type`, `--output-tensor-type` or `--token-embedding-type`), so that lowbit's files hold the
//! same types as llama-quantize's.
//!
//! The mixes depend on more than a tensor's own name: attn_v and ffn_down give more bits to some layers, counted in
//! the order llama.cpp's model loader lists tensors (outside blocks first, then block by block, by name within
//! each); the output matrix, or the token embedding where the two are tied, gets Q6_K or Q8_0; grouped-query
//! attention, expert count, the Falcon architecture and 70B models change some choices. Then every type whose block
//! does not divide the rows falls back as `tensor_type_fallback` does (SmolLM2's 576 columns, GPT-OSS's 2880).

use lowbit_formats::gguf::{GgufFile, Value};
use lowbit_formats::{DType, FormatError};

use crate::error::QuantError;
use crate::file_type::FileType;

/// The hyperparameters llama.cpp's choices read, from GGUF metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: u32,
    /// Query and key/value heads of layer 0 (`{arch}.attention.head_count[_kv]`; kv defaults to the query count).
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count`, 0 without experts.
    pub n_expert: u32,
}

impl ModelFacts {
    pub fn from_gguf(file: &GgufFile) -> Result<ModelFacts, FormatError> {
        let arch = file.get_str("general.architecture")?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_layer = u32_of(file, &key("block_count"))?.ok_or_else(|| missing(file, &key("block_count")))?;
        let n_head = u32_of(file, &key("attention.head_count"))?.unwrap_or(0);
        let n_head_kv = u32_of(file, &key("attention.head_count_kv"))?.unwrap_or(n_head);
        let n_expert = u32_of(file, &key("expert_count"))?.unwrap_or(0);
        Ok(ModelFacts { arch, n_layer, n_head, n_head_kv, n_expert })
    }

    /// `hparams.n_gqa()`: query heads per key/value head, 0 without key/value heads.
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Whether llama.cpp's loader types the model `LLM_TYPE_70B` (the per-architecture layer counts of
    /// `load_arch_hparams`; only this type changes a quantization choice).
    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// A u32 metadata value, or the first element of a per-layer array.
fn u32_of(file: &GgufFile, key: &str) -> Result<Option<u32>, FormatError> {
    let value = match file.get(key) {
        None => return Ok(None),
        Some(Value::Array(_, items)) => items.first(),
        Some(v) => Some(v),
    };
    match value.and_then(Value::as_u64).map(u32::try_from) {
        Some(Ok(v)) => Ok(Some(v)),
        _ => Err(FormatError::InFile {
            path: file.path().to_path_buf(),
            what: format!("metadata {key:?}: not an unsigned 32-bit integer"),
        }),
    }
}

fn missing(file: &GgufFile, key: &str) -> FormatError {
    FormatError::InFile { path: file.path().to_path_buf(), what: format!("metadata {key:?}: missing") }
}

/// One tensor as the choice sees it.
#[derive(Clone, Debug)]
pub struct TensorDesc<'a> {
    pub name: &'a str,
    /// ggml order: `ne[0]` is the row length.
    pub ne: &'a [u64],
    pub dtype: DType,
}

/// The storage type of every tensor (in the order given) when a model is written as `ftype`, `pure` as
/// llama-quantize's `--pure`, `has_imatrix` when an importance matrix is given. Tensors llama.cpp does not
/// quantize (norms, biases, …) keep their type.
///
/// Errors: an MoE tensor whose layer cannot be read from its name, as in llama.cpp.
pub fn choose_types(
    facts: &ModelFacts,
    tensors: &[TensorDesc],
    ftype: FileType,
    pure: bool,
    has_imatrix: bool,
) -> Result<Vec<DType>, QuantError> {
    let mut state = Counters::new(tensors, has_imatrix);
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| loader_order(tensors[a].name, tensors[b].name));
    let mut types: Vec<DType> = tensors.iter().map(|t| t.dtype).collect();
    for i in order {
        let t = &tensors[i];
        if allows_quantization(t, &facts.arch) {
            types[i] = tensor_type(&mut state, facts, t, ftype, pure)?;
        }
    }
    Ok(types)
}

/// `llama_model_loader::weight_name_comparer`: by the layer number after "blk." (−1 for none), then by name.
pub fn loader_order(a: &str, b: &str) -> std::cmp::Ordering {
    layer_of(a).unwrap_or(-1).cmp(&layer_of(b).unwrap_or(-1)).then_with(|| a.cmp(b))
}

/// `sscanf(name, "blk.%d.", &layer)`: the integer after "blk.", whatever follows it.
fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let (sign, digits) = match rest.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, rest.strip_prefix('+').unwrap_or(rest)),
    };
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse::<i64>().ok().map(|v| sign * v)
}

/// Broad tensor roles, llama.cpp's `tensor_category`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttentionQkv,
    AttentionKvB,
    AttentionV,
    AttentionK,
    AttentionQ,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    /// `tensor_get_category`: first matching rule wins.
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Category::TokenEmbd;
        }
        let rules = [
            ("attn_qkv.weight", Category::AttentionQkv),
            ("attn_kv_b.weight", Category::AttentionKvB),
            ("attn_v.weight", Category::AttentionV),
            ("attn_k.weight", Category::AttentionK),
            ("attn_q.weight", Category::AttentionQ),
            ("attn_output.weight", Category::AttentionOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        rules.into_iter().find(|(part, _)| name.contains(part)).map_or(Category::Other, |(_, c)| c)
    }

    /// `category_is_attn_v`: the value projections, more sensitive to quantization.
    fn is_attn_v(self) -> bool {
        matches!(self, Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB)
    }
}

/// `quantize_state_impl`'s counters.
struct Counters {
    n_attention_wv: u32,
    i_attention_wv: u32,
    i_ffn_down: u32,
    i_ffn_gate: u32,
    i_ffn_up: u32,
    has_tied_embeddings: bool,
    /// `qs.has_imatrix`: an importance matrix is given.
    has_imatrix: bool,
}

impl Counters {
    /// `init_quantize_state_counters`, over every tensor of the model.
    fn new(tensors: &[TensorDesc], has_imatrix: bool) -> Counters {
        let categories = || tensors.iter().map(|t| Category::of(t.name));
        Counters {
            n_attention_wv: categories().filter(|c| c.is_attn_v()).count() as u32,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            has_tied_embeddings: !categories().any(|c| c == Category::Output),
            has_imatrix,
        }
    }
}

/// ggml's `ggml_n_dims`: the dimensions up to the last one larger than 1 (at least 1).
fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&n| n > 1).map_or(1, |i| i + 1)
}

/// Name parts of tensors llama.cpp never quantizes (small, or positional, or routing tables).
const NEVER_QUANTIZED: [&str; 35] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// More name parts GLM5-next keeps unquantized.
const NEVER_QUANTIZED_GLM5_NEXT: [&str; 14] = [
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// `tensor_allows_quantization` (with llama-quantize's defaults: the output matrix is quantized).
fn allows_quantization(t: &TensorDesc, arch: &str) -> bool {
    if n_dims(t.ne) < 2 || !t.name.ends_with("weight") {
        return false;
    }
    // BERT's positional and token-type embeddings (`LLM_TN(arch)(LLM_TENSOR_POS_EMBD / TOKEN_TYPES, "weight")`).
    if t.name == "position_embd.weight" || t.name == "token_types.weight" {
        return false;
    }
    let arch_parts: &[&str] = if arch == "glm5-next" { &NEVER_QUANTIZED_GLM5_NEXT } else { &[] };
    !NEVER_QUANTIZED.iter().chain(arch_parts).any(|p| t.name.contains(p))
}

/// `llama_tensor_get_type` for a tensor llama.cpp quantizes.
fn tensor_type(
    state: &mut Counters,
    facts: &ModelFacts,
    t: &TensorDesc,
    ftype: FileType,
    pure: bool,
) -> Result<DType, QuantError> {
    let default = ftype.default_type();
    if !is_block_type(default) {
        return Ok(default);
    }
    let chosen = if pure { default } else { mix_type(state, facts, t, ftype, default)? };
    Ok(fallback(chosen, t.ne[0]))
}

/// `ggml_is_quantized` for the types lowbit has.
fn is_block_type(d: DType) -> bool {
    d.block_len() > 1
}

/// `use_more_bits`: the first and last eighth of the layers, and every third one between.
fn use_more_bits(i_layer: u32, n_layers: u32) -> bool {
    let (i, n) = (i64::from(i_layer), i64::from(n_layers));
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `llama_tensor_get_type_impl`, the mixes' rules, for the file types lowbit writes.
fn mix_type(
    state: &mut Counters,
    facts: &ModelFacts,
    t: &TensorDesc,
    ftype: FileType,
    default: DType,
) -> Result<DType, QuantError> {
    use FileType as F;
    let category = Category::of(t.name);
    let falcon = facts.arch == "falcon";
    let mut new_type = default;
    if facts.arch == "glm5-next"
        && ["attn_q_a", "attn_q_b", "nextn.eh_proj"].iter().any(|p| t.name.contains(p))
        && !matches!(new_type, DType::F32 | DType::BF16 | DType::F16)
    {
        return Ok(DType::Q8_0);
    }
    if category == Category::Output || (state.has_tied_embeddings && category == Category::TokenEmbd) {
        new_type = if ftype == F::Mxfp4Moe || falcon || !t.ne[0].is_multiple_of(new_type.block_len() as u64) {
            DType::Q8_0
        } else if new_type != DType::Q8_0 {
            DType::Q6K
        } else {
            new_type
        };
    } else if ftype == F::Mxfp4Moe {
        // Expert tensors (3-D) get MXFP4, everything else Q8_0; BailingMoE3's 3-D MLA projections are not experts.
        let expert_role = matches!(category, Category::FfnUp | Category::FfnGate | Category::FfnDown);
        let is_expert = t.ne.get(2).is_some_and(|&n| n > 1) && (facts.arch != "bailingmoe3" || expert_role);
        new_type = if is_expert { DType::MXFP4 } else { DType::Q8_0 };
    } else if category == Category::TokenEmbd {
        if matches!(ftype, F::TQ1_0 | F::TQ2_0) {
            new_type = DType::Q4K;
        }
    } else if category.is_attn_v() {
        let (i, n) = (state.i_attention_wv, state.n_attention_wv);
        match ftype {
            F::Q2K => new_type = if facts.n_gqa() >= 4 { DType::Q4K } else { DType::Q3K },
            F::Q3KM => new_type = if i < 2 { DType::Q5K } else { DType::Q4K },
            F::Q3KL => new_type = DType::Q5K,
            F::Q4KM | F::Q5KM if use_more_bits(i, n) => new_type = DType::Q6K,
            F::Q4KS if i < 4 => new_type = DType::Q5K,
            _ => {}
        }
        // 70B models share each attn_v among 8 query heads, which makes it 8× smaller than attn_q: more bits cost
        // little there.
        if facts.is_70b() && matches!(new_type, DType::Q3K | DType::Q4K) {
            new_type = DType::Q5K;
        }
        if facts.n_expert == 8 {
            new_type = DType::Q8_0;
        }
        state.i_attention_wv += 1;
    } else if category == Category::AttentionK {
        if facts.n_expert == 8 {
            new_type = DType::Q8_0;
        }
    } else if category == Category::FfnDown {
        let (i, n) = layer_info(facts, state.i_ffn_down, t.name)?;
        match ftype {
            F::Q2K => new_type = DType::Q3K,
            F::Q3KM => {
                new_type = if i < n / 16 {
                    DType::Q5K
                } else if !falcon || use_more_bits(i, n) {
                    DType::Q4K
                } else {
                    DType::Q3K
                }
            }
            F::Q3KL => new_type = if falcon { DType::Q4K } else { DType::Q5K },
            F::Q4KM if falcon => {
                new_type = if i < n / 16 {
                    DType::Q6K
                } else if use_more_bits(i, n) {
                    DType::Q5K
                } else {
                    DType::Q4K
                }
            }
            F::Q4KM | F::Q5KM if use_more_bits(i, n) => new_type = DType::Q6K,
            F::Q4KS if !falcon && i < n / 8 => new_type = DType::Q5K,
            // With an imatrix, Q4_0 and Q5_0 guard the first eighth of ffn_down with the types that have a minimum
            // (Q4_1 and Q5_1 go astray there without one, so the rule waits for an imatrix).
            F::Q4_0 if state.has_imatrix && i < n / 8 => new_type = DType::Q4_1,
            F::Q5_0 if state.has_imatrix && i < n / 8 => new_type = DType::Q5_1,
            _ => {}
        }
        state.i_ffn_down += 1;
    } else if category == Category::AttentionOutput {
        if !falcon {
            if facts.n_expert == 8 {
                if matches!(ftype, F::Q2K | F::Q3KS | F::Q3KM | F::Q4KS | F::Q4KM) {
                    new_type = DType::Q5K;
                }
            } else {
                match ftype {
                    F::Q2K => new_type = DType::Q3K,
                    F::Q3KM => new_type = DType::Q4K,
                    F::Q3KL => new_type = DType::Q5K,
                    _ => {}
                }
            }
        } else if ftype == F::Q3KL {
            new_type = DType::Q4K;
        }
    } else if category == Category::AttentionQkv {
        match ftype {
            F::Q3KM | F::Q3KL => new_type = DType::Q4K,
            F::Q4KM => new_type = DType::Q5K,
            F::Q5KM => new_type = DType::Q6K,
            _ => {}
        }
    } else if category == Category::FfnGate {
        // Only IQ3_XS (not written here) changes ffn_gate and ffn_up, but llama.cpp still reads their layer, which
        // fails for an MoE tensor outside the blocks.
        layer_info(facts, state.i_ffn_gate, t.name)?;
        state.i_ffn_gate += 1;
    } else if category == Category::FfnUp {
        layer_info(facts, state.i_ffn_up, t.name)?;
        state.i_ffn_up += 1;
    }
    Ok(new_type)
}

/// llama.cpp's `layer_info`: a dense model's layer is the tensor's position among its kind (`counter`); an MoE
/// model's is read from the name, because experts are not always listed in layer order.
fn layer_info(facts: &ModelFacts, counter: u32, name: &str) -> Result<(u32, u32), QuantError> {
    let n = facts.n_layer;
    if facts.n_expert <= 1 {
        return Ok((counter, n));
    }
    let bad = |what: String| QuantError::Tensor { tensor: name.to_string(), what };
    let layer = layer_of(name).ok_or_else(|| bad("the layer number cannot be read from the name".into()))?;
    u32::try_from(layer)
        .ok()
        .filter(|&l| l < n)
        .map(|l| (l, n))
        .ok_or_else(|| bad(format!("layer {layer} is outside the model's {n} layers")))
}

/// `tensor_type_fallback`: a type whose block does not divide the row length is replaced (Q2_K, Q3_K, TQ1_0,
/// TQ2_0 → Q4_0; Q4_K → Q5_0; Q5_K → Q5_1; Q6_K → Q8_0; a 32-element type by itself), and by F16 when even that
/// does not divide it.
pub fn fallback(target: DType, row_len: u64) -> DType {
    if row_len.is_multiple_of(target.block_len() as u64) {
        return target;
    }
    let replacement = match target {
        DType::Q2K | DType::Q3K | DType::TQ1_0 | DType::TQ2_0 => DType::Q4_0,
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        other => other,
    };
    if row_len.is_multiple_of(replacement.block_len() as u64) {
        replacement
    } else {
        DType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_picks_the_ends_and_every_third_layer() {
        let picked: Vec<u32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(picked, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }

    #[test]
    fn loader_order_puts_unnumbered_tensors_first_then_layers_numerically() {
        let mut names = ["blk.10.attn_v.weight", "output_norm.weight", "blk.2.ffn_up.weight", "blk.2.attn_k.weight"];
        names.sort_by(|a, b| loader_order(a, b));
        assert_eq!(names, ["output_norm.weight", "blk.2.attn_k.weight", "blk.2.ffn_up.weight", "blk.10.attn_v.weight"]);
    }

    #[test]
    fn rows_that_do_not_fit_fall_back_like_llama_cpp() {
        assert_eq!(fallback(DType::Q4K, 576), DType::Q5_0);
        assert_eq!(fallback(DType::Q4K, 1536), DType::Q4K);
        assert_eq!(fallback(DType::Q6K, 576), DType::Q8_0);
        assert_eq!(fallback(DType::Q5K, 576), DType::Q5_1);
        assert_eq!(fallback(DType::TQ1_0, 640), DType::Q4_0);
        assert_eq!(fallback(DType::MXFP4, 2880), DType::MXFP4);
        assert_eq!(fallback(DType::Q8_0, 100), DType::F16);
        assert_eq!(fallback(DType::Q2K, 100), DType::F16);
    }

    #[test]
    fn one_row_matrices_and_norms_are_not_quantized() {
        let t = |name, ne| TensorDesc { name, ne, dtype: DType::F32 };
        assert!(allows_quantization(&t("blk.0.attn_q.weight", &[576, 576]), "llama"));
        assert!(!allows_quantization(&t("blk.0.attn_q.weight", &[576, 1]), "llama"));
        assert!(!allows_quantization(&t("blk.0.attn_q_norm.weight", &[64, 4]), "llama"));
        assert!(!allows_quantization(&t("blk.0.attn_q.bias", &[576, 576]), "llama"));
        assert!(!allows_quantization(&t("blk.0.ffn_gate_inp.weight", &[576, 32]), "llama"));
        assert!(allows_quantization(&t("blk.0.hc_x.weight", &[576, 32]), "llama"));
        assert!(!allows_quantization(&t("blk.0.hc_x.weight", &[576, 32]), "glm5-next"));
    }
}
