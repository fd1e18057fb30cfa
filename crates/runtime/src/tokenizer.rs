//! One tokenizer type for every model source: a `tokenizers::Tokenizer` plus the facts the
//! generation loop needs (BOS rule, end-of-generation ids, control tokens, chat template).
//!
//! GGUF files carry their vocabulary as metadata; `gguf_vocab` converts it so that encoding gives
//! the ids llama.cpp gives (the golden tests compare against `llama-tokenize`). Hugging Face
//! directories are read as they are (`hf_dir`). `save_hf_dir` writes the same pair of files back,
//! so a converted GGUF vocabulary can ship inside a lowbit output directory.

mod gguf_vocab;
mod harmony;
mod hf_dir;
mod llama_pre;
mod stream;

use std::path::{Path, PathBuf};

use lowbit_formats::error::FormatError;
use lowbit_formats::gguf::GgufFile;
use lowbit_formats::gguf_tokenizer::BpeVocab;

pub use stream::StreamDecoder;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Metadata that is missing or of the wrong type (the error names file and key).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A vocabulary that is present but inconsistent.
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: unsupported {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// An error from the `tokenizers` crate while building, loading or saving.
    #[error("{path}: {source}")]
    Build { path: PathBuf, source: tokenizers::Error },
    #[error("tokenizer failed to {op}: {source}")]
    Codec { op: &'static str, source: tokenizers::Error },
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange { id: u32, vocab_size: usize },
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// Texts of tokens that end a turn in common chat formats. llama.cpp treats tokens with these
/// texts as end-of-generation (and as control tokens) whatever the metadata says; matching that
/// keeps generation from running past `<|im_end|>` or `<end_of_turn>` when only `<eos>` is declared.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|return|>",
    "<|call|>",
    "<EOT>",
];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// The declared EOS first, then every other end-of-generation token.
    eos_ids: Vec<u32>,
    adds_bos: bool,
    /// Indexed by id: control tokens, never shown as text by a chat front end.
    special: Vec<bool>,
    chat_template: Option<String>,
    /// Highest id + 1, kept because `tokenizers` computes its size by cloning the vocabulary.
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("adds_bos", &self.adds_bos)
            .finish()
    }
}

/// What each source hands to `Tokenizer::assemble`.
struct Parts {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    adds_bos: bool,
    special: Vec<bool>,
    chat_template: Option<String>,
    /// End-of-generation ids a source lists beside its EOS (generation_config.json).
    extra_eos: Vec<u32>,
    /// One past the highest id, added tokens included.
    vocab_size: usize,
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes: `gpt2` (byte-level BPE with merges and a
    /// llama.cpp pre-tokenizer chosen by `tokenizer.ggml.pre`) or `llama` (SentencePiece-style
    /// BPE driven by token scores, with byte fallback).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        Ok(Self::assemble(gguf_vocab::convert(file)?))
    }

    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` (BOS/EOS, `add_bos_token`,
    /// chat template), `chat_template.jinja` and `generation_config.json` (extra EOS ids).
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        Ok(Self::assemble(hf_dir::load(dir)?))
    }

    /// GPT-OSS's o200k_harmony tokenizer (o200k_base's ranks from the `tiktoken-rs` crate and the harmony
    /// special tokens), with `chat_template` as its template.
    pub fn o200k_harmony(chat_template: Option<String>) -> Result<Tokenizer> {
        let parts = harmony::o200k_harmony()?;
        Ok(Self::assemble(Parts { chat_template, ..parts }))
    }

    /// [`Tokenizer::o200k_harmony`] as GGUF metadata: what a GPT-OSS GGUF file carries.
    pub fn o200k_harmony_gguf(chat_template: Option<String>) -> Result<BpeVocab> {
        harmony::o200k_harmony_gguf(chat_template)
    }

    fn assemble(mut parts: Parts) -> Tokenizer {
        let mut eos_ids: Vec<u32> = parts.eos.into_iter().collect();
        for &id in &parts.extra_eos {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        for text in END_OF_GENERATION_TEXTS {
            if let Some(id) = parts.inner.token_to_id(text) {
                if let Some(flag) = parts.special.get_mut(id as usize) {
                    *flag = true;
                }
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Tokenizer {
            vocab_size: parts.vocab_size,
            inner: parts.inner,
            bos: parts.bos,
            eos: parts.eos,
            eos_ids,
            adds_bos: parts.adds_bos,
            special: parts.special,
            chat_template: parts.chat_template,
        }
    }

    /// Token ids for `text`. Text that spells a control or user-defined token (`<|im_start|>`)
    /// becomes that one token, as in llama.cpp with `parse_special`. BOS is prepended only when
    /// `add_bos` is set and the model's own rule asks for it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding =
            self.inner.encode_fast(text, false).map_err(|source| TokenizerError::Codec { op: "encode", source })?;
        let ids = encoding.get_ids();
        match self.bos.filter(|_| add_bos && self.adds_bos) {
            Some(bos) => {
                let mut out = Vec::with_capacity(ids.len() + 1);
                out.push(bos);
                out.extend_from_slice(ids);
                Ok(out)
            }
            None => Ok(ids.to_vec()),
        }
    }

    /// Text for `ids`, control tokens included (callers drop them with `is_special` if they wish).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let vocab_size = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(TokenizerError::IdOutOfRange { id, vocab_size });
        }
        self.inner.decode(ids, false).map_err(|source| TokenizerError::Codec { op: "decode", source })
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS token the model declares (what a chat template calls `eos_token`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Every token that ends generation: the declared EOS first, then end-of-turn tokens.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether the model expects BOS at the start of a sequence.
    pub fn adds_bos(&self) -> bool {
        self.adds_bos
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The vocabulary entry for `id` as stored (`Ġthe`, `▁the`, `<0x0A>`, `<|im_start|>`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Control tokens (BOS, EOS, turn markers): stop conditions and hidden in displayed text.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir` so that `from_hf_dir` (or
    /// Hugging Face `transformers`) reads back the same tokenizer.
    pub fn save_hf_dir(&self, dir: &Path) -> Result<()> {
        hf_dir::save(self, dir)
    }
}
