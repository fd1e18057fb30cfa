//! x86-64 SIMD paths.

pub mod avx2;
