//! Measuring models: perplexity (llama.cpp's method), KL-divergence and top-1 agreement against a
//! reference model, throughput (llama-bench's pp/tg tests), generation sanity, and the acceptance rule
//! that puts them together ([`validate`]).

pub mod bench;
pub mod perplexity;
pub mod sanity;
pub mod sensitivity;
pub mod validate;

pub use bench::{bench, BenchOptions, BenchReport, Throughput};
pub use perplexity::{perplexity, ChunkProgress, EvalError, PerplexityOptions, PerplexityReport, ReferenceComparison};
