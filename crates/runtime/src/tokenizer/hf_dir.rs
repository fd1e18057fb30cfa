//! Hugging Face tokenizer directories: `tokenizer.json` plus the side files `transformers` reads.

use std::path::Path;

use serde_json::{json, Value};

use super::{Parts, Result, Tokenizer, TokenizerError};

const TOKENIZER_JSON: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
const GENERATION_CONFIG: &str = "generation_config.json";

fn read_json(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TokenizerError::Io { path: path.to_path_buf(), source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })
}

fn invalid(path: &Path, what: String) -> TokenizerError {
    TokenizerError::Invalid { path: path.to_path_buf(), what }
}

pub(super) fn load(dir: &Path) -> Result<Parts> {
    let tokenizer_path = dir.join(TOKENIZER_JSON);
    let inner = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|source| {
        // `from_file` folds a missing file into its own error type; keep the I/O error visible.
        match std::fs::metadata(&tokenizer_path) {
            Err(io) => TokenizerError::Io { path: tokenizer_path.clone(), source: io },
            Ok(_) => TokenizerError::Build { path: tokenizer_path.clone(), source },
        }
    })?;

    let config_path = dir.join(TOKENIZER_CONFIG);
    let config = read_json(&config_path)?.unwrap_or(Value::Null);
    let token_id = |key: &str| -> Result<Option<u32>> {
        let text = match config.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.as_str(),
            // Older configs store the AddedToken object.
            Some(Value::Object(o)) => o
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&config_path, format!("{key}: object without a string \"content\"")))?,
            Some(other) => return Err(invalid(&config_path, format!("{key}: expected a string, found {other}"))),
        };
        inner
            .token_to_id(text)
            .map(Some)
            .ok_or_else(|| invalid(&config_path, format!("{key} {text:?} is not in the vocabulary")))
    };
    let bos = token_id("bos_token")?;
    let eos = token_id("eos_token")?;

    let adds_bos = match config.get("add_bos_token") {
        Some(Value::Bool(b)) => *b && bos.is_some(),
        Some(other) if !other.is_null() => {
            return Err(invalid(&config_path, format!("add_bos_token: expected a bool, found {other}")))
        }
        // No explicit flag: the rule lives in tokenizer.json's post-processor, so ask it.
        _ => match bos {
            Some(bos) => {
                let probe = inner
                    .encode_fast("", true)
                    .map_err(|source| TokenizerError::Build { path: tokenizer_path.clone(), source })?;
                probe.get_ids().first() == Some(&bos)
            }
            None => false,
        },
    };

    let chat_template = match config.get("chat_template") {
        None | Some(Value::Null) => read_template_file(&dir.join(CHAT_TEMPLATE_FILE))?,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(named)) => Some(default_named_template(named).ok_or_else(|| {
            invalid(&config_path, "chat_template: a list without a template named \"default\"".into())
        })?),
        Some(other) => return Err(invalid(&config_path, format!("chat_template: expected a string, found {other}"))),
    };

    // Added tokens may extend the model's id range; `get_vocab_size(true)` would clone everything.
    let added = inner.get_added_tokens_decoder();
    let vocab_size = added.keys().map(|&id| id as usize + 1).fold(inner.get_vocab_size(false), usize::max);
    let mut special = vec![false; vocab_size];
    for (id, token) in added {
        special[id as usize] = token.special;
    }

    let mut parts = Parts { inner, bos, eos, adds_bos, special, chat_template, extra_eos: Vec::new(), vocab_size };
    add_generation_eos(&mut parts, &dir.join(GENERATION_CONFIG))?;
    Ok(parts)
}

fn read_template_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io { path: path.to_path_buf(), source }),
    }
}

