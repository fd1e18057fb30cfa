//! What the matmul and quant benches share: reading their command line, and timing that stays fair
//! between the kernels compared on a machine shared with other processes.

use std::hint::black_box;
use std::time::Instant;

use lowbit_kernels::set_threads;

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

/// Seconds per call of each function: the median over 5 rounds, each round timing a batch of about
/// 0.2 s (at least one call) of every function in turn, so that load from other processes, which
/// varies over time, affects all of them alike.
pub fn seconds_per_call<const N: usize>(mut fs: [&mut dyn FnMut(); N]) -> [f64; N] {
    let batch: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            f();
            ((0.2 / start.elapsed().as_secs_f64()) as usize).max(1)
        })
        .collect();
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..5 {
        for (j, f) in fs.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..batch[j] {
                f();
            }
            times[j].push(start.elapsed().as_secs_f64() / batch[j] as f64);
        }
    }
    black_box(&mut fs);
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[2]
    })
}
