//! Tokenizers built from real GGUF files must give llama.cpp's ids (goldens from `llama-tokenize`,
//! scripts/golden/gen_token_ids.py), decode back to the input, and stream the same text.
//!
//! The model files are read from $LOWBIT_MODELS (default ~/.cache/lowbit/models); tests skip
//! with a message when a file is absent. llama.cpp's own vocabulary test files
//! (`models/ggml-vocab-*.gguf` with `.inp`/`.out` made by Hugging Face tokenizers) are read from
//! $LOWBIT_LLAMA_VOCABS (default: the llama.cpp source that shared/tools/llama-cpp-peer.sh
//! unpacks).

use std::path::{Path, PathBuf};
use std::time::Instant;

use lowbit_formats::gguf::GgufFile;
use lowbit_runtime::tokenizer::{StreamDecoder, Tokenizer};
use serde::Deserialize;

use lowbit_testdata::{GEMMA3, SMOLLM2};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn load(name: &str) -> Option<Tokenizer> {
    let path = lowbit_testdata::model(name)?;
    let file = GgufFile::open(&path).unwrap();
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    eprintln!("{name}: vocabulary converted in {:.2?}", start.elapsed());
    Some(tok)
}

fn strings() -> Vec<String> {
    #[derive(Deserialize)]
    struct Strings {
        strings: Vec<String>,
    }
    let text = std::fs::read_to_string(data_dir().join("tokenizer_strings.json")).unwrap();
    serde_json::from_str::<Strings>(&text).unwrap().strings
}

fn golden_ids(key: &str) -> Vec<Vec<u32>> {
    #[derive(Deserialize)]
    struct Ids {
        ids: Vec<Vec<u32>>,
    }
    let text = std::fs::read_to_string(data_dir().join(format!("tokenizer_ids_{key}.json"))).unwrap();
    serde_json::from_str::<Ids>(&text).unwrap().ids
}

/// Every golden string: ids equal llama.cpp's (which include BOS when the model adds it), ids
/// without BOS when it is not asked for, decode restores the text, and streaming gives the same.
fn check_against_llama_cpp(tok: &Tokenizer, key: &str, lossless: impl Fn(&str) -> bool) {
    let strings = strings();
    let golden = golden_ids(key);
    assert_eq!(strings.len(), golden.len(), "{key}: strings and ids out of step; rerun gen_token_ids.py");
    let mut failures = Vec::new();
    for (s, want) in strings.iter().zip(&golden) {
        let got = tok.encode(s, true).unwrap();
        if &got != want {
            failures.push(format!("{s:?}\n  llama.cpp {want:?}\n  lowbit    {got:?}"));
            continue;
        }
        let without_bos = tok.encode(s, false).unwrap();
        let bos_len = usize::from(tok.adds_bos());
        assert_eq!(without_bos[..], want[bos_len..], "{s:?} without BOS");
        if lossless(s) {
            assert_eq!(&tok.decode(&without_bos).unwrap(), s, "decode(encode(s)) for {s:?}");
        }
        let mut stream = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &without_bos {
            if let Some(piece) = stream.push(tok, id).unwrap() {
                assert!(
                    !piece.contains('\u{FFFD}') || s.contains('\u{FFFD}'),
                    "{s:?}: piece {piece:?} split a character"
                );
                streamed.push_str(&piece);
            }
        }
        streamed.extend(stream.flush(tok).unwrap());
        assert_eq!(streamed, tok.decode(&without_bos).unwrap(), "streamed text for {s:?}");
    }
    assert!(
        failures.is_empty(),
        "{key}: {} of {} strings differ:\n{}",
        failures.len(),
        strings.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(tok) = load(SMOLLM2) else { return };
    check_against_llama_cpp(&tok, "smollm2", |_| true);
}

#[test]
fn gemma3_matches_llama_cpp() {
    let Some(tok) = load(GEMMA3) else { return };
    // The normalizer turns spaces into U+2581 and the decoder turns U+2581 back into spaces, so a
    // text that already holds U+2581 cannot come back unchanged (llama.cpp behaves the same).
    check_against_llama_cpp(&tok, "gemma3", |s| !s.contains('\u{2581}'));
}

#[test]
fn smollm2_metadata() {
    let Some(tok) = load(SMOLLM2) else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    // <|im_end|> is the declared EOS; <|endoftext|> also ends generation in llama.cpp.
    assert_eq!(tok.eos_ids(), &[2, 0]);
    assert!(!tok.adds_bos());
    assert_eq!(tok.encode("Hi", true).unwrap(), tok.encode("Hi", false).unwrap());
    assert!(tok.is_special(1) && tok.is_special(16) && !tok.is_special(17) && !tok.is_special(49151));
    assert!(!tok.is_special(u32::MAX));
    assert_eq!(tok.token_text(1).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));
}

#[test]
fn gemma3_metadata() {
    let Some(tok) = load(GEMMA3) else { return };
    assert_eq!(tok.vocab_size(), 262144);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.token_text(106).as_deref(), Some("<end_of_turn>"));
    assert_eq!(tok.eos_ids(), &[1, 106]);
    assert!(tok.adds_bos());
    assert_eq!(tok.encode("", true).unwrap(), vec![2]);
    assert!(tok.is_special(0) && tok.is_special(106) && !tok.is_special(107) && !tok.is_special(300));
    assert_eq!(tok.token_text(248).as_deref(), Some("<0x0A>"));
    assert!(tok.chat_template().is_none());
}

