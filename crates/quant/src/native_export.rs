//! Writing a model as a lowbit native directory (`lowbit_formats::native`), one tensor at a time.
//!
//! Any source works (GGUF, Hugging Face, a native directory): tensors are read through
//! `ModelSource::tensor_f32`, quantized per [`NativeScheme`], and streamed into model.safetensors, so
//! memory holds one tensor's values and output at a time. The source's metadata travels with the
//! tensors in its own format: a GGUF source's key-value metadata as a tensor-less metadata.gguf, a
//! Hugging Face source's config.json and tokenizer files as copies.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use lowbit_formats::gguf_write::GgufWriter;
use lowbit_formats::native::nf4::{self, BLOCK_BYTES, NESTED_BLOCK};
use lowbit_formats::native::qconfig::{
    absmax_name, channel_scale_name, codes_name, lut_name, nested_absmax_name, offset_name, scales_name, zeros_name,
    FORMAT_TAG, FORMAT_VERSION,
};
use lowbit_formats::native::write::{SafetensorsWriter, StagedDir};
use lowbit_formats::native::{
    trits, GroupFormat, GroupMatrix, PaletteFormat, PaletteMatrix, QuantizationConfig, Storage, TensorSpec,
    METADATA_GGUF,
};
use lowbit_formats::safetensors::{CONFIG_FILE, SINGLE_FILE};
use lowbit_formats::source::ModelSource;
use lowbit_formats::{DType, FormatError, Result};

use lowbit_formats::experts::{is_mxfp4_scales, ExpertStack};

use crate::imatrix::{Importance, MIN_EXPERT_TOKENS};
use crate::profile::{Profile, TensorClass};
use crate::rtn::{quantize_tensor, RtnScheme};
use crate::ternary::{TernaryRule, TernaryScheme};

/// How [`export`] stores the model's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeScheme {
    /// Round to nearest into a group-wise integer format.
    Rtn(RtnScheme),
    /// NF4 with double quantization, blocks of 64 (`crate::nf4`).
    Nf4,
    /// Look-up-table palettes by weighted k-means (`crate::palette`), `seed` fixing its draws.
    Palette { format: PaletteFormat, seed: u64 },
    /// A device profile's rule for each class of tensor (`crate::profile`).
    Profile { profile: Profile, seed: u64 },
    /// Ternary matrices (`crate::ternary`), the embedding at 8 bits.
    Ternary(TernaryScheme),
}

impl NativeScheme {
    /// `int4-g128-sym`, `nf4`.
    pub fn name(&self) -> String {
        match self {
            NativeScheme::Rtn(s) => s.name(),
            NativeScheme::Nf4 => "nf4".into(),
            NativeScheme::Palette { format, .. } => format.name(),
            NativeScheme::Profile { profile, .. } => profile.name().into(),
            NativeScheme::Ternary(t) => t.name(),
        }
    }

    /// The scheme that stores tensor `name`: the profile's rule for it, or this one.
    fn rule_for(&self, name: &str) -> NativeScheme {
        match *self {
            NativeScheme::Profile { profile, seed } => profile.scheme(TensorClass::of(name), seed),
            other => other,
        }
    }

    /// The storage of a quantized tensor of `shape`, or `None` when it stays unquantized.
    fn storage_for(&self, name: &str, shape: &[usize]) -> Option<Storage> {
        match self {
            NativeScheme::Profile { .. } => self.rule_for(name).storage_for(name, shape),
            NativeScheme::Rtn(s) => s.format_for(name, shape).map(Storage::group),
            NativeScheme::Ternary(t) => t.storage_for(name, shape),
            NativeScheme::Nf4 => crate::nf4::quantizable(name, shape).then(Storage::nf4),
            // The matrices round to nearest quantizes (routers and biases stay wide). A stack's palettes never span
            // two experts: a group of rows that does not divide an expert's is one palette per expert.
            NativeScheme::Palette { format, .. } => {
                crate::rtn::quantized_cols(name, shape)?;
                let group_rows = match shape[..] {
                    [_, rows, _] => Some(format.group_rows.filter(|g| rows.is_multiple_of(*g)).unwrap_or(rows)),
                    _ => format.group_rows,
                };
                Some(Storage::palette(PaletteFormat { group_rows, ..*format }))
            }
        }
    }

