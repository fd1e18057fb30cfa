//! Quantization: which storage type each tensor gets, and writing the result.

pub mod act_scales;
pub mod awq;
pub mod calib_data;
pub mod error;
pub mod file_type;
pub mod gguf_export;
pub mod gptq;
pub mod grid;
pub mod hessian;
pub mod imatrix;
pub mod layerwise;
pub mod linalg;
pub mod native_export;
pub mod nf4;
pub mod palette;
pub mod profile;
pub mod rtn;
pub mod tensor_types;
pub mod ternary;

pub use error::QuantError;
pub use file_type::FileType;
