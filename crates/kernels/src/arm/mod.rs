//! aarch64 SIMD paths.

pub mod neon;
