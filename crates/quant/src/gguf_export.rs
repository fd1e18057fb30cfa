//! Re-quantizing a GGUF model as llama-quantize does, one tensor at a time.
//!
//! Each tensor gets the type `tensor_types::choose_types` picks for the file type (llama.cpp's mixes, or one type
//! for every matrix with `pure`, llama-quantize's `--pure`), and the bytes lowbit's reference quantizers write, which
//! are llama.cpp's. The file is laid out as llama-quantize lays it out (metadata in the source's order with
//! `general.quantization_version` and `general.file_type` moved last, tensors in llama.cpp's loader order), so the
//! whole file is llama-quantize's byte for byte (tests/llamacpp_quantize.rs). A tensor already in its chosen type is
//! copied, not re-quantized, as llama-quantize copies it. With an importance matrix (`--imatrix`), each matrix it covers
//! is quantized with its per-column weights, the mixes take llama.cpp's imatrix-dependent choices, and the file
//! records the imatrix in llama-quantize's `quantize.imatrix.*` keys. Tensors are read, quantized and
//! written one after the other, so memory holds one tensor at a time; the file appears under its name only when
//! complete.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use lowbit_formats::dequant::dequantize;
use lowbit_formats::gguf::{GgufFile, TensorInfo, Value};
use lowbit_formats::gguf_write::{GgufWriter, TensorData, TensorSink};
use lowbit_formats::quantize::quantize;
use lowbit_formats::{DType, FormatError};

use crate::error::QuantError;
use crate::file_type::FileType;
use crate::imatrix::Importance;
use crate::tensor_types::{choose_types, loader_order, ModelFacts, TensorDesc};

/// Tensors and bytes written in one storage type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeCount {
    pub dtype: DType,
    pub tensors: usize,
    pub bytes: u64,
}

/// What a conversion wrote.
#[derive(Clone, Debug, Default)]
pub struct ExportSummary {
    pub tensors: usize,
    pub bytes: u64,
    /// Per storage type, in first-seen order.
    pub per_type: Vec<TypeCount>,
}

/// An importance matrix as an export uses it.
pub struct ImatrixInput<'a> {
    pub matrix: &'a Importance,
    /// The file's name as the user gave it, recorded in `quantize.imatrix.file`.
    pub file: &'a str,
}

/// A tensor quantized before the export (by GPTQ): its storage type and bytes, written as they are.
#[derive(Clone, Debug)]
pub struct Prequantized {
    pub dtype: DType,
    pub bytes: Vec<u8>,
}

/// Bytes a tensor copied unchanged is written in, releasing each slice's mapped pages after it.
const COPY_SLICE: usize = 64 << 20;

/// llama-quantize's record of the imatrix, set after `general.file_type` in this order.
const IMATRIX_KEYS: [&str; 4] = [
    "quantize.imatrix.file",
    "quantize.imatrix.dataset",
    "quantize.imatrix.entries_count",
    "quantize.imatrix.chunks_count",
];

/// The storage type of each tensor of `source` (in its order) when written as `ftype`, with or without an imatrix.
pub fn planned_types(
    source: &GgufFile,
    ftype: FileType,
    pure: bool,
    has_imatrix: bool,
) -> Result<Vec<DType>, QuantError> {
    let facts = ModelFacts::from_gguf(source)?;
    let descs: Vec<TensorDesc> =
        source.tensors().iter().map(|t| TensorDesc { name: &t.name, ne: &t.dims, dtype: t.dtype }).collect();
    choose_types(&facts, &descs, ftype, pure, has_imatrix)
}

