//! Test support: where tests find the real models fetched by scripts/fetch-models.sh, the seeded
//! random stream ([`Rng`]) tests and benches draw their data from, and the benches' fair timing
//! ([`seconds_per_call`]).
//!
//! Real-model tests skip (with a message) when a model is absent, so `cargo test` works on a
//! bare checkout; scripts/test.sh sets `LOWBIT_REQUIRE_MODELS=1`, which turns an absent model
//! into a failure, so CI can never pass by skipping.

use std::path::PathBuf;

mod rng;
mod timing;

pub use rng::Rng;
pub use timing::seconds_per_call;

/// Higham's γ_n = n·u/(1 − n·u) for f32 (u = 2⁻²⁴): a sum or product chain of n roundings is within γ_n of its
/// exact value, relative to the sum of its terms' magnitudes (Accuracy and Stability of Numerical Algorithms, §3.1).
/// The kernels' tests bound their paths' differences with it.
pub fn gamma(n: usize) -> f64 {
    let u = 1.0 / (1u64 << 24) as f64;
    n as f64 * u / (1.0 - n as f64 * u)
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// `$LOWBIT_MODELS`, default `~/.cache/lowbit/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("LOWBIT_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lowbit/models"),
    }
}

/// The path of model file `name`, or `None` (after printing why) when it is absent and absence
/// is allowed. Panics when `LOWBIT_REQUIRE_MODELS=1` and the file is missing.
pub fn model(name: &str) -> Option<PathBuf> {
    let path = models_dir().join(name);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("LOWBIT_REQUIRE_MODELS").is_ok_and(|v| v == "1") {
        panic!("{} is required (LOWBIT_REQUIRE_MODELS=1) but absent: run scripts/fetch-models.sh", path.display());
    }
    eprintln!("skipping: {} not found (run scripts/fetch-models.sh or set LOWBIT_MODELS)", path.display());
    None
}
