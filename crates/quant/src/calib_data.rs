//! Calibration data: token windows of a text, sampled with a seed, checked before any work starts.
//!
//! The text comes from a plain file, or from JSON Lines whose objects carry a `"text"` field (documents
//! joined by a blank line) or already tokenized `"input_ids"` (with an optional `"tokenizer_sha256"`, the
//! [fingerprint](TokenizerInfo::fingerprint) of the tokenizer that made them, checked against the model's).
//! Text is tokenized once with the model's own tokenizer; each sample is a window
//! of `seq_len` consecutive tokens at a start drawn uniformly with a seeded generator (GPTQ's and AWQ's
//! sampling), so the same file, spec and tokenizer always give the same set. When the tokenizer adds a
//! beginning-of-sequence token, each window begins with it, as the model sees text at inference (and as
//! llama.cpp's imatrix and perplexity tools do). The file's SHA-256 and the spec are recorded with the
//! quantized model.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// How many windows of how many tokens, drawn with which seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CalibSpec {
    pub samples: usize,
    pub seq_len: usize,
    pub seed: u64,
}

impl Default for CalibSpec {
    /// GPTQ's and AWQ's customary 128 windows of 512 tokens.
    fn default() -> Self {
        CalibSpec { samples: 128, seq_len: 512, seed: 0 }
    }
}

/// What the quantization config records about the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CalibRecord {
    /// The file's name (not its path: the record travels with the model).
    pub file: String,
    pub sha256: String,
    /// Tokens in the whole tokenized text.
    pub tokens: usize,
    #[serde(flatten)]
    pub spec: CalibSpec,
}

/// The sampled windows and their record.
#[derive(Clone, Debug)]
pub struct CalibSet {
    pub samples: Vec<Vec<u32>>,
    pub record: CalibRecord,
}

/// The model's tokenizer, as calibration needs it.
pub struct TokenizerInfo<'a> {
    pub vocab: usize,
    /// The token each window starts with, when the tokenizer adds one.
    pub bos: Option<u32>,
    /// SHA-256 (hex) of the tokenizer's vocabulary, so that pre-tokenized data names its tokenizer.
    pub fingerprint: String,
    /// Text to ids, without special tokens.
    pub tokenize: &'a dyn Fn(&str) -> Result<Vec<u32>, String>,
}

/// A calibration file's content.
#[derive(Clone, Debug, PartialEq)]
pub enum CalibData {
    Text(String),
    /// Already tokenized, by the tokenizer of this fingerprint when the file names one.
    Tokens {
        ids: Vec<u32>,
        tokenizer: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("calibration file {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("calibration file {path} has no text")]
    Empty { path: String },
    #[error("calibration file {path}, line {line}: {what}")]
    Jsonl { path: String, line: usize, what: String },
    #[error(
        "calibration file {path} is {tokens} tokens long; one sample needs {seq_len} (use a longer text or a smaller --seq-len)"
    )]
    TooShort { path: String, tokens: usize, seq_len: usize },
    #[error("calibration spec: {0}")]
    Spec(String),
    #[error("calibration file {path}: tokenizing failed: {cause}")]
    Tokenize { path: String, cause: String },
    #[error("calibration file {path}: token {token} is outside the model's vocabulary of {vocab}: the data was tokenized for another model")]
    ForeignTokens { path: String, token: u32, vocab: usize },
    #[error("calibration file {path} was tokenized by tokenizer {theirs}, the model's is {ours}")]
    ForeignTokenizer { path: String, theirs: String, ours: String },
}

/// The SHA-256 (hex) of a vocabulary's token texts in id order: names a tokenizer in pre-tokenized data.
pub fn vocabulary_fingerprint(tokens: impl Iterator<Item = String>) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a calibration file: JSON Lines (`.jsonl`) objects' `"text"` or `"input_ids"`, or the whole file as text.
pub fn read(path: &Path) -> Result<CalibData, CalibError> {
    let shown = path.display().to_string();
    let raw = std::fs::read(path).map_err(|cause| CalibError::Io { path: shown.clone(), cause })?;
    let raw = String::from_utf8(raw).map_err(|e| CalibError::Io {
        path: shown.clone(),
        cause: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    let empty = || CalibError::Empty { path: shown.clone() };
    if path.extension().is_none_or(|e| e != "jsonl") {
        return if raw.trim().is_empty() { Err(empty()) } else { Ok(CalibData::Text(raw)) };
    }
    let (mut docs, mut ids, mut tokenizer) = (Vec::new(), Vec::new(), None);
    for (i, line) in raw.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let jsonl = |what: &str| CalibError::Jsonl { path: shown.clone(), line: i + 1, what: what.to_string() };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| jsonl(&e.to_string()))?;
        match (v.get("text"), v.get("input_ids")) {
            (Some(serde_json::Value::String(t)), None) if ids.is_empty() => docs.push(t.clone()),
            (None, Some(serde_json::Value::Array(a))) if docs.is_empty() => {
                for id in a {
                    ids.push(id.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| jsonl("bad token id"))?);
                }
                if let Some(t) = v.get("tokenizer_sha256") {
                    let t = t.as_str().ok_or_else(|| jsonl("tokenizer_sha256 must be a string"))?;
                    if tokenizer.get_or_insert_with(|| t.to_string()) != t {
                        return Err(jsonl("lines name different tokenizers"));
                    }
                }
            }
            _ => return Err(jsonl("every line must be an object with a string \"text\" or an array \"input_ids\"")),
        }
    }
    match docs.is_empty() {
        false if docs.iter().any(|d| !d.trim().is_empty()) => Ok(CalibData::Text(docs.join("\n\n"))),
        true if !ids.is_empty() => Ok(CalibData::Tokens { ids, tokenizer }),
        _ => Err(empty()),
    }
}

