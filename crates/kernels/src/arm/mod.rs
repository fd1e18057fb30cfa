//! aarch64 SIMD paths.

pub(crate) mod int_dot;
pub mod neon;
