//! Measuring models: perplexity (llama.cpp's method) and throughput.

pub mod perplexity;

pub use perplexity::{perplexity, ChunkProgress, EvalError, PerplexityOptions, PerplexityReport};
