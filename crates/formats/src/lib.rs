//! Model file formats: reading GGUF files, Hugging Face safetensors directories and lowbit's native
//! directories into one view of named tensors, and the reference (scalar) dequantization of every
//! block format.
//!
//! Tensor names everywhere in lowbit are llama.cpp's GGUF names (`blk.0.attn_q.weight`);
//! `names` maps Hugging Face names onto them. Shapes are row-major, outermost first
//! (`[rows, cols]`), as in safetensors and numpy; GGUF's reversed `ne` order stays inside `gguf`.

pub mod config;
pub mod dequant;
pub mod dtype;
pub mod error;
pub mod experts;
pub mod gguf;
pub mod gguf_convert;
pub mod gguf_tokenizer;
pub mod gguf_write;
pub mod hf_config;
pub mod layout;
mod mapped;
pub mod names;
pub mod native;
pub mod params;
pub mod quantize;
pub mod safetensors;
pub mod source;
mod staging;

pub use config::ModelConfig;
pub use dtype::DType;
pub use error::{FormatError, Result};
pub use mapped::MappedBytes;
pub use staging::write_atomic;
