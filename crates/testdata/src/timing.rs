//! Timing for benches that stays fair between the functions compared on a machine shared with other
//! processes.

use std::hint::black_box;
use std::time::Instant;

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
