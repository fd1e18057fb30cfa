//! The one way every verb opens a model: a GGUF file, a Hugging Face directory, a lowbit native
//! directory, or a bare `config.json` (structure only), all seen as canonical tensor names plus a
//! `ModelConfig`.

use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::hf_config::read_json;
use crate::mapped::MappedBytes;
use crate::native::nf4::Nf4Stack;
use crate::native::palette::PaletteView;
use crate::native::{is_native_dir, GroupView, NativeModel, NativeTensor, Nf4View, TritsView};
use crate::safetensors::HfModel;

#[derive(Debug)]
pub enum ModelSource {
    Gguf(GgufFile),
    Hf(HfModel),
    /// A lowbit output directory (`crate::native`).
    Native(Box<NativeModel>),
    /// A bare config.json: structure only, no tensors.
    ConfigOnly {
        path: PathBuf,
        config: ModelConfig,
    },
}

/// A tensor borrowed from an open model.
///
/// A group- or NF4-quantized tensor of a native directory appears with its logical shape, dtype `U8`
/// and its codes as `data`; [`ModelSource::group_view`] and [`ModelSource::nf4_view`] give all of its
/// parts, [`ModelSource::tensor_f32`] its values.
#[derive(Clone, Debug)]
pub struct TensorRef<'a> {
    /// Canonical (GGUF) name.
    pub name: &'a str,
    pub dtype: DType,
    /// Row-major, outermost first.
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl TensorRef<'_> {
    pub fn n_elements(&self) -> usize {
        // The readers checked the product when they opened the file.
        self.shape.iter().product()
    }
}