/// The calibration set of the file at `path` for the model whose tokenizer is `tok`, windows drawn per `spec`.
/// Every check (empty or short data, foreign tokens) happens here, before any quantization work.
pub fn load(path: &Path, spec: CalibSpec, tok: &TokenizerInfo) -> Result<CalibSet, CalibError> {
    let (tokens, record) = tokenized(path, spec, tok)?;
    let samples = windows(&tokens, spec, tok.bos).ok_or_else(|| too_short(path, &record))?;
    Ok(CalibSet { samples, record })
}

/// llama-imatrix's chunks: the text's first `spec.samples` consecutive windows of `spec.seq_len` tokens (fewer when
/// the text holds fewer; the seed is unused). When the tokenizer adds a beginning-of-sequence token, the text is
/// tokenized with it in front and each window's first token is replaced by it, as llama-imatrix does.
pub fn load_chunks(path: &Path, spec: CalibSpec, tok: &TokenizerInfo) -> Result<CalibSet, CalibError> {
    let (mut tokens, record) = tokenized(path, spec, tok)?;
    if let Some(b) = tok.bos {
        tokens.insert(0, b);
    }
    let n = (tokens.len() / spec.seq_len).min(spec.samples);
    if n == 0 {
        return Err(too_short(path, &record));
    }
    let samples = tokens
        .chunks_exact(spec.seq_len)
        .take(n)
        .map(|c| {
            let mut w = c.to_vec();
            if let Some(b) = tok.bos {
                w[0] = b;
            }
            w
        })
        .collect();
    Ok(CalibSet { samples, record })
}

fn too_short(path: &Path, record: &CalibRecord) -> CalibError {
    CalibError::TooShort { path: path.display().to_string(), tokens: record.tokens, seq_len: record.spec.seq_len }
}

/// The file's tokens, checked, and its record.
fn tokenized(path: &Path, spec: CalibSpec, tok: &TokenizerInfo) -> Result<(Vec<u32>, CalibRecord), CalibError> {
    let shown = path.display().to_string();
    if spec.samples == 0 || spec.seq_len < 2 {
        return Err(CalibError::Spec(format!(
            "{} samples of {} tokens: at least 1 sample of 2 tokens is needed",
            spec.samples, spec.seq_len
        )));
    }
    let (tokens, hashed) = match read(path)? {
        CalibData::Text(text) => {
            let ids = (tok.tokenize)(&text).map_err(|cause| CalibError::Tokenize { path: shown.clone(), cause })?;
            (ids, Sha256::digest(text.as_bytes()))
        }
        CalibData::Tokens { ids, tokenizer } => {
            if let Some(theirs) = tokenizer.filter(|t| *t != tok.fingerprint) {
                return Err(CalibError::ForeignTokenizer { path: shown, theirs, ours: tok.fingerprint.clone() });
            }
            let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
            (ids, Sha256::digest(&bytes))
        }
    };
    if let Some(&token) = tokens.iter().find(|&&t| t as usize >= tok.vocab) {
        return Err(CalibError::ForeignTokens { path: shown, token, vocab: tok.vocab });
    }
    let sha256 = hashed.iter().map(|b| format!("{b:02x}")).collect();
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let record = CalibRecord { file, sha256, tokens: tokens.len(), spec };
    Ok((tokens, record))
}

/// `spec.samples` windows of `spec.seq_len` tokens at seeded uniform starts; `None` when the text is
/// shorter than one window.
fn windows(tokens: &[u32], spec: CalibSpec, bos: Option<u32>) -> Option<Vec<Vec<u32>>> {
    let last_start = tokens.len().checked_sub(spec.seq_len)?;
    let mut rng = SplitMix64(spec.seed);
    let samples = (0..spec.samples)
        .map(|_| {
            let start = (rng.next() % (last_start as u64 + 1)) as usize;
            let mut w = tokens[start..start + spec.seq_len].to_vec();
            if let Some(b) = bos {
                w[0] = b;
            }
            w
        })
        .collect();
    Some(samples)
}