    /// Bytes the tensor `name` of logical `shape` takes in a directory written with this scheme (all its parts).
    pub fn stored_bytes(&self, name: &str, shape: &[usize]) -> u64 {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        match self.storage_for(name, shape) {
            Some(Storage::Group { bits, group, sym }) => {
                let f = GroupFormat { bits, group, sym };
                let (rows, cols) = (n / shape[shape.len() - 1] as u64, shape[shape.len() - 1]);
                rows * (f.row_bytes(cols) + f.n_groups(cols) * if sym { 2 } else { 3 }) as u64
            }
            Some(Storage::Trits { group }) => {
                let (rows, cols) = (shape[0], shape[1]);
                (rows * (trits::row_bytes(cols) + 2 * cols.div_ceil(group))) as u64
            }
            Some(Storage::Nf4 { .. }) => {
                // A stack's experts are quantized one by one, each with its own chunks and offset.
                let experts = if shape.len() == 3 { shape[0] as u64 } else { 1 };
                let blocks = n / experts.max(1) / nf4::BLOCK as u64;
                experts * (blocks * (BLOCK_BYTES as u64 + 1) + 4 * blocks.div_ceil(NESTED_BLOCK as u64) + 4)
            }
            Some(Storage::Palette { bits, group_rows, channel_scale }) => {
                let f = PaletteFormat { bits, group_rows, channel_scale };
                let (matrices, rows, cols) = stack_dims(shape);
                let palettes = (f.n_palettes(rows) * f.entries()) as u64;
                let matrix = rows as u64 * f.row_bytes(cols) as u64
                    + 2 * palettes
                    + if channel_scale { 2 * rows as u64 } else { 0 };
                matrices as u64 * matrix
            }
            Some(Storage::Plain { .. }) | None => n * plain_dtype(name, shape).block_bytes() as u64,
        }
    }

    /// Bytes a model run from a directory written with this scheme holds for tensor `name` beyond the file's
    /// mapped bytes: the kernels' per-group parameters (an f32 scale and min, 8 bytes, per group or NF4 block;
    /// per row of a palettized matrix, plus its 16-byte tables; `lowbit_model::GroupLinear`).
    pub fn runtime_bytes(&self, name: &str, shape: &[usize]) -> u64 {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        let cols = shape.last().copied().unwrap_or(1);
        let rows = n / cols.max(1) as u64;
        match self.storage_for(name, shape) {
            Some(Storage::Group { bits, group, sym }) => {
                rows * GroupFormat { bits, group, sym }.n_groups(cols) as u64 * 8
            }
            // Unpacked at load into 2-bit codes (`lowbit_model::GroupLinear::from_trits`), held beside the file.
            Some(Storage::Trits { group }) => {
                let f = GroupFormat { bits: 2, group, sym: true };
                rows * (f.n_groups(cols) as u64 * 8 + f.row_bytes(cols) as u64)
            }
            Some(Storage::Nf4 { .. }) => n / nf4::BLOCK as u64 * 8,
            Some(Storage::Palette { bits, group_rows, channel_scale }) => {
                let (matrices, rows, _) = stack_dims(shape);
                let palettes = PaletteFormat { bits, group_rows, channel_scale }.n_palettes(rows);
                matrices as u64 * (rows as u64 * 8 + palettes as u64 * 16)
            }
            Some(Storage::Plain { .. }) | None => 0,
        }
    }

    /// `method`, `bits`, `group` and `sym` of the quantization config.
    fn summary(&self) -> (&'static str, u8, Option<usize>, bool) {
        match self {
            NativeScheme::Rtn(s) => ("rtn", s.bits, s.group, s.sym),
            NativeScheme::Nf4 => ("nf4", 4, Some(nf4::BLOCK), true),
            NativeScheme::Palette { format, .. } => ("palette", format.bits, format.group_rows, true),
            NativeScheme::Profile { profile, .. } => {
                let (method, bits) = profile.summary();
                (method, bits, None, true)
            }
            NativeScheme::Ternary(t) => match t.rule {
                TernaryRule::Absmean => ("absmean", 2, None, true),
                TernaryRule::Exact => ("ternary", 2, Some(t.group), true),
            },
        }
    }
}