/// transformers' list form: `[{"name": "default", "template": ...}, {"name": "tool_use", ...}]`.
fn default_named_template(named: &[Value]) -> Option<String> {
    named
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
        .and_then(|t| t.get("template"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `generation_config.json` may list several EOS ids (GPT-OSS: `<|return|>` and `<|endoftext|>`);
/// generation must stop at all of them. The declared EOS, if none came from the tokenizer config,
/// is the first one.
fn add_generation_eos(parts: &mut Parts, path: &Path) -> Result<()> {
    let Some(config) = read_json(path)? else { return Ok(()) };
    let ids: Vec<&Value> = match config.get("eos_token_id") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(ids)) => ids.iter().collect(),
        Some(one) => vec![one],
    };
    let vocab_size = parts.special.len();
    for value in ids {
        let id = value.as_u64().filter(|&id| id < vocab_size as u64).ok_or_else(|| {
            invalid(path, format!("eos_token_id {value} is not an id in a vocabulary of {vocab_size}"))
        })? as u32;
        parts.special[id as usize] = true;
        if parts.eos.is_none() {
            parts.eos = Some(id);
        } else {
            parts.extra_eos.push(id);
        }
    }
    Ok(())
}

pub(super) fn save(tok: &Tokenizer, dir: &Path) -> Result<()> {
    let tokenizer_path = dir.join(TOKENIZER_JSON);
    tok.inner.save(&tokenizer_path, false).map_err(|source| TokenizerError::Build { path: tokenizer_path, source })?;

    let text = |id: Option<u32>| id.and_then(|id| tok.token_text(id));
    let mut config = json!({
        "add_bos_token": tok.adds_bos,
        "add_eos_token": false,
        "bos_token": text(tok.bos),
        "eos_token": text(tok.eos),
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(template) = &tok.chat_template {
        config["chat_template"] = Value::String(template.clone());
    }
    let config_path = dir.join(TOKENIZER_CONFIG);
    let body = serde_json::to_string_pretty(&config)
        .map_err(|source| TokenizerError::Json { path: config_path.clone(), source })?;
    std::fs::write(&config_path, body).map_err(|source| TokenizerError::Io { path: config_path, source })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{Tokenizer, TokenizerError};

    /// A word-level tokenizer.json whose post-processor prepends `<s>`, as Llama's does.
    const TOKENIZER_JSON: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 4, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"<s>": 0, "</s>": 1, "hello": 2, "world": 3}, "unk_token": "</s>"}
    }"#;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str, files: &[(&str, &str)]) -> Dir {
        let path = std::env::temp_dir().join(format!("lowbit-hf-dir-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        for (file, body) in files {
            std::fs::write(path.join(file), body).unwrap();
        }
        Dir(path)
    }

    #[test]
    fn reads_the_files_transformers_reads() {
        let d = dir(
            "full",
            &[
                ("tokenizer.json", TOKENIZER_JSON),
                (
                    "tokenizer_config.json",
                    r#"{"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
                        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
                ),
                ("generation_config.json", r#"{"eos_token_id": [1, 4]}"#),
            ],
        );
        let tok = Tokenizer::from_hf_dir(&d.0).unwrap();
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
        // No add_bos_token: the post-processor's template decides.
        assert!(tok.adds_bos());
        assert_eq!(tok.encode("hello world", true).unwrap(), [0, 2, 3]);
        assert_eq!(tok.encode("hello <|end|>", false).unwrap(), [2, 4]);
        assert_eq!(tok.eos_ids(), [1, 4]);
        assert!(tok.is_special(4) && !tok.is_special(2));
        assert_eq!(tok.vocab_size(), 5);
        assert_eq!(tok.chat_template(), Some("D"));
    }

    #[test]
    fn explicit_flags_and_the_template_file() {
        let d = dir(
            "flags",
            &[
                ("tokenizer.json", TOKENIZER_JSON),
                ("tokenizer_config.json", r#"{"bos_token": "<s>", "add_bos_token": false}"#),
                ("chat_template.jinja", "{{ messages }}"),
            ],
        );
        let tok = Tokenizer::from_hf_dir(&d.0).unwrap();
        assert!(!tok.adds_bos());
        assert_eq!(tok.encode("hello", true).unwrap(), [2]);
        assert_eq!(tok.chat_template(), Some("{{ messages }}"));
        assert!(tok.eos_ids().is_empty());
    }

    #[test]
    fn bad_directories_are_typed_errors() {
        let d = dir("missing", &[]);
        assert!(matches!(Tokenizer::from_hf_dir(&d.0), Err(TokenizerError::Io { .. })));

        let d = dir(
            "badbos",
            &[("tokenizer.json", TOKENIZER_JSON), ("tokenizer_config.json", r#"{"bos_token": "<nope>"}"#)],
        );
        let e = Tokenizer::from_hf_dir(&d.0).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json") && e.contains("<nope>"), "{e}");

        let d = dir("badjson", &[("tokenizer.json", TOKENIZER_JSON), ("tokenizer_config.json", "{")]);
        assert!(matches!(Tokenizer::from_hf_dir(&d.0), Err(TokenizerError::Json { .. })));

        let d =
            dir("badeos", &[("tokenizer.json", TOKENIZER_JSON), ("generation_config.json", r#"{"eos_token_id": 99}"#)]);
        let e = Tokenizer::from_hf_dir(&d.0).unwrap_err().to_string();
        assert!(e.contains("generation_config.json") && e.contains("99"), "{e}");
    }
}