/// A small seeded generator (splitmix64): the sampling must not depend on a library's stream.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Result<Vec<u32>, String> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }

    fn tok(vocab: usize, bos: Option<u32>) -> TokenizerInfo<'static> {
        TokenizerInfo { vocab, bos, fingerprint: "ours".into(), tokenize: &words }
    }

    fn file(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lowbit-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn windows_are_seeded_and_start_with_bos() {
        let text: String = (1..=40).map(|i| "x".repeat(i % 7 + 1) + " ").collect();
        let p = file("plain.txt", &text);
        let spec = CalibSpec { samples: 5, seq_len: 8, seed: 3 };
        let a = load(&p, spec, &tok(100, Some(99))).unwrap();
        let b = load(&p, spec, &tok(100, Some(99))).unwrap();
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.samples.len(), 5);
        let all = words(&text).unwrap();
        for s in &a.samples {
            assert_eq!((s.len(), s[0]), (8, 99));
            // Each window is a run of the token stream (after its first token).
            assert!(all.windows(7).any(|w| w == &s[1..]), "{s:?}");
        }
        let c = load(&p, CalibSpec { seed: 4, ..spec }, &tok(100, Some(99))).unwrap();
        assert_ne!(a.samples, c.samples);
        assert_eq!(a.record.tokens, 40);
        assert_eq!(a.record.sha256.len(), 64);
    }

    #[test]
    fn chunks_are_consecutive_and_start_with_bos() {
        let text: String = (1..=40).map(|i| "x".repeat(i % 7 + 1) + " ").collect();
        let p = file("chunks.txt", &text);
        let all = words(&text).unwrap();
        let spec = CalibSpec { samples: 3, seq_len: 8, seed: 0 };
        // Without BOS: the first three runs of 8 tokens.
        let plain = load_chunks(&p, spec, &tok(100, None)).unwrap();
        assert_eq!(plain.samples, vec![all[0..8].to_vec(), all[8..16].to_vec(), all[16..24].to_vec()]);
        // With BOS: BOS is token 0 of the stream, and replaces the first token of every chunk.
        let bos = load_chunks(&p, spec, &tok(100, Some(99))).unwrap();
        assert_eq!(bos.samples[0], [&[99][..], &all[0..7]].concat());
        assert_eq!(bos.samples[1], [&[99][..], &all[8..15]].concat());
        // Fewer chunks than asked when the text is short; none is an error.
        let many = load_chunks(&p, CalibSpec { samples: 100, ..spec }, &tok(100, None)).unwrap();
        assert_eq!(many.samples.len(), 5);
        let e = load_chunks(&p, CalibSpec { seq_len: 41, ..spec }, &tok(100, None)).unwrap_err();
        assert!(matches!(e, CalibError::TooShort { tokens: 40, seq_len: 41, .. }), "{e}");
    }

    #[test]
    fn bad_data_is_refused_before_work() {
        let spec = CalibSpec { samples: 2, seq_len: 8, seed: 0 };
        let empty = file("empty.txt", " \n\n ");
        assert!(matches!(load(&empty, spec, &tok(100, None)), Err(CalibError::Empty { .. })));
        let short = file("short.txt", "a bb ccc");
        let e = load(&short, spec, &tok(100, None)).unwrap_err();
        assert!(matches!(e, CalibError::TooShort { tokens: 3, seq_len: 8, .. }), "{e}");
        let long = file("long.txt", &"abcdef ".repeat(20));
        let e = load(&long, spec, &tok(5, None)).unwrap_err();
        assert!(matches!(e, CalibError::ForeignTokens { token: 6, vocab: 5, .. }), "{e}");
        assert!(load(&long, CalibSpec { samples: 0, ..spec }, &tok(100, None)).is_err());
        let jsonl = file("bad.jsonl", "{\"text\": \"a b\"}\n{\"body\": 1}\n");
        assert!(matches!(load(&jsonl, spec, &tok(100, None)), Err(CalibError::Jsonl { line: 2, .. })));
    }

    #[test]
    fn jsonl_documents_are_joined() {
        let p = file("docs.jsonl", "{\"text\": \"one two\"}\n\n{\"text\": \"three\"}\n");
        assert_eq!(read(&p).unwrap(), CalibData::Text("one two\n\nthree".into()));
    }

    #[test]
    fn pretokenized_data_must_name_our_tokenizer() {
        let spec = CalibSpec { samples: 1, seq_len: 3, seed: 0 };
        let ids = "{\"input_ids\": [1, 2, 3, 4], \"tokenizer_sha256\": \"TOK\"}\n";
        let ours = file("ours.jsonl", &ids.replace("TOK", "ours"));
        assert_eq!(load(&ours, spec, &tok(10, None)).unwrap().samples[0].len(), 3);
        let theirs = file("theirs.jsonl", &ids.replace("TOK", "theirs"));
        let e = load(&theirs, spec, &tok(10, None)).unwrap_err();
        assert!(matches!(e, CalibError::ForeignTokenizer { .. }), "{e}");
        let mixed = file("mixed.jsonl", "{\"input_ids\": [1]}\n{\"text\": \"a\"}\n");
        assert!(matches!(read(&mixed), Err(CalibError::Jsonl { line: 2, .. })));
    }
}
