//! Measuring models: perplexity (llama.cpp's method), KL-divergence and top-1 agreement against a
//! reference model.

pub mod perplexity;

pub use perplexity::{perplexity, ChunkProgress, EvalError, PerplexityOptions, PerplexityReport, ReferenceComparison};
