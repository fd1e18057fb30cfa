//! Rough end-to-end speed of a GGUF model or lowbit native directory run natively (`GroupFactory`, which
//! hands GGUF blocks to `NativeFactory`) or dequantized to f32 (`F32Factory`), measured like
//! llama-bench's pp512 / tg128: a 512-token prefill into an empty cache, then 128 greedy decode steps
//! after a short prompt.
//!
//!     cargo run --release -p lowbit-model --example native_decode -- [MODEL.gguf|DIR] [--f32] [-t THREADS]
//!
//! MODEL defaults to SmolLM2 in the test-model cache (`lowbit_testdata`). Runs 3 repetitions of each and
//! prints the median.

use std::time::Instant;

use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, GroupFactory, LinearFactory, Logits, Model};
use lowbit_testdata::Rng;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = args.iter().position(|a| a == "-t").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2);
    lowbit_kernels::set_threads(threads);
    let f32 = args.iter().any(|a| a == "--f32");
    let path = match args.iter().find(|a| a.ends_with(".gguf") || std::path::Path::new(a).is_dir()) {
        Some(p) => p.into(),
        None => lowbit_testdata::model(lowbit_testdata::SMOLLM2).expect("no model given and SmolLM2 not found"),
    };
    let source = ModelSource::open(&path).expect("opening the model");
    let native = GroupFactory::new(&source);
    let factory: &dyn LinearFactory = if f32 { &F32Factory } else { &native };
    let start = Instant::now();
    let model = Model::load(&source, factory).expect("loading the model");
    println!(
        "{} ({}), {threads} threads: loaded in {:.2} s, {:.1} MB of weights",
        path.display(),
        if f32 { "f32" } else { "native" },
        start.elapsed().as_secs_f64(),
        model.weight_bytes() as f64 / 1e6
    );
    let vocab = model.config.vocab_size as u32;

    // pp512: token ids from a fixed xorshift stream (the speed does not depend on the text).
    let mut r = Rng::new(1);
    let prompt: Vec<u32> = (0..512).map(|_| r.below(u64::from(vocab)) as u32).collect();
    let mut pp = Vec::new();
    for _ in 0..3 {
        let mut cache = model.new_cache(512).unwrap();
        let start = Instant::now();
        model.forward(&prompt, &mut cache, Logits::Last).unwrap();
        pp.push(512.0 / start.elapsed().as_secs_f64());
    }

    // tg128: "The capital of France is" (SmolLM2's ids), then 128 greedy steps.
    let mut tg = Vec::new();
    let mut text = Vec::new();
    for _ in 0..3 {
        let mut cache = model.new_cache(256).unwrap();
        let mut logits = model.forward(&[504, 3575, 282, 4649, 314], &mut cache, Logits::Last).unwrap();
        text.clear();
        let start = Instant::now();
        for _ in 0..128 {
            let next = argmax(&logits);
            text.push(next);
            logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
        }
        tg.push(128.0 / start.elapsed().as_secs_f64());
    }
    println!("pp512 {:.1} t/s   tg128 {:.1} t/s   (median of 3: {pp:.1?} / {tg:.1?})", median(&pp), median(&tg));
    println!("first greedy ids: {:?}", &text[..16]);
}

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