impl ModelSource {
    /// Opens a `.gguf` file, a Hugging Face model directory, or a `config.json` file.
    pub fn open(path: &Path) -> Result<ModelSource> {
        let meta =
            std::fs::metadata(path).map_err(|source| FormatError::Io { path: path.to_path_buf(), cause: source })?;
        if meta.is_dir() {
            if is_native_dir(path) {
                return Ok(ModelSource::Native(Box::new(NativeModel::open(path)?)));
            }
            return Ok(ModelSource::Hf(HfModel::open(path)?));
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let config = ModelConfig::from_hf_json(path, &read_json(path)?)?;
                Ok(ModelSource::ConfigOnly { path: path.to_path_buf(), config })
            }
            Some("safetensors") => Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                what: "a lone .safetensors file: open its directory, which holds config.json".to_string(),
            }),
            _ => Ok(ModelSource::Gguf(GgufFile::open(path)?)),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(f) => f.path(),
            ModelSource::Hf(m) => m.dir(),
            ModelSource::Native(m) => m.dir(),
            ModelSource::ConfigOnly { path, .. } => path,
        }
    }

    pub fn config(&self) -> Result<ModelConfig> {
        match self {
            ModelSource::Gguf(f) => ModelConfig::from_gguf(f),
            ModelSource::Hf(m) => Ok(m.config().clone()),
            ModelSource::Native(m) => Ok(m.config().clone()),
            ModelSource::ConfigOnly { config, .. } => Ok(config.clone()),
        }
    }

    /// Canonical names in file order (shard by shard for a sharded directory).
    pub fn tensor_names(&self) -> Vec<&str> {
        match self {
            ModelSource::Gguf(f) => f.tensors().iter().map(|t| t.name.as_str()).collect(),
            ModelSource::Hf(m) => m.tensors().iter().map(|t| t.canonical.as_str()).collect(),
            ModelSource::Native(m) => m.specs().iter().map(|t| t.name.as_str()).collect(),
            ModelSource::ConfigOnly { .. } => Vec::new(),
        }
    }

    /// The tensor with canonical name `name`; `FormatError::MissingTensor` when there is none.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let missing = || FormatError::MissingTensor(name.to_string());
        match self {
            ModelSource::Gguf(f) => {
                let t = f.tensor_info(name).ok_or_else(missing)?;
                Ok(TensorRef { name: &t.name, dtype: t.dtype, shape: t.shape(), data: f.tensor_data(t) })
            }
            ModelSource::Hf(m) => {
                let t = m.tensor(name).ok_or_else(missing)?;
                Ok(TensorRef { name: &t.canonical, dtype: t.dtype, shape: t.shape.clone(), data: m.data(t) })
            }
            ModelSource::Native(m) => {
                let spec = m.spec(name).ok_or_else(missing)?;
                let (dtype, data) = match m.tensor(name)? {
                    NativeTensor::Plain { dtype, data } => (dtype, data),
                    NativeTensor::Group(v) => (DType::U8, v.codes),
                    NativeTensor::Nf4(v) => (DType::U8, v.codes),
                    NativeTensor::Nf4Stack(s) => (DType::U8, s.codes()),
                    NativeTensor::Palette(v) => (DType::U8, v.codes),
                    NativeTensor::Trits(v) => (DType::U8, v.codes),
                };
                Ok(TensorRef { name: &spec.name, dtype, shape: spec.shape.clone(), data })
            }
            ModelSource::ConfigOnly { .. } => Err(missing()),
        }
    }

    /// The tensor's shape and its values dequantized to f32.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        if let Some(v) = self.group_view(name) {
            return Ok((vec![v.rows, v.cols], v.dequantize()));
        }
        if let Some(v) = self.nf4_view(name) {
            return Ok((vec![v.rows, v.cols], v.dequantize()));
        }
        if let Some(v) = self.palette_view(name) {
            return Ok((vec![v.rows, v.cols], v.dequantize()));
        }
        if let Some(v) = self.trits_view(name) {
            return Ok((vec![v.rows, v.cols], v.to_group().view().dequantize()));
        }
        let t = self.tensor(name)?;
        let values = crate::dequant::dequantize(t.dtype, t.data, t.n_elements()).map_err(|e| match e {
            FormatError::Invalid(what) => {
                FormatError::InFile { path: self.path().to_path_buf(), what: format!("tensor {name:?}: {what}") }
            }
            other => other,
        })?;
        Ok((t.shape, values))
    }

    /// A tensor's bytes as a handle that keeps its file mapped, for weights used in place rather than copied;
    /// `None` where the source does not map its tensors that way (every source but a Hugging Face directory).
    pub fn mapped(&self, name: &str) -> Option<MappedBytes> {
        match self {
            ModelSource::Hf(m) => m.tensor(name).map(|t| m.mapped(t)),
            _ => None,
        }
    }

    /// Bytes borrowed from this source (part of a tensor) as a handle that keeps their file mapped; `None` for
    /// memory the source did not map (a GGUF file's, or a copy).
    pub fn mapped_range(&self, data: &[u8]) -> Option<MappedBytes> {
        match self {
            ModelSource::Hf(m) => m.shards().iter().find_map(|s| s.mapped(data)),
            ModelSource::Native(m) => m.mapped(data),
            _ => None,
        }
    }

    /// Tells the source that a tensor's bytes have been copied and its mapped pages may leave memory
    /// (they are read back from the file if used again), so a load holds the weights once, not twice.
    pub fn release(&self, tensor: &TensorRef<'_>) {
        match self {
            ModelSource::Gguf(f) => f.release(tensor.data),
            ModelSource::Hf(m) => m.release(tensor.data),
            // Native parts stay mapped: their linears read several tensors per matrix.
            ModelSource::Native(_) | ModelSource::ConfigOnly { .. } => {}
        }
    }

    /// The static activation step calibrated for the input of tensor `name` (native directories made with
    /// static activation quantization); `None`: activations are quantized dynamically.
    pub fn act_scale(&self, name: &str) -> Option<f32> {
        match self {
            ModelSource::Native(m) => m.spec(name).and_then(|s| s.act_scale),
            _ => None,
        }
    }

    /// All parts of a group-quantized tensor of a native directory; `None` for any other tensor.
    pub fn group_view(&self, name: &str) -> Option<GroupView<'_>> {
        match self {
            ModelSource::Native(m) => match m.tensor(name) {
                Ok(NativeTensor::Group(v)) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }

    /// All parts of an NF4 tensor of a native directory; `None` for any other tensor.
    pub fn nf4_view(&self, name: &str) -> Option<Nf4View<'_>> {
        match self {
            ModelSource::Native(m) => match m.tensor(name) {
                Ok(NativeTensor::Nf4(v)) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }

    /// All parts of a palettized tensor of a native directory; `None` for any other tensor.
    pub fn palette_view(&self, name: &str) -> Option<PaletteView<'_>> {
        match self {
            ModelSource::Native(m) => match m.tensor(name) {
                Ok(NativeTensor::Palette(v)) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }

    /// All parts of a trit-packed tensor of a native directory; `None` for any other tensor.
    pub fn trits_view(&self, name: &str) -> Option<TritsView<'_>> {
        match self {
            ModelSource::Native(m) => match m.tensor(name) {
                Ok(NativeTensor::Trits(v)) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }

    /// All parts of an NF4 stack of experts of a native directory; `None` for any other tensor.
    pub fn nf4_stack(&self, name: &str) -> Option<Nf4Stack<'_>> {
        match self {
            ModelSource::Native(m) => match m.tensor(name) {
                Ok(NativeTensor::Nf4Stack(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// Bytes a tensor occupies in storage, all its parts together.
    pub fn stored_bytes(&self, name: &str) -> Result<usize> {
        match self {
            ModelSource::Native(m) => m.stored_bytes(name),
            _ => Ok(self.tensor(name)?.data.len()),
        }
    }

    /// The storage format's name: the dtype's, or a native format's (`int4-g128-sym`, `nf4`).
    pub fn storage_name(&self, name: &str) -> Result<String> {
        match self {
            ModelSource::Native(m) => {
                Ok(m.spec(name).ok_or_else(|| FormatError::MissingTensor(name.into()))?.storage.name())
            }
            _ => Ok(self.tensor(name)?.dtype.name().to_string()),
        }
    }

    pub fn gguf(&self) -> Option<&GgufFile> {
        match self {
            ModelSource::Gguf(f) => Some(f),
            _ => None,
        }
    }
}
