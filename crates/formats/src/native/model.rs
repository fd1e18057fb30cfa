//! Reading a native directory back: its quantization config, its safetensors file (memory-mapped)
//! and the model's hyperparameters, with every tensor checked at open.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::hf_config::read_json;
use crate::native::group::{GroupFormat, GroupView};
use crate::native::nf4::{self, Nf4Stack, Nf4View};
use crate::native::palette::{PaletteFormat, PaletteView};
use crate::native::qconfig::{
    absmax_name, channel_scale_name, codes_name, lut_name, nested_absmax_name, offset_name, scales_name, zeros_name,
    QuantizationConfig, Storage, TensorSpec,
};
use crate::native::trits::{self, TritsView};
use crate::native::{METADATA_GGUF, QUANT_CONFIG};
use crate::safetensors::{SafetensorsFile, TensorEntry, CONFIG_FILE, SINGLE_FILE};

/// How one tensor of the model is held.
#[derive(Clone, Copy, Debug)]
pub enum NativeTensor<'a> {
    /// A plain safetensors tensor (F32, F16, BF16).
    Plain {
        dtype: DType,
        data: &'a [u8],
    },
    Group(GroupView<'a>),
    Nf4(Nf4View<'a>),
    /// Mixture-of-experts weights, each expert's matrix quantized on its own.
    Nf4Stack(Nf4Stack<'a>),
    Palette(PaletteView<'a>),
    Trits(TritsView<'a>),
}

/// An open native directory.
pub struct NativeModel {
    dir: PathBuf,
    qconfig: QuantizationConfig,
    config: ModelConfig,
    /// The source's GGUF metadata, when the directory was made from a GGUF model.
    metadata: Option<GgufFile>,
    file: SafetensorsFile,
    by_name: HashMap<String, usize>,
}

impl fmt::Debug for NativeModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeModel").field("dir", &self.dir).field("n_tensors", &self.qconfig.tensors.len()).finish()
    }
}

/// Whether `dir` is a native directory (it holds a quantization_config.json).
pub fn is_native_dir(dir: &Path) -> bool {
    dir.join(QUANT_CONFIG).is_file()
}

impl NativeModel {
    pub fn open(dir: &Path) -> Result<NativeModel> {
        let qconfig = QuantizationConfig::read(&dir.join(QUANT_CONFIG))?;
        let file = SafetensorsFile::open(dir.join(SINGLE_FILE))?;
        let (mut config, metadata) = if qconfig.metadata == METADATA_GGUF {
            let gguf = GgufFile::open(dir.join(METADATA_GGUF))?;
            (ModelConfig::from_gguf(&gguf)?, Some(gguf))
        } else if qconfig.metadata == CONFIG_FILE {
            let path = dir.join(CONFIG_FILE);
            (ModelConfig::from_hf_json(&path, &read_json(&path)?)?, None)
        } else {
            return Err(FormatError::InFile {
                path: dir.join(QUANT_CONFIG),
                what: format!("metadata {:?}: expected {METADATA_GGUF:?} or {CONFIG_FILE:?}", qconfig.metadata),
            });
        };
        let by_name: HashMap<String, usize> =
            qconfig.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        // `from_gguf` learns tying from the tensors of the file it reads, and metadata.gguf has none.
        if metadata.is_some() {
            config.tie_embeddings = !by_name.contains_key("output.weight");
        }
        let model = NativeModel { dir: dir.to_path_buf(), qconfig, config, metadata, file, by_name };
        model.check()?;
        Ok(model)
    }

    /// Every listed tensor has its parts with the right dtypes and sizes, and nothing else is stored.
    fn check(&self) -> Result<()> {
        let err = |what: String| FormatError::InFile { path: self.file.path().to_path_buf(), what };
        if self.by_name.len() != self.qconfig.tensors.len() {
            return Err(FormatError::InFile {
                path: self.dir.join(QUANT_CONFIG),
                what: "a tensor is listed twice".into(),
            });
        }
        let mut used = HashSet::new();
        for spec in &self.qconfig.tensors {
            self.resolve(spec).map_err(|e| match e {
                FormatError::Invalid(what) => err(format!("tensor {:?}: {what}", spec.name)),
                other => other,
            })?;
            match (spec.act_scale, &spec.storage) {
                (None, _) => {}
                (Some(d), Storage::Group { .. }) if d.is_finite() && d > 0.0 => {}
                (Some(d), _) => {
                    return Err(err(format!(
                        "tensor {:?}: act_scale {d} (a positive step, on a group-quantized matrix only)",
                        spec.name
                    )))
                }
            }
            match spec.storage {
                Storage::Plain { .. } => used.insert(spec.name.clone()),
                Storage::Trits { .. } => {
                    used.insert(codes_name(&spec.name));
                    used.insert(scales_name(&spec.name))
                }
                Storage::Group { sym, .. } => {
                    used.insert(codes_name(&spec.name));
                    if !sym {
                        used.insert(zeros_name(&spec.name));
                    }
                    used.insert(scales_name(&spec.name))
                }
                Storage::Nf4 { .. } => {
                    used.insert(codes_name(&spec.name));
                    used.insert(absmax_name(&spec.name));
                    used.insert(nested_absmax_name(&spec.name));
                    used.insert(offset_name(&spec.name))
                }
                Storage::Palette { channel_scale, .. } => {
                    used.insert(codes_name(&spec.name));
                    if channel_scale {
                        used.insert(channel_scale_name(&spec.name));
                    }
                    used.insert(lut_name(&spec.name))
                }
            };
        }
        if let Some(t) = self.file.tensors().iter().find(|t| !used.contains(&t.name)) {
            return Err(err(format!("tensor {:?} is not listed in {QUANT_CONFIG}", t.name)));
        }
        Ok(())
    }

    fn part(&self, name: &str, dtype: DType) -> Result<&TensorEntry> {
        let t = self.file.get(name).ok_or_else(|| FormatError::Invalid(format!("part {name:?} is missing")))?;
        if t.dtype != dtype {
            return Err(FormatError::Invalid(format!("part {name:?} is {}, want {dtype}", t.dtype)));
        }
        Ok(t)
    }

    fn resolve(&self, spec: &TensorSpec) -> Result<NativeTensor<'_>> {
        match &spec.storage {
            Storage::Plain { dtype } => {
                let t = self.file.get(&spec.name).ok_or_else(|| FormatError::Invalid("missing".into()))?;
                if t.dtype.name() != dtype || t.shape != spec.shape {
                    return Err(FormatError::Invalid(format!(
                        "stored as {} {:?}, listed as {dtype} {:?}",
                        t.dtype, t.shape, spec.shape
                    )));
                }
                Ok(NativeTensor::Plain { dtype: t.dtype, data: self.file.data(t) })
            }
            &Storage::Group { bits, group, sym } => {
                let format = GroupFormat::new(bits, group, sym)?;
                // A stack of matrices (mixture-of-experts weights, [experts, rows, cols]) is stored as its rows one
                // after the other.
                let (rows, cols) = match spec.shape[..] {
                    [rows, cols] => (rows, cols),
                    [n, rows, cols] => {
                        (n.checked_mul(rows).ok_or_else(|| FormatError::Invalid("shape overflows".into()))?, cols)
                    }
                    _ => {
                        return Err(FormatError::Invalid(format!(
                            "shape {:?}: group formats hold matrices and stacks of them",
                            spec.shape
                        )))
                    }
                };
                let codes = self.file.data(self.part(&codes_name(&spec.name), DType::U8)?);
                let scales = self.file.data(self.part(&scales_name(&spec.name), DType::F16)?);
                let zeros = if sym { &[][..] } else { self.file.data(self.part(&zeros_name(&spec.name), DType::U8)?) };
                GroupView::new(format, rows, cols, codes, scales, zeros).map(NativeTensor::Group)
            }
            &Storage::Trits { group } => {
                let [rows, cols] = spec.shape[..] else {
                    return Err(FormatError::Invalid(format!(
                        "shape {:?}: {} holds matrices",
                        spec.shape,
                        trits::name(group)
                    )));
                };
                let codes = self.file.data(self.part(&codes_name(&spec.name), DType::U8)?);
                let scales = self.file.data(self.part(&scales_name(&spec.name), DType::F16)?);
                TritsView::new(group, rows, cols, codes, scales).map(NativeTensor::Trits)
            }
            &Storage::Palette { bits, group_rows, channel_scale } => {
                self.resolve_palette(spec, PaletteFormat::new(bits, group_rows, channel_scale)?)
            }
            &Storage::Nf4 { block, nested_block } => {
                if (block, nested_block) != (nf4::BLOCK, nf4::NESTED_BLOCK) {
                    return Err(FormatError::Unsupported {
                        path: self.dir.join(QUANT_CONFIG),
                        what: format!(
                            "tensor {:?}: nf4 in blocks of {block} and {nested_block} (this lowbit reads {} and {})",
                            spec.name,
                            nf4::BLOCK,
                            nf4::NESTED_BLOCK
                        ),
                    });
                }
                let part = |name: String, dtype| self.part(&name, dtype).map(|t| self.file.data(t));
                let codes = part(codes_name(&spec.name), DType::U8)?;
                let absmax = part(absmax_name(&spec.name), DType::U8)?;
                let nested = part(nested_absmax_name(&spec.name), DType::F32)?;
                let offset = part(offset_name(&spec.name), DType::F32)?;
                match spec.shape[..] {
                    [rows, cols] => Nf4View::new(rows, cols, codes, absmax, nested, offset).map(NativeTensor::Nf4),
                    [experts, rows, cols] => {
                        Nf4Stack::new(experts, rows, cols, codes, absmax, nested, offset).map(NativeTensor::Nf4Stack)
                    }
                    _ => Err(FormatError::Invalid(format!(
                        "shape {:?}: nf4 holds matrices and stacks of them",
                        spec.shape
                    ))),
                }
            }
        }
    }

    fn resolve_palette(&self, spec: &TensorSpec, format: PaletteFormat) -> Result<NativeTensor<'_>> {
        // A stack of experts is its experts' rows one after the other, no palette spanning two of them.
        let (rows, cols) = match spec.shape[..] {
            [rows, cols] => (rows, cols),
            [n, rows, cols] if format.group_rows.is_some_and(|g| rows.is_multiple_of(g)) => {
                (n.checked_mul(rows).ok_or_else(|| FormatError::Invalid("shape overflows".into()))?, cols)
            }
            _ => {
                return Err(FormatError::Invalid(format!(
                    "shape {:?}: {} holds matrices, or stacks whose palettes never span two of them",
                    spec.shape,
                    format.name()
                )))
            }
        };
        let part = |name: String, dtype| self.part(&name, dtype).map(|t| self.file.data(t));
        let scales = if format.channel_scale { part(channel_scale_name(&spec.name), DType::F16)? } else { &[][..] };
        let (codes, lut) = (part(codes_name(&spec.name), DType::U8)?, part(lut_name(&spec.name), DType::F16)?);
        PaletteView::new(format, rows, cols, codes, lut, scales).map(NativeTensor::Palette)
    }

    /// `data` (bytes of this directory's tensors) as a handle that keeps the file mapped.
    pub fn mapped(&self, data: &[u8]) -> Option<crate::MappedBytes> {
        self.file.mapped(data)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn quantization_config(&self) -> &QuantizationConfig {
        &self.qconfig
    }

    /// The source's GGUF metadata (vocabulary included), when it was a GGUF model.
    pub fn metadata_gguf(&self) -> Option<&GgufFile> {
        self.metadata.as_ref()
    }

    /// Tensors in the source's order.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.qconfig.tensors
    }

    pub fn spec(&self, name: &str) -> Option<&TensorSpec> {
        self.by_name.get(name).map(|&i| &self.qconfig.tensors[i])
    }

    /// The tensor `name` (checked at open, so only a missing name is an error).
    pub fn tensor(&self, name: &str) -> Result<NativeTensor<'_>> {
        let spec = self.spec(name).ok_or_else(|| FormatError::MissingTensor(name.to_string()))?;
        self.resolve(spec)
    }

    /// Bytes the tensor occupies in the file, all parts together.
    pub fn stored_bytes(&self, name: &str) -> Result<usize> {
        Ok(match self.tensor(name)? {
            NativeTensor::Plain { data, .. } => data.len(),
            NativeTensor::Group(v) => v.codes.len() + v.scales.len() + v.zeros.len(),
            NativeTensor::Nf4(v) => v.codes.len() + v.absmax.len() + v.nested_absmax.len() + 4,
            NativeTensor::Nf4Stack(s) => s.stored_bytes(),
            NativeTensor::Palette(v) => v.codes.len() + v.lut.len() + v.scales.len(),
            NativeTensor::Trits(v) => v.codes.len() + v.scales.len(),
        })
    }
}
