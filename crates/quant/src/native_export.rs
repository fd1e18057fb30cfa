//! Writing a model as a lowbit native directory (`lowbit_formats::native`), one tensor at a time.
//!
//! Any source works (GGUF, Hugging Face, a native directory): tensors are read through
//! `ModelSource::tensor_f32`, quantized per [`NativeScheme`], and streamed into model.safetensors, so
//! memory holds one tensor's values and output at a time. The source's metadata travels with the
//! tensors in its own format: a GGUF source's key-value metadata as a tensor-less metadata.gguf, a
//! Hugging Face source's config.json and tokenizer files as copies.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use lowbit_formats::gguf_write::GgufWriter;
use lowbit_formats::native::nf4::{self, BLOCK_BYTES, NESTED_BLOCK};
use lowbit_formats::native::qconfig::{
    absmax_name, codes_name, nested_absmax_name, offset_name, scales_name, zeros_name, FORMAT_TAG, FORMAT_VERSION,
};
use lowbit_formats::native::write::{SafetensorsWriter, StagedDir};
use lowbit_formats::native::{GroupFormat, GroupMatrix, QuantizationConfig, Storage, TensorSpec, METADATA_GGUF};
use lowbit_formats::safetensors::{CONFIG_FILE, SINGLE_FILE};
use lowbit_formats::source::ModelSource;
use lowbit_formats::{DType, FormatError, Result};

use crate::imatrix::Importance;
use crate::rtn::{quantize_tensor, RtnScheme};

/// How [`export`] stores the model's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeScheme {
    /// Round to nearest into a group-wise integer format.
    Rtn(RtnScheme),
    /// NF4 with double quantization, blocks of 64 (`crate::nf4`).
    Nf4,
}

impl NativeScheme {
    /// `int4-g128-sym`, `nf4`.
    pub fn name(&self) -> String {
        match self {
            NativeScheme::Rtn(s) => s.name(),
            NativeScheme::Nf4 => "nf4".into(),
        }
    }

    /// The storage of a quantized tensor of `shape`, or `None` when it stays unquantized.
    fn storage_for(&self, name: &str, shape: &[usize]) -> Option<Storage> {
        match self {
            NativeScheme::Rtn(s) => s.format_for(name, shape).map(Storage::group),
            NativeScheme::Nf4 => crate::nf4::quantizable(shape).then(Storage::nf4),
        }
    }

    /// `method`, `bits`, `group` and `sym` of the quantization config.
    fn summary(&self) -> (&'static str, u8, Option<usize>, bool) {
        match self {
            NativeScheme::Rtn(s) => ("rtn", s.bits, s.group, s.sym),
            NativeScheme::Nf4 => ("nf4", 4, Some(nf4::BLOCK), true),
        }
    }
}

/// Tensors already quantized by a calibrated method (GPTQ, AWQ) into the scheme's formats, written as they are,
/// and what the quantization config records about how they were made.
pub struct Prepared {
    /// `gptq`, ...: the config's `method`.
    pub method: String,
    pub tensors: BTreeMap<String, GroupMatrix>,
    /// Unquantized tensors the method changed (the norms and biases AWQ folds its scales into), written instead of
    /// the source's.
    pub values: BTreeMap<String, Vec<f32>>,
    /// Static activation steps of matrices' inputs (see `TensorSpec::act_scale`).
    pub act_scales: BTreeMap<String, f32>,
    /// The calibration data, the method's options, per-tensor figures.
    pub details: serde_json::Value,
}