#[test]
fn decode_rejects_ids_outside_the_vocabulary() {
    let Some(tok) = load(SMOLLM2) else { return };
    assert!(tok.decode(&[1, 49152]).is_err());
    let mut stream = StreamDecoder::new();
    assert!(stream.push(&tok, 1 << 30).is_err());
}

#[test]
fn stream_holds_back_byte_tokens_until_the_character_is_complete() {
    let Some(tok) = load(GEMMA3) else { return };
    let bytes = |b: &[u8]| -> Vec<u32> {
        b.iter().map(|b| tok.token_id(&format!("<0x{b:02X}>")).expect("Gemma has all 256 byte tokens")).collect()
    };
    let hello = tok.encode("Hello", false).unwrap();
    let mut ids = hello.clone();
    ids.extend(bytes("€".as_bytes()));
    ids.extend(bytes("😀".as_bytes()));
    ids.extend(tok.encode(" ok", false).unwrap());

    let mut stream = StreamDecoder::new();
    let pieces: Vec<Option<String>> = ids.iter().map(|&id| stream.push(&tok, id).unwrap()).collect();
    let n = hello.len();
    assert_eq!(pieces[n..n + 3], [None, None, Some("€".to_string())]);
    assert_eq!(pieces[n + 3..n + 7], [None, None, None, Some("😀".to_string())]);
    assert_eq!(pieces.iter().flatten().cloned().collect::<String>(), "Hello€😀 ok");
    assert_eq!(stream.flush(&tok).unwrap(), None);

    // An unfinished character is released by flush as U+FFFD, the way decode renders it.
    let mut stream = StreamDecoder::new();
    let partial = bytes(&"€".as_bytes()[..2]);
    assert!(partial.iter().all(|&id| stream.push(&tok, id).unwrap().is_none()));
    assert_eq!(stream.flush(&tok).unwrap(), Some(tok.decode(&partial).unwrap()));
}

#[test]
fn stream_with_context_keeps_the_first_tokens_space() {
    let Some(tok) = load(SMOLLM2) else { return };
    let prompt = tok.encode("The capital of France is", false).unwrap();
    let answer = tok.encode(" Paris, of course.", false).unwrap();
    let mut stream = StreamDecoder::with_context(&tok, &prompt).unwrap();
    let text: String = answer.iter().filter_map(|&id| stream.push(&tok, id).unwrap()).collect();
    assert_eq!(text, " Paris, of course.");
}

#[test]
fn hf_dir_round_trip_gives_the_same_tokenizer() {
    for (name, key) in [(SMOLLM2, "smollm2"), (GEMMA3, "gemma3")] {
        let Some(tok) = load(name) else { continue };
        let dir = std::env::temp_dir().join(format!("lowbit-tokenizer-{key}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        tok.save_hf_dir(&dir).unwrap();
        let back = Tokenizer::from_hf_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(back.vocab_size(), tok.vocab_size(), "{key}");
        assert_eq!(
            (back.bos_id(), back.eos_id(), back.adds_bos()),
            (tok.bos_id(), tok.eos_id(), tok.adds_bos()),
            "{key}"
        );
        assert_eq!(back.eos_ids(), tok.eos_ids(), "{key}");
        assert_eq!(back.chat_template(), tok.chat_template(), "{key}");
        for id in 0..tok.vocab_size() as u32 {
            assert_eq!(back.is_special(id), tok.is_special(id), "{key}: is_special({id})");
        }
        for (s, want) in strings().iter().zip(golden_ids(key)) {
            assert_eq!(back.encode(s, true).unwrap(), want, "{key}: {s:?} after save/load");
        }
    }
}

/// llama.cpp's tokenizer test vocabularies; each `.out` line holds the ids Hugging Face
/// tokenizers gave for the matching `.inp` text (without BOS).
#[test]
fn llama_cpp_vocab_tests() {
    let dir = std::env::var_os("LOWBIT_LLAMA_VOCABS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/models")
    });
    if !dir.join("ggml-vocab-gpt-2.gguf").exists() {
        eprintln!("skipping: no llama.cpp vocabularies in {} (set LOWBIT_LLAMA_VOCABS)", dir.display());
        return;
    }
    let vocabs = ["gpt-2", "starcoder", "refact", "command-r", "llama-bpe", "qwen2", "mpt", "llama-spm", "phi-3"];
    let mut failures = Vec::new();
    for vocab in vocabs {
        let path = dir.join(format!("ggml-vocab-{vocab}.gguf"));
        let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_or_else(|e| panic!("{vocab}: {e}"));
        for (text, want) in vocab_cases(&path) {
            let got = tok.encode(&text, false).unwrap();
            if got != want {
                failures.push(format!("{vocab}: {text:?}\n  expected {want:?}\n  lowbit   {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} cases differ:\n{}", failures.len(), failures.join("\n"));
}

/// The `.inp`/`.out` pair of a vocabulary, split the way llama.cpp's test-tokenizer-0 splits it.
fn vocab_cases(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).unwrap();
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let texts = &texts[..texts.len() - usize::from(texts.last() == Some(&""))];
    let ids: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{}", gguf.display());
    texts.iter().map(|t| t.to_string()).zip(ids).collect()
}
