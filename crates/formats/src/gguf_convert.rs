//! A Hugging Face GPT-OSS checkpoint as a GGUF file that llama.cpp loads (`gpt-oss`), laid out as llama.cpp's
//! converter (`convert_hf_to_gguf.py`, `GptOssModel`) lays it out:
//!
//! * metadata: the `gpt-oss.*` hyperparameters (YaRN under `rope.scaling.*`, the experts' width under
//!   `expert_feed_forward_length`, the window under `attention.sliding_window`; llama.cpp slides on even layers, so
//!   other layer patterns are refused), then the tokenizer ([`BpeVocab`]);
//! * the fused gate/up experts split into `ffn_gate_exps` (even rows) and `ffn_up_exps` (odd rows), their bias too;
//! * MXFP4 experts repacked into ggml's blocks, the values unchanged
//!   ([`split_mxfp4_to_blocks`](crate::dequant::split_mxfp4_to_blocks));
//! * norms, the attention sinks, the router and every bias in F32 (the converter's rule for 1-D tensors, norms,
//!   `ffn_gate_inp` and names not ending in `.weight`); every other matrix in its own float type, so nothing is
//!   rounded (llama.cpp's converter would round to its `--outtype`; BF16 checkpoints come out the same).
//!
//! Tensors are produced one at a time while the file is written (experts one expert at a time), so memory holds
//! one tensor, and the file appears only when complete. Any other type lowbit writes re-quantizes this file
//! (`gguf_export`), as llama-quantize does after the converter.

use std::path::Path;

use crate::config::{gguf_gpt_oss_layers, Arch, AttentionKind, ModelConfig, GPT_OSS_GGUF};
use crate::dequant::split_mxfp4_to_blocks;
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::experts::{is_mxfp4_scales, ExpertStack, StackStorage};
use crate::gguf::Value;
use crate::gguf_tokenizer::BpeVocab;
use crate::gguf_write::{GgufWriter, TensorData, TensorSink};
use crate::quantize::quantize;
use crate::source::ModelSource;

/// What the conversion wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub tensors: usize,
    pub bytes: u64,
}

/// Writes the GPT-OSS checkpoint `source` (a Hugging Face directory) to `out` with `vocab` as its tokenizer, cut to
/// the model's vocabulary when the model has fewer rows. `progress(i, name)` is called as the `i`-th tensor is
/// written. On any error nothing is left at `out`.
pub fn convert_gpt_oss(
    source: &ModelSource,
    vocab: &BpeVocab,
    name: &str,
    out: &Path,
    progress: &dyn Fn(usize, &str),
) -> Result<Converted> {
    let unsupported = |what: String| FormatError::Unsupported { path: source.path().to_path_buf(), what };
    let config = source.config()?;
    if config.arch != Arch::GptOss || !matches!(source, ModelSource::Hf(_)) {
        return Err(unsupported("GGUF conversion reads a Hugging Face GPT-OSS directory".into()));
    }
    let window = sliding_window(&config).ok_or_else(|| {
        unsupported("layers that do not alternate sliding (even) and full (odd) attention, as llama.cpp's do".into())
    })?;
    let mut vocab = vocab.clone();
    if vocab.tokens.len() < config.vocab_size {
        return Err(unsupported(format!(
            "a tokenizer of {} ids for an embedding of {} rows",
            vocab.tokens.len(),
            config.vocab_size
        )));
    }
    vocab.truncate(config.vocab_size);

    let mut w = GgufWriter::new();
    let tensors = plan(source)?;
    let file_type = match tensors.iter().find(|t| t.name == "token_embd.weight").map(|t| t.dtype) {
        Some(DType::F16) => 1,
        Some(DType::BF16) => 32,
        _ => 0,
    };
    metadata(&mut w, &config, window, name, file_type)?;
    vocab.write_metadata(&mut w)?;
    let mut converted = Converted::default();
    for (i, t) in tensors.into_iter().enumerate() {
        converted.tensors += 1;
        converted.bytes += t.dtype.storage_bytes(t.shape.iter().product::<usize>() as u64)?;
        let (name, dtype, shape) = (t.name.clone(), t.dtype, t.shape.clone());
        let data = TensorData::deferred(move |sink| {
            progress(i, &t.name);
            t.write(source, sink)
        });
        w.tensor(&name, dtype, &shape, data)?;
    }
    w.write(out)?;
    Ok(converted)
}

