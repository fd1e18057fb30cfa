//! Perplexity of the real models equals llama.cpp's on the same weights (llama.cpp's numbers:
//! ../shared/baselines/llama-cpp.md and scripts/golden/README.md, `llama-perplexity -c 512
//! --chunks 12` on the weights dequantized to F32).

use lowbit_eval::{perplexity, PerplexityOptions};
use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, Model};
use lowbit_runtime::tokenizer::Tokenizer;

fn corpus() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/wiki.test.raw");
    std::fs::read_to_string(path)
        .expect("../shared/data/wiki.test.raw (the evaluation corpus) must be beside the repository")
}

/// PPL on the first 12 chunks of WikiText-2 at ctx 512, and the running values.
fn ppl_12_chunks(model_file: &str) -> Option<(f64, Vec<f64>)> {
    let path = lowbit_testdata::model(model_file)?;
    let source = ModelSource::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(source.gguf().unwrap()).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    let tokens = tok.encode(&corpus(), tok.adds_bos()).unwrap();
    let opts =
        PerplexityOptions { ctx: 512, max_chunks: Some(12), bos: tok.adds_bos().then(|| tok.bos_id()).flatten() };
    let r = perplexity(&model, None, &tokens, &opts, |_| {}).unwrap();
    assert_eq!((r.chunks, r.tokens_scored), (12, 12 * 255));
    eprintln!("{model_file}: PPL {:.4} ({:.1} tokens/s)", r.ppl, r.tokens_per_second);
    Some((r.ppl, r.running_ppl))
}

#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    let Some((ppl, running)) = ppl_12_chunks(lowbit_testdata::SMOLLM2) else { return };
    // llama.cpp F32: 27.104 on 12 chunks; the bar is 0.3%.
    assert!((ppl / 27.104 - 1.0).abs() < 0.003, "PPL {ppl} vs llama.cpp 27.104");
    // The first chunk alone pins the chunking and BOS rule (llama.cpp prints [1]12.9550).
    assert!((running[0] / 12.9550 - 1.0).abs() < 0.003, "chunk 1 PPL {}", running[0]);
}

#[test]
fn gemma3_perplexity_matches_llama_cpp() {
    let Some((ppl, _)) = ppl_12_chunks(lowbit_testdata::GEMMA3) else { return };
    // llama.cpp F32: 20.9515 on 12 chunks; the bar is 0.5%.
    assert!((ppl / 20.9515 - 1.0).abs() < 0.005, "PPL {ppl} vs llama.cpp 20.9515");
}
