//! Quantization: which storage type each tensor gets, and writing the result.

pub mod gguf_export;
pub mod native_export;
pub mod nf4;
pub mod rtn;
