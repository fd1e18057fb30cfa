//! Throughput as llama-bench measures it: pp (a prompt of `prompt` tokens into an empty cache) and
//! tg (`gen` single-token decode steps from an empty cache), each repeated after one warm-up run, plus
//! the time to first token (prompt processed and its next token picked) and peak resident memory.

use std::time::Instant;

use lowbit_model::{KvCache, Logits, Model, ModelError};
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Prompt tokens of the pp test (llama-bench's -p); 0 skips it.
    pub prompt: usize,
    /// Decode steps of the tg test (-n); 0 skips it.
    pub gen: usize,
    /// Timed repetitions of each test (-r).
    pub repetitions: usize,
    /// Seeds the token ids the tests feed (random ids, as llama-bench uses).
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions { prompt: 512, gen: 128, repetitions: 3, seed: 42 }
    }
}

/// One test's repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub tokens: usize,
    /// Tokens per second of each repetition, in run order.
    pub runs: Vec<f64>,
    pub median: f64,
    pub mean: f64,
    pub stddev: f64,
}

impl Throughput {
    fn from_seconds(tokens: usize, seconds: &[f64]) -> Throughput {
        let runs: Vec<f64> = seconds.iter().map(|s| tokens as f64 / s).collect();
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        let mean = runs.iter().sum::<f64>() / n;
        let stddev = if runs.len() > 1 {
            (runs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Throughput { tokens, runs, median, mean, stddev }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub pp: Option<Throughput>,
    pub tg: Option<Throughput>,
    /// Median seconds from a `prompt`-token prompt to its first generated token (greedy).
    pub ttft_seconds: Option<f64>,
    /// The process's peak resident set (VmHWM) after the tests, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Which test is running, for progress displays: ("pp512", repetition, of).
pub type BenchProgress<'a> = &'a mut dyn FnMut(&str, usize, usize);

pub fn bench(model: &Model, opts: &BenchOptions, progress: BenchProgress<'_>) -> Result<BenchReport, ModelError> {
    let vocab = model.config.vocab_size as u64;
    let mut rng = opts.seed | 1;
    let mut next_id = move || {
        // xorshift64: any ids will do, they only have to be the same from run to run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % vocab) as u32
    };
    let ctx = opts.prompt.max(opts.gen).max(1);
    let mut cache = model.new_cache(ctx)?;
    let runs = opts.repetitions.max(1);
    let (mut pp, mut tg, mut ttft) = (None, None, None);

    if opts.prompt > 0 {
        let prompt: Vec<u32> = (0..opts.prompt).map(|_| next_id()).collect();
        let name = format!("pp{}", opts.prompt);
        let (mut prefill, mut first) = (Vec::new(), Vec::new());
        for r in 0..=runs {
            progress(&name, r, runs);
            cache.truncate(0);
            let start = Instant::now();
            let logits = model.forward(&prompt, &mut cache, Logits::Last)?;
            let prefilled = start.elapsed().as_secs_f64();
            std::hint::black_box(argmax(&logits));
            let answered = start.elapsed().as_secs_f64();
            // Run 0 warms caches and the thread pool, as llama-bench's warm-up does.
            if r > 0 {
                prefill.push(prefilled);
                first.push(answered);
            }
        }
        pp = Some(Throughput::from_seconds(opts.prompt, &prefill));
        first.sort_by(f64::total_cmp);
        ttft = Some(first[first.len() / 2]);
    }
    if opts.gen > 0 {
        let name = format!("tg{}", opts.gen);
        let mut seconds = Vec::new();
        for r in 0..=runs {
            progress(&name, r, runs);
            let s = decode(model, &mut cache, opts.gen, next_id())?;
            if r > 0 {
                seconds.push(s);
            }
        }
        tg = Some(Throughput::from_seconds(opts.gen, &seconds));
    }
    Ok(BenchReport { pp, tg, ttft_seconds: ttft, peak_rss_bytes: peak_rss_bytes() })
}

/// Seconds for `steps` greedy decode steps from an empty cache, starting at `first`.
fn decode(model: &Model, cache: &mut KvCache, steps: usize, first: u32) -> Result<f64, ModelError> {
    cache.truncate(0);
    let mut token = first;
    let start = Instant::now();
    for _ in 0..steps {
        token = argmax(&model.forward(&[token], cache, Logits::Last)?) as u32;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Bytes per second this machine reads from memory with every kernel thread: each thread sums its share of a
/// 512 MiB buffer (far beyond any cache), median of 5 timed passes after one warm-up. Decode reads each weight
/// once per token, so this over the bytes a token reads bounds decode tokens/s.
pub fn memory_read_bandwidth() -> f64 {
    const WORDS: usize = 64 << 20; // 512 MiB of u64
    let buffer: Vec<u64> = (0..WORDS as u64).collect();
    let parts = 4 * lowbit_kernels::threads();
    let chunk = WORDS.div_ceil(parts);
    let mut seconds: Vec<f64> = (0..6)
        .map(|_| {
            let start = Instant::now();
            lowbit_kernels::parallel_for(parts, &|i| {
                let part = &buffer[(i * chunk).min(WORDS)..((i + 1) * chunk).min(WORDS)];
                std::hint::black_box(part.iter().fold(0u64, |a, &w| a.wrapping_add(w)));
            });
            start.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    seconds.sort_by(f64::total_cmp);
    (WORDS * 8) as f64 / seconds[seconds.len() / 2]
}

/// VmHWM from /proc/self/status (Linux); None elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_statistics() {
        let t = Throughput::from_seconds(100, &[1.0, 0.5, 2.0, 0.25]);
        assert_eq!(t.runs, [100.0, 200.0, 50.0, 400.0]);
        assert_eq!(t.median, 150.0);
        assert_eq!(t.mean, 187.5);
        assert!((t.stddev - 154.78).abs() < 0.01, "{}", t.stddev);
        assert_eq!(Throughput::from_seconds(10, &[2.0, 1.0, 4.0]).median, 5.0);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = peak_rss_bytes().expect("VmHWM in /proc/self/status");
            // A test binary maps its code and the test harness: at least a megabyte, below a terabyte.
            assert!((1 << 20..1 << 40).contains(&rss), "{rss}");
        }
    }
}
