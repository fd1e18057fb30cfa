//! Measuring models: perplexity (llama.cpp's method), KL-divergence and top-1 agreement against a
//! reference model, and throughput (llama-bench's pp/tg tests).

pub mod bench;
pub mod perplexity;

pub use bench::{bench, BenchOptions, BenchReport, Throughput};
pub use perplexity::{perplexity, ChunkProgress, EvalError, PerplexityOptions, PerplexityReport, ReferenceComparison};