/// The window when the layers attend as a GGUF gpt-oss model's do.
fn sliding_window(config: &ModelConfig) -> Option<usize> {
    let AttentionKind::Sliding { window } = *config.layer_attention.first()? else { return None };
    (config.layer_attention == gguf_gpt_oss_layers(config.n_layers, window)).then_some(window)
}

fn metadata(w: &mut GgufWriter, c: &ModelConfig, window: usize, name: &str, file_type: u32) -> Result<()> {
    let yarn = c.yarn.as_ref().ok_or_else(|| FormatError::Invalid("a GPT-OSS config without YaRN".into()))?;
    let moe = c.moe.as_ref().ok_or_else(|| FormatError::Invalid("a GPT-OSS config without experts".into()))?;
    let u32_of = |v: usize| u32::try_from(v).map(Value::U32).map_err(|_| FormatError::Invalid(format!("{v} > u32")));
    let key = |k: &str| format!("{GPT_OSS_GGUF}.{k}");
    w.metadata("general.architecture", Value::String(GPT_OSS_GGUF.into()))?;
    w.metadata("general.type", Value::String("model".into()))?;
    w.metadata("general.name", Value::String(name.into()))?;
    w.metadata("general.file_type", Value::U32(file_type))?;
    w.metadata("general.quantization_version", Value::U32(2))?;
    let sizes = [
        ("block_count", c.n_layers),
        ("context_length", c.context_length),
        ("embedding_length", c.hidden_size),
        ("feed_forward_length", c.intermediate_size),
        ("expert_feed_forward_length", c.intermediate_size),
        ("attention.head_count", c.n_heads),
        ("attention.head_count_kv", c.n_kv_heads),
        ("attention.key_length", c.head_dim),
        ("attention.value_length", c.head_dim),
        ("attention.sliding_window", window),
        ("expert_count", moe.n_experts),
        ("expert_used_count", moe.experts_per_token),
        ("rope.scaling.original_context_length", yarn.original_context),
    ];
    for (k, v) in sizes {
        w.metadata(&key(k), u32_of(v)?)?;
    }
    let reals = [
        ("rope.freq_base", c.rope_theta),
        ("attention.layer_norm_rms_epsilon", c.rms_eps),
        ("rope.scaling.factor", yarn.factor),
        ("rope.scaling.yarn_beta_fast", yarn.beta_fast),
        ("rope.scaling.yarn_beta_slow", yarn.beta_slow),
    ];
    for (k, v) in reals {
        w.metadata(&key(k), Value::F32(v))?;
    }
    w.metadata(&key("rope.scaling.type"), Value::String("yarn".into()))
}

/// Where an output tensor's values come from.
enum Part {
    /// A source tensor, its bytes as they are.
    Copy(String),
    /// A source tensor in F32.
    F32(String),
    /// Every `step`-th column (from `first`) of a 2-D source tensor, in F32: the split gate/up bias.
    Columns { tensor: String, first: usize, step: usize },
    /// Every `step`-th row (from `first`) of each expert of a stack: the split gate/up experts, or all of down's.
    ExpertRows { stack: ExpertStack, first: usize, step: usize },
}

struct OutTensor {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    part: Part,
}

