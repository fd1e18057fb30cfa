//! One decode step of several sequences at once (`Model::decode_batch`) gives each sequence the logits a step of
//! its own gives, and leaves each cache as that step would: GPT-OSS's tiny fixture (sliding window, attention
//! sinks, a mixture of experts) and SmolLM2 on its integer kernels, sequences at different positions.

use std::path::Path;

use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, KvCache, LinearFactory, Logits, Model, NativeFactory};

fn prompts(vocab: u32) -> Vec<Vec<u32>> {
    // Lengths around GPT-OSS's sliding window of the fixture, so sequences sit on both sides of it.
    [3usize, 17, 40]
        .iter()
        .enumerate()
        .map(|(s, &n)| (0..n as u32).map(|i| (i * 37 + 11 * s as u32 + 5) % vocab).collect())
        .collect()
}

fn check(model: &Model) {
    let vocab = model.config.vocab_size;
    let prompts = prompts(vocab.min(500) as u32);
    let prefill = |p: &[u32]| -> KvCache {
        let mut cache = model.new_cache(64).unwrap();
        model.forward(p, &mut cache, Logits::Last).unwrap();
        cache
    };
    let next: Vec<u32> = (0..prompts.len() as u32).map(|i| 100 + 7 * i).collect();
    let mut batched: Vec<KvCache> = prompts.iter().map(|p| prefill(p)).collect();
    // Two steps, so the second reads what the first wrote into each cache.
    for step in 0..2 {
        let mut caches: Vec<&mut KvCache> = batched.iter_mut().collect();
        let tokens: Vec<u32> = next.iter().map(|t| t + step).collect();
        let together = model.decode_batch(&tokens, &mut caches).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let mut alone = prefill(p);
            let mut want = Vec::new();
            for s in 0..=step {
                want = model.forward(&[next[i] + s], &mut alone, Logits::Last).unwrap();
            }
            let got = &together[i * vocab..(i + 1) * vocab];
            let mag = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want.iter().zip(got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 1e-4 * mag, "sequence {i}, step {step}: {worst} of {mag}");
            assert_eq!(batched[i].len(), alone.len());
        }
    }
}

fn load(path: &Path, factory: &dyn LinearFactory) -> Model {
    Model::load(&ModelSource::open(path).unwrap(), factory).unwrap()
}

#[test]
fn gpt_oss_sequences_decode_together_as_alone() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/gpt-oss-tiny/tiny_mxfp4");
    check(&load(&fixture, &F32Factory));
}

#[test]
fn smollm2_sequences_decode_together_as_alone() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    check(&load(&path, &NativeFactory::default()));
}
