//! The o200k_harmony tokenizer lowbit builds (a byte-level BPE in the `tokenizers` crate) against tiktoken's
//! own encoder for it (`tiktoken-rs`, an independent BPE implementation over the same ranks), and its special
//! tokens against the released GPT-OSS-20B tokenizer_config.json.

use lowbit_formats::gguf::{GgufFile, Value};
use lowbit_formats::gguf_write::GgufWriter;
use lowbit_runtime::tokenizer::Tokenizer;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/gpt-oss-20b");

fn texts() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tokenizer_strings.json");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut texts: Vec<String> = serde_json::from_value(file["strings"].clone()).unwrap();
    texts.extend(
        [
            "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>",
            "CamelCaseWords and SHOUTING, don't we'll I'M they'RE",
            "numbers 1234567 3.14159 -42 1e-9, paths /usr/local/bin\r\n\ttabs   and    spaces  ",
            "日本語のテキスト、中文文本，한국어 텍스트 — emoji 🦀🚀 and combining é (e\u{301})",
            "fn main() {\n    println!(\"{}\", x?);\n}\n\n\n",
        ]
        .map(String::from),
    );
    texts
}

#[test]
fn encodes_as_tiktoken_does() {
    let ours = Tokenizer::o200k_harmony(None).unwrap();
    let theirs = tiktoken_rs::o200k_harmony().unwrap();
    let texts = texts();
    assert!(texts.len() > 20);
    for text in &texts {
        let want: Vec<u32> = theirs.encode_with_special_tokens(text);
        let got = ours.encode(text, true).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(ours.decode(&got).unwrap(), *text);
    }
}

/// The vocabulary lowbit writes into GPT-OSS GGUF files (`tokenizer.ggml.*`, pre-tokenizer "gpt-4o"), read back by
/// the GGUF tokenizer, still encodes as tiktoken does and keeps the special tokens.
#[test]
fn its_gguf_vocabulary_encodes_as_tiktoken_does() {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("gpt-oss".into())).unwrap();
    Tokenizer::o200k_harmony_gguf(Some("{{ messages }}".into())).unwrap().write_metadata(&mut w).unwrap();
    let path = std::env::temp_dir().join(format!("lowbit-o200k-{}.gguf", std::process::id()));
    w.write(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let ours = Tokenizer::from_gguf(&file);
    std::fs::remove_file(&path).unwrap();
    let ours = ours.unwrap();
    let theirs = tiktoken_rs::o200k_harmony().unwrap();
    for text in &texts() {
        let got = ours.encode(text, true).unwrap();
        assert_eq!(got, theirs.encode_with_special_tokens(text), "{text:?}");
        assert_eq!(ours.decode(&got).unwrap(), *text);
    }
    assert_eq!(ours.vocab_size(), 201_088);
    assert_eq!((ours.bos_id(), ours.eos_id(), ours.adds_bos()), (Some(199_998), Some(200_002), false));
    assert!(ours.is_special(200_012) && ours.eos_ids().contains(&200_012));
    assert_eq!(ours.chat_template(), Some("{{ messages }}"));
}

#[test]
fn special_tokens_are_the_releases() {
    let tok = Tokenizer::o200k_harmony(None).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{REFERENCE}/tokenizer_config.json")).unwrap()).unwrap();
    let added = config["added_tokens_decoder"].as_object().unwrap();
    assert_eq!(added.len(), 21);
    for (id, token) in added {
        let id: u32 = id.parse().unwrap();
        assert_eq!(tok.token_text(id).as_deref(), token["content"].as_str(), "id {id}");
        assert!(tok.is_special(id));
    }
    // The harmony encoding's reserved ids fill the vocabulary up to the embedding's 201088 rows.
    assert_eq!(tok.vocab_size(), 201_088);
    assert_eq!(tok.token_text(201_087).as_deref(), Some("<|reserved_201087|>"));
    assert!(tok.is_special(201_087));
    assert_eq!(tok.bos_id(), Some(199_998));
    assert_eq!(tok.eos_id(), Some(200_002));
    assert!(tok.eos_ids().contains(&200_012), "<|call|> ends a turn");
    assert!(!tok.adds_bos());
}