/// The output tensors, blocks in order, each block's tensors by name.
fn plan(source: &ModelSource) -> Result<Vec<OutTensor>> {
    let mut out = Vec::new();
    for name in source.tensor_names() {
        if is_mxfp4_scales(source, name) {
            continue;
        }
        if let Some(stack) = ExpertStack::of(source, name)? {
            let base = stack.name.trim_end_matches(".weight").to_string();
            let dtype = match &stack.storage {
                StackStorage::Mxfp4 { .. } => DType::MXFP4,
                StackStorage::Transposed { dtype, .. } if is_float(*dtype) => *dtype,
                _ => DType::F32,
            };
            let halves: Vec<(String, usize, usize)> = match base.strip_suffix("ffn_gate_up_exps") {
                Some(block) => {
                    vec![(format!("{block}ffn_gate_exps.weight"), 0, 2), (format!("{block}ffn_up_exps.weight"), 1, 2)]
                }
                None => vec![(stack.name.clone(), 0, 1)],
            };
            for (name, first, step) in halves {
                let shape = vec![stack.experts, stack.rows / step, stack.cols];
                out.push(OutTensor {
                    name,
                    dtype,
                    shape,
                    part: Part::ExpertRows { stack: stack.clone(), first, step },
                });
            }
            continue;
        }
        let t = source.tensor(name)?;
        if let Some(block) = name.strip_suffix("ffn_gate_up_exps.bias") {
            let [experts, both] = t.shape[..] else {
                return Err(FormatError::Invalid(format!("tensor {name}: shape {:?}", t.shape)));
            };
            for (half, first) in [("ffn_gate_exps.bias", 0), ("ffn_up_exps.bias", 1)] {
                let part = Part::Columns { tensor: name.to_string(), first, step: 2 };
                out.push(OutTensor {
                    name: format!("{block}{half}"),
                    dtype: DType::F32,
                    shape: vec![experts, both / 2],
                    part,
                });
            }
            continue;
        }
        let wide = t.shape.len() <= 1
            || name.ends_with("_norm.weight")
            || name.contains(".ffn_gate_inp.")
            || !name.ends_with(".weight");
        let (dtype, part) = match wide || !is_float(t.dtype) {
            true => (DType::F32, Part::F32(name.to_string())),
            false => (t.dtype, Part::Copy(name.to_string())),
        };
        out.push(OutTensor { name: name.to_string(), dtype, shape: t.shape.clone(), part });
    }
    let block =
        |n: &str| n.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|b| b.parse::<usize>().ok());
    out.sort_by(|a, b| (block(&a.name), &a.name).cmp(&(block(&b.name), &b.name)));
    Ok(out)
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

impl OutTensor {
    fn write(&self, source: &ModelSource, sink: &mut TensorSink) -> Result<()> {
        match &self.part {
            Part::Copy(tensor) => {
                let t = source.tensor(tensor)?;
                sink.write(t.data)?;
                source.release(&t);
                Ok(())
            }
            Part::F32(tensor) => sink.write(&f32_bytes(&source.tensor_f32(tensor)?.1)),
            Part::Columns { tensor, first, step } => {
                let (shape, values) = source.tensor_f32(tensor)?;
                let cols = shape.last().copied().unwrap_or(1);
                let picked: Vec<f32> =
                    values.chunks_exact(cols).flat_map(|row| row.iter().skip(*first).step_by(*step)).copied().collect();
                sink.write(&f32_bytes(&picked))
            }
            Part::ExpertRows { stack, first, step } => {
                for e in 0..stack.experts {
                    let rows = (*first..stack.rows).step_by(*step);
                    match &stack.storage {
                        StackStorage::Mxfp4 { blocks, scales } => {
                            let (codes, exps) = (stack.part(source, blocks, e)?, stack.part(source, scales, e)?);
                            let (row_codes, row_exps) = (codes.data.len() / stack.rows, exps.data.len() / stack.rows);
                            for r in rows {
                                let ggml = split_mxfp4_to_blocks(
                                    &codes.data[r * row_codes..(r + 1) * row_codes],
                                    &exps.data[r * row_exps..(r + 1) * row_exps],
                                )
                                .ok_or_else(|| {
                                    FormatError::Invalid(format!("{}: MXFP4 parts do not match", stack.name))
                                })?;
                                sink.write(&ggml)?;
                            }
                            // Read once: the pages may go, so memory holds an expert, not the model.
                            source.release(&codes);
                            source.release(&exps);
                        }
                        _ => {
                            let values = stack.expert_f32(source, e)?;
                            let picked: Vec<f32> =
                                rows.flat_map(|r| &values[r * stack.cols..(r + 1) * stack.cols]).copied().collect();
                            sink.write(&quantize(self.dtype, &picked, stack.cols, None)?)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
