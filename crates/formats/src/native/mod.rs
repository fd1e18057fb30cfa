//! lowbit's native output directory and the formats it stores.
//!
//! ```text
//! OUT/
//!   model.safetensors            every tensor under its canonical (GGUF) name: plain ones as F32/F16/BF16,
//!                                group-quantized ones as NAME.qweight (U8 codes), NAME.scales (F16) and,
//!                                when asymmetric, NAME.zeros (U8); layout in `group`; NF4 ones as
//!                                NAME.qweight, NAME.absmax (U8), NAME.nested_absmax and NAME.offset
//!                                (F32); layout in `nf4`; ternary ones packed five trits per byte as
//!                                NAME.qweight and NAME.scales; layout in `trits`
//!   quantization_config.json     method, bits, group, sym, tool version, and every tensor's logical shape
//!                                and storage (`qconfig`)
//!   metadata.gguf                for a GGUF source: its metadata (hyperparameters, vocabulary, chat
//!                                template) in a GGUF file without tensors
//!   config.json, tokenizer.json, for a Hugging Face source: its own files, copied
//!   tokenizer_config.json, ...
//! ```
//!
//! Keeping the source's metadata in its own format means `ModelConfig::from_gguf`/`from_hf_json` and the
//! tokenizer loaders read a native directory exactly as they read the source. Tensors keep the source's
//! names and values (GGUF's q/k row order and `1 + w` norms for a GGUF source), which the config read from
//! that same metadata describes.

pub mod group;
pub mod model;
pub mod nf4;
pub mod palette;
pub mod qconfig;
pub mod trits;
pub mod write;

use crate::error::{FormatError, Result};

pub use group::{GroupFormat, GroupMatrix, GroupView};
pub use model::{is_native_dir, NativeModel, NativeTensor};
pub use nf4::{Nf4Matrix, Nf4View};
pub use palette::{PaletteFormat, PaletteMatrix, PaletteView};
pub use qconfig::{QuantizationConfig, Storage, TensorSpec};
pub use trits::TritsView;

/// The quantization config's file name.
pub const QUANT_CONFIG: &str = "quantization_config.json";
/// The tensor-less GGUF file holding a GGUF source's metadata.
pub const METADATA_GGUF: &str = "metadata.gguf";

/// What every quantizer here asks of its input: `values` is a `rows × cols` matrix of finite numbers.
/// Errors name the row and column of the first value that is not.
fn check_values(values: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(values.len()) {
        return Err(FormatError::Invalid(format!("{} values are not a {rows}×{cols} matrix", values.len())));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(FormatError::Invalid(format!(
            "row {}, column {}: {} cannot be quantized",
            i / cols,
            i % cols,
            values[i]
        )));
    }
    Ok(())
}