/// Files of a Hugging Face directory that describe the model or its tokenizer, copied when present.
const HF_SIDE_FILES: [&str; 6] = [
    CONFIG_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// What an export wrote.
#[derive(Clone, Debug, Default)]
pub struct NativeSummary {
    /// Tensors per storage name (`int4-g128-sym`, `F32`, ...), in first-seen order.
    pub per_storage: Vec<(String, usize)>,
    /// Bytes of model.safetensors' tensor data.
    pub tensor_bytes: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FormatError + '_ {
    move |cause| FormatError::Io { path: path.to_path_buf(), cause }
}

/// Writes `source` quantized per `scheme` into the directory `out` (atomically: see `StagedDir`).
/// `progress(i, name)` is called as tensor `i` is quantized. With `importance`, the group formats' scales are
/// searched with each matrix's per-column weights (weighted RTN); every entry must name a matrix of the source.
pub fn export(
    source: &ModelSource,
    out: &Path,
    scheme: &NativeScheme,
    prepared: Option<&Prepared>,
    importance: Option<&Importance>,
    progress: &(dyn Fn(usize, &str) + Sync),
) -> Result<NativeSummary> {
    let imatrix_error = |e: crate::imatrix::ImatrixError| FormatError::Invalid(e.to_string());
    if let Some(m) = importance {
        let mut shapes = Vec::new();
        for name in source.tensor_names() {
            let shape = source.tensor(name)?.shape.clone();
            let n_mat = if shape.len() == 3 { shape[0] } else { 1 };
            shapes.push((name, shape.last().copied().unwrap_or(1), n_mat));
        }
        m.check_against(&shapes).map_err(imatrix_error)?;
    }
    let staged = StagedDir::new(out)?;
    let metadata = write_metadata(source, staged.path())?;
    let mut writer = SafetensorsWriter::new();
    let mut specs = Vec::new();
    let mut summary = NativeSummary::default();
    for (i, name) in source.tensor_names().into_iter().enumerate() {
        let t = source.tensor(name)?;
        let shape = t.shape.clone();
        let storage = match scheme.storage_for(name, &shape) {
            Some(Storage::Group { bits, group, sym }) => {
                let f = GroupFormat { bits, group, sym };
                let (rows, cols) = (shape[0], shape[1]);
                let (ng, row_bytes) = (f.n_groups(cols), f.row_bytes(cols));
                let mut parts = vec![
                    (codes_name(name), DType::U8, vec![rows, row_bytes]),
                    (scales_name(name), DType::F16, vec![rows, ng]),
                ];
                if !f.sym {
                    parts.push((zeros_name(name), DType::U8, vec![rows, ng]));
                }
                summary.tensor_bytes += (rows * (row_bytes + ng * if f.sym { 2 } else { 3 })) as u64;
                let ready = prepared.and_then(|p| p.tensors.get(name));
                if let Some(m) = ready.filter(|m| (m.format, m.rows, m.cols) != (f, rows, cols)) {
                    return Err(FormatError::Invalid(format!(
                        "tensor {name}: prepared as {} {}×{}, the scheme stores it as {} {rows}×{cols}",
                        m.format.name(),
                        m.rows,
                        m.cols,
                        f.name()
                    )));
                }
                writer.add(
                    parts,
                    Box::new(move |w: &mut dyn Write| {
                        progress(i, name);
                        let fresh;
                        let m = match ready {
                            Some(m) => m,
                            None => {
                                let (_, values) = source.tensor_f32(name)?;
                                let weights = match importance {
                                    Some(m) => m.weights(name, cols, 1).map_err(imatrix_error)?,
                                    None => None,
                                };
                                fresh = quantize_tensor(name, f, &values, rows, cols, weights.as_deref())?;
                                &fresh
                            }
                        };
                        let path = Path::new(SINGLE_FILE);
                        w.write_all(&m.codes).map_err(io(path))?;
                        w.write_all(&m.scales).map_err(io(path))?;
                        w.write_all(&m.zeros).map_err(io(path))
                    }),
                )?;
                Storage::group(f)
            }
            Some(storage @ Storage::Nf4 { .. }) => {
                let (rows, cols) = (shape[0], shape[1]);
                let blocks = rows * cols / nf4::BLOCK;
                let chunks = blocks.div_ceil(NESTED_BLOCK);
                summary.tensor_bytes += (blocks * (BLOCK_BYTES + 1) + 4 * chunks + 4) as u64;
                writer.add(
                    vec![
                        (codes_name(name), DType::U8, vec![rows, cols / 2]),
                        (absmax_name(name), DType::U8, vec![rows, cols / nf4::BLOCK]),
                        (nested_absmax_name(name), DType::F32, vec![chunks]),
                        (offset_name(name), DType::F32, vec![1]),
                    ],
                    Box::new(move |w: &mut dyn Write| {
                        progress(i, name);
                        let (_, values) = source.tensor_f32(name)?;
                        let m = crate::nf4::quantize_tensor(name, &values, rows, cols)?;
                        let path = Path::new(SINGLE_FILE);
                        for part in [&m.codes[..], &m.absmax, &m.nested_absmax, &m.offset] {
                            w.write_all(part).map_err(io(path))?;
                        }
                        Ok(())
                    }),
                )?;
                storage
            }
            Some(Storage::Plain { .. }) | None => {
                let dtype = if shape.len() >= 2 { DType::F16 } else { DType::F32 };
                let n: usize = shape.iter().product();
                let changed = prepared.and_then(|p| p.values.get(name));
                if changed.is_some_and(|v| v.len() != n) {
                    return Err(FormatError::Invalid(format!("tensor {name}: prepared values do not match {shape:?}")));
                }
                summary.tensor_bytes += (n * dtype.block_bytes()) as u64;
                writer.add(
                    vec![(name.to_string(), dtype, shape.clone())],
                    Box::new(move |w: &mut dyn Write| {
                        progress(i, name);
                        let values = match changed {
                            Some(v) => v.clone(),
                            None => source.tensor_f32(name)?.1,
                        };
                        let bytes = lowbit_formats::quantize::quantize(dtype, &values, values.len().max(1), None)
                            .map_err(|e| FormatError::Invalid(format!("tensor {name}: {e}")))?;
                        w.write_all(&bytes).map_err(io(Path::new(SINGLE_FILE)))
                    }),
                )?;
                Storage::Plain { dtype: dtype.name().to_string() }
            }
        };
        let label = storage.name();
        match summary.per_storage.iter_mut().find(|(s, _)| *s == label) {
            Some((_, c)) => *c += 1,
            None => summary.per_storage.push((label, 1)),
        }
        let act_scale =
            prepared.and_then(|p| p.act_scales.get(name).copied()).filter(|_| matches!(storage, Storage::Group { .. }));
        specs.push(TensorSpec { name: name.to_string(), shape, storage, act_scale });
    }
    writer.write(&staged.path().join(SINGLE_FILE))?;
    let (method, bits, group, sym) = scheme.summary();
    let method = prepared.map_or(method, |p| p.method.as_str());
    let qconfig = QuantizationConfig {
        format: FORMAT_TAG.to_string(),
        format_version: FORMAT_VERSION,
        tool_version: format!("lowbit {}", env!("CARGO_PKG_VERSION")),
        method: method.into(),
        bits,
        group,
        sym,
        source: source.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        metadata,
        calibration: prepared.map(|p| p.details.clone()),
        tensors: specs,
    };
    let qpath = staged.path().join(lowbit_formats::native::QUANT_CONFIG);
    std::fs::write(&qpath, qconfig.to_json()).map_err(io(&qpath))?;
    staged.commit()?;
    Ok(summary)
}

/// Writes the source's metadata into `dir`; returns the name the quantization config records.
fn write_metadata(source: &ModelSource, dir: &Path) -> Result<String> {
    let gguf = match source {
        ModelSource::Gguf(f) => Some(f),
        ModelSource::Native(m) => m.metadata_gguf(),
        _ => None,
    };
    if let Some(gguf) = gguf {
        let mut w = GgufWriter::new();
        // The file type describes the source's tensors, which metadata.gguf does not hold.
        w.copy_metadata_from(gguf, &["general.file_type", "general.quantization_version"])?;
        w.write(dir.join(METADATA_GGUF))?;
        return Ok(METADATA_GGUF.to_string());
    }
    let from = match source {
        ModelSource::Hf(m) => m.dir(),
        ModelSource::Native(m) => m.dir(),
        _ => {
            return Err(FormatError::Unsupported {
                path: source.path().to_path_buf(),
                what: "source without tensors: nothing to quantize".into(),
            })
        }
    };
    for name in HF_SIDE_FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, dir.join(name)).map_err(io(&src))?;
        }
    }
    Ok(CONFIG_FILE.to_string())
}
