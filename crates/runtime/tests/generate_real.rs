//! Greedy generation on the real models equals llama.cpp's (crates/model/tests/data/
//! llamacpp_greedy.json: llama-server, temperature 0 / top-k 1, on the same weights in F32),
//! from the same prompt ids and from our own tokenization and chat template.

use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, Model};
use lowbit_runtime::chat_template::{ChatMessage, ChatTemplate};
use lowbit_runtime::generate::{generate, FinishReason, GenerateOptions};
use lowbit_runtime::sampler::SamplingParams;
use lowbit_runtime::tokenizer::Tokenizer;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../model/tests/data/llamacpp_greedy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: n, sampling: SamplingParams::default(), stop: vec![], ctx: 512 }
}

/// Every recorded prompt of `key`: our tokenization equals llama.cpp's prompt ids, and our
/// greedy continuation equals llama.cpp's token for token (its list ends with EOS when it
/// stopped there; ours reports EOS as the finish reason instead).
fn check_model(key: &str, model_file: &str) {
    let Some(path) = lowbit_testdata::model(model_file) else { return };
    let fx = fixture();
    let source = ModelSource::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(source.gguf().unwrap()).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    for r in fx["models"][key]["results"].as_array().unwrap() {
        let prompt_ids = ids(&r["prompt_ids"]);
        let prompt = r["prompt"].as_str().unwrap();
        let ours = tok.encode(prompt, tok.adds_bos()).unwrap();
        if r["kind"] == "plain" {
            assert_eq!(ours, prompt_ids, "{key}: tokenization of {prompt:?}");
        }
        let mut want = ids(&r["generated_ids"]);
        let stopped_on_eos = r["stop_type"] == "eos";
        if stopped_on_eos {
            want.pop();
        }
        let out = generate(&model, &tok, &prompt_ids, &greedy(32), &mut |_| {}).unwrap();
        assert_eq!(out.tokens, want, "{key}: greedy continuation of {prompt:?}");
        assert_eq!(out.finish == FinishReason::Eos, stopped_on_eos, "{key}: finish of {prompt:?}");
        assert_eq!(out.text, r["generated_text"].as_str().unwrap(), "{key}: text of {prompt:?}");
    }
}

#[test]
fn smollm2_greedy_equals_llama_cpp() {
    check_model("smollm2", lowbit_testdata::SMOLLM2);
}

#[test]
fn gemma3_greedy_equals_llama_cpp() {
    check_model("gemma3", lowbit_testdata::GEMMA3);
}

#[test]
fn smollm2_chat_answers_paris() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let source = ModelSource::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(source.gguf().unwrap()).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    let template = ChatTemplate::from_tokenizer(&tok).unwrap().expect("SmolLM2 ships a chat template");
    let prompt =
        template.render(&[ChatMessage::new("user", "What is the capital of France?")], true, &Default::default());
    let prompt = tok.encode(&prompt.unwrap(), false).unwrap();
    // The same prompt ids as llama-server rendered with its --jinja template.
    let fx = fixture();
    let chat = fx["models"]["smollm2"]["results"].as_array().unwrap().iter().find(|r| r["kind"] == "chat").unwrap();
    assert_eq!(prompt, ids(&chat["prompt_ids"]));
    let out = generate(&model, &tok, &prompt, &greedy(32), &mut |_| {}).unwrap();
    assert_eq!(out.text, "The capital of France is Paris.");
    assert_eq!(out.finish, FinishReason::Eos);
}