/// llama-quantize's metadata strings hold at most 127 bytes.
fn truncated(s: &str) -> String {
    let mut end = s.len().min(127);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Writes `source` converted to `ftype` to `out`, atomically: on any error nothing is left at `out` (a previous
/// file there stays). `progress(i, name)` is called as the `i`-th tensor written is converted.
///
/// Errors name the tensor: values its type cannot hold (NaN, infinity, beyond the type's range), unreadable source
/// data, a tensor the rules cannot place, an imatrix entry for no tensor of `source` or of another column count;
/// and the file's own I/O errors.
pub fn export(
    source: &GgufFile,
    out: &Path,
    ftype: FileType,
    pure: bool,
    imatrix: Option<&ImatrixInput>,
    progress: &(dyn Fn(usize, &str) + Sync),
) -> Result<ExportSummary, QuantError> {
    export_prequantized(source, out, ftype, pure, imatrix, &BTreeMap::new(), progress)
}

/// [`export`], with the tensors of `prequantized` (by name) written as they are. They were fitted with importance
/// (GPTQ's Hessian), so the mix takes llama.cpp's imatrix-dependent choices when there are any, and each must have
/// the type the mix gives it; the other tensors are quantized as `export` quantizes them.
pub fn export_prequantized(
    source: &GgufFile,
    out: &Path,
    ftype: FileType,
    pure: bool,
    imatrix: Option<&ImatrixInput>,
    prequantized: &BTreeMap<String, Prequantized>,
    progress: &(dyn Fn(usize, &str) + Sync),
) -> Result<ExportSummary, QuantError> {
    let importance = imatrix.map(|i| i.matrix).filter(|m| !m.entries.is_empty());
    if let Some(m) = importance {
        let shapes: Vec<(&str, usize, usize)> = source.tensors().iter().map(|t| (&*t.name, cols(t), mats(t))).collect();
        m.check_against(&shapes)?;
    }
    let types = planned_types(source, ftype, pure, importance.is_some() || !prequantized.is_empty())?;
    check_prequantized(source, &types, prequantized)?;
    // The writer's producers can only return a FormatError; the typed error waits here.
    let failure: RefCell<Option<QuantError>> = RefCell::new(None);
    let mut w = GgufWriter::new();
    let mut replaced = vec!["general.file_type", "general.quantization_version"];
    if importance.is_some() {
        replaced.extend(IMATRIX_KEYS);
    }
    w.copy_metadata_from(source, &replaced)?;
    // ggml's GGML_QNT_VERSION; gguf_set_val_* appends a key after removing it, hence this order.
    w.metadata("general.quantization_version", Value::U32(2))?;
    w.metadata("general.file_type", Value::U32(ftype.id()))?;
    if let (Some(m), Some(input)) = (importance, imatrix) {
        let [file, dataset, entries, chunks] = IMATRIX_KEYS;
        w.metadata(file, Value::String(truncated(input.file)))?;
        if let Some(d) = m.datasets.first() {
            w.metadata(dataset, Value::String(truncated(d)))?;
        }
        w.metadata(entries, Value::U32(m.entries.len() as u32))?;
        if m.chunk_count > 0 {
            w.metadata(chunks, Value::U32(m.chunk_count))?;
        }
    }
    let tensors = source.tensors();
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| loader_order(&tensors[a].name, &tensors[b].name));
    let mut summary = ExportSummary::default();
    for (i, &k) in order.iter().enumerate() {
        let (t, dtype) = (&tensors[k], types[k]);
        let shape = t.shape();
        let raw = source.tensor_data(t);
        let data = if let Some(p) = prequantized.get(&t.name) {
            TensorData::Borrowed(&p.bytes)
        } else if dtype == t.dtype {
            // Copied in slices whose mapped pages then go, so memory does not hold every copied tensor.
            TensorData::deferred(move |sink| {
                for part in raw.chunks(COPY_SLICE) {
                    sink.write(part)?;
                    source.release(part);
                }
                Ok(())
            })
        } else {
            let failure = &failure;
            TensorData::deferred(move |sink| {
                progress(i, &t.name);
                convert(source, t, raw, dtype, importance, sink).map_err(|e| {
                    let message = FormatError::Invalid(e.to_string());
                    *failure.borrow_mut() = Some(e);
                    message
                })
            })
        };
        w.tensor(&t.name, dtype, &shape, data)?;
        let bytes = dtype.storage_bytes(t.n_elements)?;
        summary.tensors += 1;
        summary.bytes += bytes;
        match summary.per_type.iter_mut().find(|c| c.dtype == dtype) {
            Some(c) => (c.tensors, c.bytes) = (c.tensors + 1, c.bytes + bytes),
            None => summary.per_type.push(TypeCount { dtype, tensors: 1, bytes }),
        }
    }
    match w.write(out) {
        Ok(()) => Ok(summary),
        Err(e) => Err(failure.take().unwrap_or(QuantError::Format(e))),
    }
}

/// Checks that every prequantized tensor is a tensor of `source` with the planned type and its size in it.
fn check_prequantized(
    source: &GgufFile,
    types: &[DType],
    prequantized: &BTreeMap<String, Prequantized>,
) -> Result<(), QuantError> {
    for (name, p) in prequantized {
        let what = |what: String| QuantError::Tensor { tensor: name.clone(), what };
        let Some(k) = source.tensors().iter().position(|t| &t.name == name) else {
            return Err(what("quantized beforehand, but the model has no such tensor".into()));
        };
        if p.dtype != types[k] {
            return Err(what(format!("quantized beforehand as {}, but the mix gives it {}", p.dtype, types[k])));
        }
        let want = p.dtype.storage_bytes(source.tensors()[k].n_elements)?;
        if p.bytes.len() as u64 != want {
            return Err(what(format!("{} bytes quantized beforehand, {want} expected", p.bytes.len())));
        }
    }
    Ok(())
}

/// Columns of a tensor (its row length).
fn cols(t: &TensorInfo) -> usize {
    t.dims.first().map_or(1, |&n| n as usize)
}

/// Matrices of a tensor as an imatrix counts them: experts (`ne[2]`) of a 3-D tensor.
fn mats(t: &TensorInfo) -> usize {
    t.dims.get(2).map_or(1, |&n| n as usize)
}

/// Dequantizes one source tensor and writes it quantized as `dtype`, each matrix (expert) with its importance
/// weights when `importance` has them.
fn convert(
    source: &GgufFile,
    t: &TensorInfo,
    raw: &[u8],
    dtype: DType,
    importance: Option<&Importance>,
    sink: &mut TensorSink,
) -> Result<(), QuantError> {
    let tensor = || t.name.clone();
    let values = dequantize(t.dtype, raw, t.n_elements as usize)
        .map_err(|e| QuantError::Tensor { tensor: tensor(), what: e.to_string() })?;
    source.release(raw);
    let (row_len, n_mat) = (cols(t), mats(t));
    let weights = match importance {
        Some(m) => m.weights(&t.name, row_len, n_mat)?,
        None => None,
    };
    let quantized = |values: &[f32], w: Option<&[f32]>| {
        quantize(dtype, values, row_len, w).map_err(|cause| QuantError::Quantize { tensor: tensor(), dtype, cause })
    };
    match weights {
        None => sink.write(&quantized(&values, None)?)?,
        Some(w) => {
            for (v, w) in values.chunks_exact(values.len() / n_mat).zip(w.chunks_exact(row_len)) {
                sink.write(&quantized(v, Some(w))?)?;
            }
        }
    }
    Ok(())
}
