//! `quantization_config.json`: how a native directory was made and how each tensor is stored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::native::group::GroupFormat;
use crate::native::nf4;
use crate::native::palette::PaletteFormat;

/// The value of `format` that marks a lowbit native directory.
pub const FORMAT_TAG: &str = "lowbit-native";
/// Bumped when a reader of an older version could misread the directory.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizationConfig {
    /// Always [`FORMAT_TAG`].
    pub format: String,
    pub format_version: u32,
    /// `lowbit X.Y.Z`.
    pub tool_version: String,
    /// `rtn`, ...
    pub method: String,
    /// The device profile (`--target`) whose per-tensor rules chose each tensor's storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub bits: u8,
    /// Columns per group; absent for per-output-channel formats.
    pub group: Option<usize>,
    pub sym: bool,
    /// The model the directory was made from (its file or directory name).
    pub source: String,
    /// Where the model's hyperparameters and tokenizer come from: [`super::METADATA_GGUF`] (a
    /// tensor-less GGUF with the source's metadata) or `config.json` (+ `tokenizer.json`).
    pub metadata: String,
    /// For calibrated methods: the calibration data (file, SHA-256, samples, length, seed), the method's
    /// options and per-tensor figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<serde_json::Value>,
    /// Every tensor of the model, in the source's order.
    pub tensors: Vec<TensorSpec>,
}

/// One tensor under its canonical (GGUF) name and logical shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// Row-major, outermost first: the shape of the unquantized tensor.
    pub shape: Vec<usize>,
    pub storage: Storage,
    /// Static activation quantization: the int8 step `d` calibrated for this matrix's input (inputs become
    /// round(x/d) clamped to ±127, so 127·d is the largest magnitude kept). Absent: activations are
    /// quantized per block of 32 at run time (dynamic). Only group-quantized matrices take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_scale: Option<f32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Storage {
    /// Stored as is, in a safetensors tensor of the same name (`F32`, `F16`, `BF16`).
    Plain { dtype: String },
    /// A group-wise integer format: tensors `NAME.qweight`, `NAME.scales` and (asymmetric) `NAME.zeros`.
    Group { bits: u8, group: usize, sym: bool },
    /// NF4 with double quantization (`super::nf4`): tensors `NAME.qweight`, `NAME.absmax`,
    /// `NAME.nested_absmax` and `NAME.offset`. The block sizes are recorded to make the directory
    /// self-describing; 64 and 256 are the only ones read.
    Nf4 { block: usize, nested_block: usize },
    /// Palettized (`super::palette`): tensors `NAME.qweight`, `NAME.lut` and, with per-channel scales,
    /// `NAME.channel_scale`. Without `group_rows`, one palette for the whole matrix.
    /// Ternary, five trits per byte (`super::trits`): tensors `NAME.qweight` and `NAME.scales`, the scales
    /// as those of `int2-gG-sym`.
    Trits { group: usize },
    Palette {
        bits: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_rows: Option<usize>,
        channel_scale: bool,
    },
}

impl Storage {
    pub fn group(f: GroupFormat) -> Storage {
        Storage::Group { bits: f.bits, group: f.group, sym: f.sym }
    }

    /// NF4 in its only block sizes.
    pub fn nf4() -> Storage {
        Storage::Nf4 { block: nf4::BLOCK, nested_block: nf4::NESTED_BLOCK }
    }

    pub fn palette(f: PaletteFormat) -> Storage {
        Storage::Palette { bits: f.bits, group_rows: f.group_rows, channel_scale: f.channel_scale }
    }

    /// `F32`, `int4-g128-sym`, ...
    pub fn name(&self) -> String {
        match self {
            &Storage::Palette { bits, group_rows, channel_scale } => {
                PaletteFormat { bits, group_rows, channel_scale }.name()
            }
            Storage::Plain { dtype } => dtype.clone(),
            Storage::Group { bits, group, sym } => GroupFormat { bits: *bits, group: *group, sym: *sym }.name(),
            Storage::Nf4 { .. } => "nf4".to_string(),
            &Storage::Trits { group } => super::trits::name(group),
        }
    }
}

/// Safetensors names of a group-quantized tensor's parts.
pub fn codes_name(name: &str) -> String {
    format!("{name}.qweight")
}

pub fn scales_name(name: &str) -> String {
    format!("{name}.scales")
}

pub fn zeros_name(name: &str) -> String {
    format!("{name}.zeros")
}

/// Safetensors names of an NF4 tensor's parts besides its codes (`codes_name`).
pub fn absmax_name(name: &str) -> String {
    format!("{name}.absmax")
}

pub fn nested_absmax_name(name: &str) -> String {
    format!("{name}.nested_absmax")
}

pub fn offset_name(name: &str) -> String {
    format!("{name}.offset")
}

/// Safetensors names of a palettized tensor's parts besides its indices (`codes_name`).
pub fn lut_name(name: &str) -> String {
    format!("{name}.lut")
}

pub fn channel_scale_name(name: &str) -> String {
    format!("{name}.channel_scale")
}

impl QuantizationConfig {
    pub fn read(path: &Path) -> Result<QuantizationConfig> {
        let bytes = std::fs::read(path).map_err(|cause| FormatError::Io { path: path.to_path_buf(), cause })?;
        let c: QuantizationConfig = serde_json::from_slice(&bytes).map_err(|e| FormatError::InFile {
            path: path.to_path_buf(),
            what: format!("not a lowbit quantization config: {e}"),
        })?;
        if c.format != FORMAT_TAG {
            return Err(FormatError::InFile {
                path: path.to_path_buf(),
                what: format!("format {:?} is not {FORMAT_TAG:?}", c.format),
            });
        }
        if c.format_version != FORMAT_VERSION {
            return Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                what: format!("format_version {} (this lowbit reads {FORMAT_VERSION})", c.format_version),
            });
        }
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes") + "\n"
    }
}