/// (matrices, rows, cols) of a matrix or a stack of them.
fn stack_dims(shape: &[usize]) -> (usize, usize, usize) {
    match shape[..] {
        [experts, rows, cols] => (experts, rows, cols),
        _ => (1, shape[0], shape[1]),
    }
}

/// How a tensor the scheme leaves unquantized is stored: matrices F16, vectors and biases (also 2-D ones, a row
/// per expert) F32, as llama.cpp keeps them.
fn plain_dtype(name: &str, shape: &[usize]) -> DType {
    if shape.len() >= 2 && !name.ends_with(".bias") {
        DType::F16
    } else {
        DType::F32
    }
}

/// Tensors already quantized by a calibrated method (GPTQ, AWQ) into the scheme's formats, written as they are,
/// and what the quantization config records about how they were made.
pub struct Prepared {
    /// `gptq`, ...: the config's `method`.
    pub method: String,
    pub tensors: BTreeMap<String, GroupMatrix>,
    /// Palettized tensors (GPTQ onto palettes), written as they are.
    pub palettes: BTreeMap<String, PaletteMatrix>,
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
    let mut coverage = serde_json::Map::new();
    if let Some(m) = importance {
        let mut shapes = Vec::new();
        for name in source.tensor_names().into_iter().filter(|n| !is_mxfp4_scales(source, n)) {
            let reader = MatrixReader::new(source, name)?;
            let shape = reader.shape();
            let n_mat = if reader.is_stack() { shape[0] } else { 1 };
            shapes.push((reader.name().to_string(), shape.last().copied().unwrap_or(1), n_mat));
            if let (true, Some(e)) = (reader.is_stack(), m.entries.get(reader.name())) {
                let thin: Vec<usize> = (0..e.counts.len()).filter(|&i| e.counts[i] < MIN_EXPERT_TOKENS).collect();
                coverage.insert(reader.name().into(), serde_json::json!({ "tokens": e.counts, "unweighted": thin }));
            }
        }
        let shapes: Vec<(&str, usize, usize)> = shapes.iter().map(|(n, c, m)| (n.as_str(), *c, *m)).collect();
        m.check_against(&shapes).map_err(imatrix_error)?;
    }
    let staged = StagedDir::new(out)?;
    let metadata = write_metadata(source, staged.path())?;
    let mut writer = SafetensorsWriter::new();
    let mut specs = Vec::new();
    let mut summary = NativeSummary::default();
    for (i, source_name) in source.tensor_names().into_iter().enumerate() {
        if is_mxfp4_scales(source, source_name) {
            continue;
        }
        let reader = MatrixReader::new(source, source_name)?;
        let (name, shape) = (reader.name().to_string(), reader.shape());
        let spec_name = name.clone();
        let storage = match scheme.storage_for(&name, &shape) {
            Some(storage @ (Storage::Group { .. } | Storage::Trits { .. })) => {
                // Trits are ternary int2 codes packed five per byte as they are written.
                let (f, packed) = match storage {
                    Storage::Group { bits, group, sym } => (GroupFormat { bits, group, sym }, false),
                    Storage::Trits { group } => (GroupFormat { bits: 2, group, sym: true }, true),
                    _ => unreachable!("matched above"),
                };
                let (rows, cols) = (shape[..shape.len() - 1].iter().product::<usize>(), shape[shape.len() - 1]);
                let ng = f.n_groups(cols);
                let row_bytes = if packed { trits::row_bytes(cols) } else { f.row_bytes(cols) };
                let mut parts = vec![
                    (codes_name(&name), DType::U8, vec![rows, row_bytes]),
                    (scales_name(&name), DType::F16, vec![rows, ng]),
                ];
                if !f.sym {
                    parts.push((zeros_name(&name), DType::U8, vec![rows, ng]));
                }
                summary.tensor_bytes += scheme.stored_bytes(&name, &shape);
                let ternary = match scheme.rule_for(&name) {
                    NativeScheme::Ternary(t) if t.is_ternary(&name, &shape) => Some(t.rule),
                    _ => None,
                };
                let ready = prepared.and_then(|p| p.tensors.get(&name));
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
                        progress(i, &name);
                        let path = Path::new(SINGLE_FILE);
                        if let Some(m) = ready {
                            w.write_all(&written_codes(m, packed)?).map_err(io(path))?;
                            w.write_all(&m.scales).map_err(io(path))?;
                            return w.write_all(&m.zeros).map_err(io(path));
                        }
                        // One set of column weights for a matrix; one per expert of a stack (none for an expert
                        // with too few routed tokens).
                        let weights: Vec<Option<Vec<f32>>> = match (importance, reader.is_stack()) {
                            (Some(m), true) => m
                                .expert_weights(&name, cols, reader.parts())
                                .map_err(imatrix_error)?
                                .unwrap_or_default(),
                            (Some(m), false) => vec![m.weights(&name, cols, 1).map_err(imatrix_error)?],
                            (None, _) => Vec::new(),
                        };
                        // Absmean's one scale is the mean |w| of the whole tensor: a first pass finds it.
                        let gamma = match ternary {
                            Some(TernaryRule::Absmean) => {
                                let (mut sum, mut n) = (0f64, 0usize);
                                for p in 0..reader.parts() {
                                    let values = reader.part(p)?.1;
                                    sum += values.iter().map(|&v| f64::from(v.abs())).sum::<f64>();
                                    n += values.len();
                                }
                                Some(half::f16::from_f64(sum / n.max(1) as f64))
                            }
                            _ => None,
                        };
                        // Part by part (an expert, or a slice of rows): codes go out as they are made, the
                        // small scales and zero points follow them.
                        let (mut scales, mut zeros) = (Vec::new(), Vec::new());
                        for p in 0..reader.parts() {
                            let (part_rows, values) = reader.part(p)?;
                            let part_weights =
                                weights.get(if reader.is_stack() { p } else { 0 }).and_then(|w| w.as_deref());
                            let what = format!("{name} ({})", reader.part_label(p));
                            let m = match (ternary, gamma) {
                                (Some(_), Some(g)) => {
                                    crate::ternary::quantize_absmean(f, &values, part_rows, cols, g)?.0
                                }
                                (Some(_), None) => {
                                    crate::ternary::quantize_exact(f, &values, part_rows, cols, part_weights)?.0
                                }
                                (None, _) => quantize_tensor(&what, f, &values, part_rows, cols, part_weights)?,
                            };
                            w.write_all(&written_codes(&m, packed)?).map_err(io(path))?;
                            scales.extend_from_slice(&m.scales);
                            zeros.extend_from_slice(&m.zeros);
                        }
                        w.write_all(&scales).map_err(io(path))?;
                        w.write_all(&zeros).map_err(io(path))
                    }),
                )?;
                storage
            }
            Some(storage @ Storage::Nf4 { .. }) => {
                // A matrix is quantized whole (its offset is the mean of all its block scales); a stack expert by
                // expert, each as a matrix of its own (`lowbit_formats::native::nf4`).
                let (experts, rows, cols) = stack_dims(&shape);
                let chunks = (rows * cols / nf4::BLOCK).div_ceil(NESTED_BLOCK);
                let (nested_shape, offset_shape) =
                    if reader.is_stack() { (vec![experts, chunks], vec![experts]) } else { (vec![chunks], vec![1]) };
                summary.tensor_bytes += scheme.stored_bytes(&name, &shape);
                writer.add(
                    vec![
                        (codes_name(&name), DType::U8, vec![experts * rows, cols / 2]),
                        (absmax_name(&name), DType::U8, vec![experts * rows, cols / nf4::BLOCK]),
                        (nested_absmax_name(&name), DType::F32, nested_shape),
                        (offset_name(&name), DType::F32, offset_shape),
                    ],
                    Box::new(move |w: &mut dyn Write| {
                        progress(i, &name);
                        let path = Path::new(SINGLE_FILE);
                        // Codes go out part by part (an expert, or a slice of a matrix's rows); a matrix's double
                        // quantization needs all its block maxima (one f32 per 64 weights), so the small scales
                        // follow at the end.
                        let matrices: Vec<Vec<usize>> = match reader.is_stack() {
                            true => (0..experts).map(|e| vec![e]).collect(),
                            false => vec![(0..reader.parts()).collect()],
                        };
                        let (mut absmax, mut nested, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
                        for parts in matrices {
                            let mut maxima = Vec::new();
                            for p in parts {
                                let (part_rows, values) = reader.part(p)?;
                                let what = format!("{name} ({})", reader.part_label(p));
                                let (codes, a) = crate::nf4::encode_rows(&what, &values, part_rows, cols)?;
                                w.write_all(&codes).map_err(io(path))?;
                                maxima.extend_from_slice(&a);
                            }
                            let (q, chunks, offset) = nf4::double_quantize(&maxima);
                            absmax.extend_from_slice(&q);
                            nested.extend_from_slice(&chunks);
                            offsets.extend_from_slice(&offset);
                        }
                        for part in [&absmax, &nested, &offsets] {
                            w.write_all(part).map_err(io(path))?;
                        }
                        Ok(())
                    }),
                )?;
                storage
            }
            Some(storage @ Storage::Palette { bits, group_rows, channel_scale }) => {
                let NativeScheme::Palette { seed, .. } = scheme.rule_for(&name) else {
                    unreachable!("palette storage, other scheme")
                };
                let f = PaletteFormat { bits, group_rows, channel_scale };
                let (matrices, rows, cols) = stack_dims(&shape);
                let mut parts = vec![
                    (codes_name(&name), DType::U8, vec![matrices * rows, f.row_bytes(cols)]),
                    (lut_name(&name), DType::F16, vec![matrices * f.n_palettes(rows), f.entries()]),
                ];
                if channel_scale {
                    parts.push((channel_scale_name(&name), DType::F16, vec![matrices * rows]));
                }
                summary.tensor_bytes += scheme.stored_bytes(&name, &shape);
                let ready = prepared.and_then(|p| p.palettes.get(&name));
                if let Some(m) = ready.filter(|m| (m.format, m.rows, m.cols) != (f, matrices * rows, cols)) {
                    return Err(FormatError::Invalid(format!(
                        "tensor {name}: prepared as {} {}×{}, the scheme stores it as {}",
                        m.format.name(),
                        m.rows,
                        m.cols,
                        f.name()
                    )));
                }
                writer.add(
                    parts,
                    Box::new(move |w: &mut dyn Write| {
                        progress(i, &name);
                        let path = Path::new(SINGLE_FILE);
                        if let Some(m) = ready {
                            for part in [&m.codes, &m.lut, &m.scales] {
                                w.write_all(part).map_err(io(path))?;
                            }
                            return Ok(());
                        }
                        let palettize = |what: &str, values: &[f32], rows: usize, weights: Option<&[f32]>, first| {
                            crate::palette::palettize_part(f, values, rows, cols, weights, seed, first)
                                .map_err(|e| FormatError::Invalid(format!("tensor {what}: {e}")))
                        };
                        // A matrix streams in slices of rows when no palette spans two slices; one palette per
                        // tensor (or per group of rows that does not divide a slice) is clustered whole.
                        let per = f.group_rows.filter(|g| SLICE_ROWS.is_multiple_of(*g));
                        if let (false, None) = (reader.is_stack(), per) {
                            let weights =
                                importance.map(|m| m.weights(&name, cols, 1)).transpose().map_err(imatrix_error)?;
                            let (_, values) = source.tensor_f32(&name)?;
                            let m = palettize(&name, &values, rows, weights.flatten().as_deref(), 0)?;
                            for part in [&m.codes, &m.lut, &m.scales] {
                                w.write_all(part).map_err(io(path))?;
                            }
                            return Ok(());
                        }
                        if let (false, Some(per)) = (reader.is_stack(), per) {
                            let weights =
                                importance.map(|m| m.weights(&name, cols, 1)).transpose().map_err(imatrix_error)?;
                            let weights = weights.flatten();
                            let (mut luts, mut scales, mut row0) = (Vec::new(), Vec::new(), 0);
                            for p in 0..reader.parts() {
                                let (part_rows, values) = reader.part(p)?;
                                let what = format!("{name} ({})", reader.part_label(p));
                                let m = palettize(&what, &values, part_rows, weights.as_deref(), row0 / per)?;
                                w.write_all(&m.codes).map_err(io(path))?;
                                luts.extend_from_slice(&m.lut);
                                scales.extend_from_slice(&m.scales);
                                row0 += part_rows;
                            }
                            w.write_all(&luts).map_err(io(path))?;
                            return w.write_all(&scales).map_err(io(path));
                        }
                        // A stack expert by expert: indices go out as they are made, palettes and scales follow.
                        let weights = match importance {
                            Some(m) => {
                                m.expert_weights(&name, cols, matrices).map_err(imatrix_error)?.unwrap_or_default()
                            }
                            None => Vec::new(),
                        };
                        let (mut luts, mut scales) = (Vec::new(), Vec::new());
                        for e in 0..matrices {
                            let (_, values) = reader.part(e)?;
                            let what = format!("{name} ({})", reader.part_label(e));
                            let m = palettize(&what, &values, rows, weights.get(e).and_then(|w| w.as_deref()), 0)?;
                            w.write_all(&m.codes).map_err(io(path))?;
                            luts.extend_from_slice(&m.lut);
                            scales.extend_from_slice(&m.scales);
                        }
                        w.write_all(&luts).map_err(io(path))?;
                        w.write_all(&scales).map_err(io(path))
                    }),
                )?;
                storage
            }
            Some(Storage::Plain { .. }) | None => {
                let dtype = plain_dtype(&name, &shape);
                let n: usize = shape.iter().product();
                let changed = prepared.and_then(|p| p.values.get(&name));
                if changed.is_some_and(|v| v.len() != n) {
                    return Err(FormatError::Invalid(format!("tensor {name}: prepared values do not match {shape:?}")));
                }
                summary.tensor_bytes += scheme.stored_bytes(&name, &shape);
                writer.add(
                    vec![(name.to_string(), dtype, shape.clone())],
                    Box::new(move |w: &mut dyn Write| {
                        progress(i, &name);
                        let to_bytes = |values: &[f32]| {
                            lowbit_formats::quantize::quantize(dtype, values, values.len().max(1), None)
                                .map_err(|e| FormatError::Invalid(format!("tensor {name}: {e}")))
                        };
                        if let Some(v) = changed {
                            return w.write_all(&to_bytes(v)?).map_err(io(Path::new(SINGLE_FILE)));
                        }
                        for p in 0..reader.parts() {
                            w.write_all(&to_bytes(&reader.part(p)?.1)?).map_err(io(Path::new(SINGLE_FILE)))?;
                        }
                        Ok(())
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
        let act_scale = prepared
            .and_then(|p| p.act_scales.get(&spec_name).copied())
            .filter(|_| matches!(storage, Storage::Group { .. }));
        specs.push(TensorSpec { name: spec_name, shape: shape.clone(), storage, act_scale });
    }
    writer.write(&staged.path().join(SINGLE_FILE))?;
    let (method, bits, group, sym) = scheme.summary();
    let method = prepared.map_or(method, |p| p.method.as_str());
    let qconfig = QuantizationConfig {
        format: FORMAT_TAG.to_string(),
        format_version: FORMAT_VERSION,
        tool_version: format!("lowbit {}", env!("CARGO_PKG_VERSION")),
        method: method.into(),
        profile: match scheme {
            NativeScheme::Profile { profile, .. } => Some(profile.name().into()),
            _ => None,
        },
        bits,
        group,
        sym,
        source: source.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        metadata,
        calibration: match (prepared.map(|p| p.details.clone()), coverage.is_empty()) {
            (details, true) => details,
            // Importance-weighted experts: how many calibration tokens each was routed, and which were too few.
            (details, false) => {
                let mut d = details.unwrap_or_else(|| serde_json::json!({}));
                d["expert_coverage"] = serde_json::json!({
                    "rule": format!(
                        "an expert routed fewer than {MIN_EXPERT_TOKENS} calibration tokens is rounded unweighted"
                    ),
                    "tensors": coverage,
                });
                Some(d)
            }
        },
        tensors: specs,
    };
    let qpath = staged.path().join(lowbit_formats::native::QUANT_CONFIG);
    std::fs::write(&qpath, qconfig.to_json()).map_err(io(&qpath))?;
    staged.commit()?;
    Ok(summary)
}

/// A group matrix's codes as written: as they are, or packed five trits per byte.
fn written_codes(m: &GroupMatrix, packed: bool) -> Result<Cow<'_, [u8]>> {
    Ok(if packed { Cow::Owned(trits::pack(&m.view())?) } else { Cow::Borrowed(&m.codes) })
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

/// Rows of a matrix a part at a time, so that an export holds one part's values: an expert of a
/// mixture-of-experts stack, or a slice of [`SLICE_ROWS`] rows of a matrix whose rows lie one after another
/// in the file (the embedding of a 200k vocabulary is 2.3 GB as f32), or else the whole tensor.
struct MatrixReader<'s> {
    source: &'s ModelSource,
    kind: ReaderKind<'s>,
}

enum ReaderKind<'s> {
    Stack(ExpertStack),
    Rows { name: &'s str, shape: Vec<usize>, dtype: DType, data: &'s [u8] },
    Whole { name: &'s str, shape: Vec<usize> },
}

/// Rows per part of a plain matrix: 4096 rows of 2880 are 47 MB of f32.
const SLICE_ROWS: usize = 4096;

impl<'s> MatrixReader<'s> {
    fn new(source: &'s ModelSource, name: &'s str) -> Result<MatrixReader<'s>> {
        if let Some(stack) = ExpertStack::of(source, name)? {
            return Ok(MatrixReader { source, kind: ReaderKind::Stack(stack) });
        }
        let t = source.tensor(name)?;
        let plain = source.group_view(name).is_none() && source.nf4_view(name).is_none();
        let kind = match t.shape[..] {
            [rows, cols] if plain && rows > 0 && cols.is_multiple_of(t.dtype.block_len()) => {
                ReaderKind::Rows { name, shape: t.shape.clone(), dtype: t.dtype, data: t.data }
            }
            _ => ReaderKind::Whole { name, shape: t.shape.clone() },
        };
        Ok(MatrixReader { source, kind })
    }

    /// The output tensor's name: the source's, or its stack's (`….weight` for MXFP4 halves).
    fn name(&self) -> &str {
        match &self.kind {
            ReaderKind::Stack(s) => &s.name,
            ReaderKind::Rows { name, .. } | ReaderKind::Whole { name, .. } => name,
        }
    }

    /// Logical shape: `[experts, rows, cols]` for a stack (Linear orientation), the tensor's otherwise.
    fn shape(&self) -> Vec<usize> {
        match &self.kind {
            ReaderKind::Stack(s) => vec![s.experts, s.rows, s.cols],
            ReaderKind::Rows { shape, .. } | ReaderKind::Whole { shape, .. } => shape.clone(),
        }
    }

    fn is_stack(&self) -> bool {
        matches!(self.kind, ReaderKind::Stack(_))
    }

    fn parts(&self) -> usize {
        match &self.kind {
            ReaderKind::Stack(s) => s.experts,
            ReaderKind::Rows { shape, .. } => shape[0].div_ceil(SLICE_ROWS),
            ReaderKind::Whole { .. } => 1,
        }
    }

    /// Which of the matrix's rows part `p` holds, for error messages.
    fn part_label(&self, p: usize) -> String {
        match &self.kind {
            ReaderKind::Stack(_) => format!("expert {p}"),
            ReaderKind::Rows { .. } => format!("rows from {}", p * SLICE_ROWS),
            ReaderKind::Whole { .. } => "all rows".into(),
        }
    }

    /// Part `p`: its number of rows and its values, row-major.
    fn part(&self, p: usize) -> Result<(usize, Vec<f32>)> {
        match &self.kind {
            ReaderKind::Stack(s) => Ok((s.rows, s.expert_f32(self.source, p)?)),
            ReaderKind::Rows { name, shape, dtype, data } => {
                let (rows, cols) = (shape[0], shape[1]);
                let row_bytes = data.len() / rows;
                let (r0, r1) = (p * SLICE_ROWS, ((p + 1) * SLICE_ROWS).min(rows));
                let bytes = &data[r0 * row_bytes..r1 * row_bytes];
                let values = lowbit_formats::dequant::dequantize(*dtype, bytes, (r1 - r0) * cols)
                    .map_err(|e| FormatError::Invalid(format!("tensor {name}: {e}")))?;
                let t = lowbit_formats::source::TensorRef { name, dtype: *dtype, shape: shape.clone(), data: bytes };
                self.source.release(&t);
                Ok((r1 - r0, values))
            }
            ReaderKind::Whole { name, .. } => {
                let (shape, values) = self.source.tensor_f32(name)?;
                Ok((shape.first().copied().unwrap_or(1), values))
            }
        }
    }
}
