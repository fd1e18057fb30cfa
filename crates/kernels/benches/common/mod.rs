//! What the matmul and quant benches share: reading their command line, and timing that stays fair
//! between the kernels compared on a machine shared with other processes.

use lowbit_kernels::set_threads;
pub use lowbit_testdata::seconds_per_call;

/// The parts a bench can be limited to.
const PARTS: [&str; 2] = ["decode", "prefill"];

/// The words after `cargo bench … --` (cargo's own `--bench` left out).
pub struct Args {
    pub words: Vec<String>,
}

impl Args {
    /// Reads the command line and sets the thread count to its first number (2 by default).
    pub fn from_env() -> Args {
        let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
        set_threads(words.iter().find_map(|a| a.parse().ok()).unwrap_or(2));
        Args { words }
    }

    /// Whether `part` runs: every part when none is named, else the named ones.
    pub fn runs(&self, part: &str) -> bool {
        !self.words.iter().any(|a| PARTS.contains(&a.as_str())) || self.words.iter().any(|a| a == part)
    }
}

/// How many copies of a matrix of `bytes` make the 256 MiB the "cold" decode cycles through.
pub fn cold_copies(bytes: usize) -> usize {
    ((256 << 20) / bytes).max(1)
}

/// Seconds per decode call of `gemv` (weights, output row of `m`): "hot" repeats `ws[0]`, which stays in
/// cache when it fits; "cold" cycles through all of `ws`, as decode does when it walks every layer once
/// per token.
pub fn hot_and_cold<W>(ws: &[W], m: usize, gemv: impl Fn(&W, &mut [f32])) -> [f64; 2] {
    let (mut hot_out, mut cold_out) = (vec![0.0; m], vec![0.0; m]);
    let mut hot = || gemv(&ws[0], &mut hot_out);
    let mut i = 0;
    let mut cold = || {
        i = (i + 1) % ws.len();
        gemv(&ws[i], &mut cold_out)
    };
    seconds_per_call([&mut hot, &mut cold])
}
