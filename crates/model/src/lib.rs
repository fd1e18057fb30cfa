//! Architectures and the pieces they share: the `Linear` seam, rotary embeddings, the KV cache.

pub mod calib;
pub mod embedding;
pub mod error;
pub mod group_linear;
pub mod half_linear;
pub mod kv_cache;
pub mod linear;
mod moe;
pub mod mxfp4_linear;
pub mod quant_linear;
pub mod rope;
pub mod transformer;

pub use calib::{scale_columns, ExpertMatrix, Observer, Part, Proj, Site};
pub use embedding::Embedding;
pub use error::ModelError;
pub use group_linear::{GroupFactory, GroupLinear};
pub use half_linear::{F16Factory, HalfLinear};
pub use kv_cache::KvCache;
pub use linear::{CalibrationFactory, DenseF32, F32Factory, Linear, LinearFactory};
pub use mxfp4_linear::{Mxfp4Linear, WeightBytes};
pub use quant_linear::{NativeFactory, QuantLinear};
pub use transformer::{Logits, Model};
