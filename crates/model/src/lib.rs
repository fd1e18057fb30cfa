//! Architectures and the pieces they share: the `Linear` seam, rotary embeddings, the KV cache.

pub mod error;
pub mod group_linear;
pub mod kv_cache;
pub mod linear;
pub mod quant_linear;
pub mod rope;
pub mod transformer;

pub use error::ModelError;
pub use group_linear::{GroupFactory, GroupLinear};
pub use kv_cache::KvCache;
pub use linear::{DenseF32, F32Factory, Linear, LinearFactory};
pub use quant_linear::{NativeFactory, QuantLinear};
pub use transformer::{Logits, Model};
