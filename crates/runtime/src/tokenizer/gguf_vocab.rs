//! GGUF vocabularies (`tokenizer.ggml.*`) converted to `tokenizers` models that give llama.cpp's ids.
//!
//! * `gpt2`: byte-level BPE with the file's merges; llama.cpp's regexes for `tokenizer.ggml.pre`.
//! * `llama`: llama.cpp's SentencePiece tokenizer repeatedly merges the adjacent pair whose
//!   concatenation is the best-scoring vocabulary entry, and spells leftover characters as
//!   `<0xNN>` byte tokens. A BPE whose merges are every split of every token into two vocabulary
//!   pieces, ranked by the whole token's score, merges in that same order (the idea behind
//!   Hugging Face's `SentencePieceExtractor`); `byte_fallback` covers the leftovers.
//!
//! In both, control, user-defined and unknown tokens become added tokens matched on the raw text
//! before anything else runs, which is llama.cpp's `tokenizer_st_partition` with `parse_special`.

use std::collections::HashMap;

use lowbit_formats::gguf::GgufFile;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::{llama_pre, Parts, Result, TokenizerError};

/// llama.cpp's `LLAMA_TOKEN_TYPE_*` values in `tokenizer.ggml.token_type`.
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

struct GgufTokens<'a> {
    file: &'a GgufFile,
    texts: Vec<&'a str>,
    types: Vec<i64>,
}

impl GgufTokens<'_> {
    fn invalid(&self, what: String) -> TokenizerError {
        TokenizerError::Invalid { path: self.file.path().to_path_buf(), what }
    }

    fn unsupported(&self, what: String) -> TokenizerError {
        TokenizerError::Unsupported { path: self.file.path().to_path_buf(), what }
    }

    /// Token text -> id, refusing duplicates as llama.cpp does (two ids for one text would make
    /// encoding ambiguous).
    fn vocab(&self) -> Result<Vocab> {
        let mut vocab = Vocab::default();
        vocab.reserve(self.texts.len());
        for (id, &text) in self.texts.iter().enumerate() {
            if vocab.insert(text.to_string(), id as u32).is_some() {
                return Err(self.invalid(format!("tokenizer.ggml.tokens: {text:?} appears more than once")));
            }
        }
        Ok(vocab)
    }

    /// An optional id key, checked against the vocabulary size.
    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        if self.file.get(key).is_none() {
            return Ok(None);
        }
        let id = self.file.get_u64(key)?;
        if id >= self.texts.len() as u64 {
            return Err(self.invalid(format!("{key} = {id} is outside the vocabulary of {} tokens", self.texts.len())));
        }
        Ok(Some(id as u32))
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(_) => Ok(Some(self.file.get_bool(key)?)),
        }
    }

    /// Matched on raw text before the model runs. Control and unknown tokens are "special";
    /// user-defined ones (Gemma's runs of spaces and newlines, HTML tags) are ordinary text.
    fn added_tokens(&self) -> Vec<AddedToken> {
        self.texts
            .iter()
            .zip(&self.types)
            .filter_map(|(&text, &ty)| match ty {
                TYPE_CONTROL | TYPE_UNKNOWN => Some(AddedToken::from(text, true).normalized(false)),
                TYPE_USER_DEFINED => Some(AddedToken::from(text, false).normalized(false)),
                _ => None,
            })
            .collect()
    }

    fn special_flags(&self) -> Vec<bool> {
        self.types.iter().map(|&ty| ty == TYPE_CONTROL || ty == TYPE_UNKNOWN).collect()
    }

    /// Tokens the merge model may produce: everything not split off beforehand as an added token.
    fn is_model_token(&self, id: usize) -> bool {
        !matches!(self.types[id], TYPE_CONTROL | TYPE_UNKNOWN | TYPE_USER_DEFINED)
    }
}

pub(super) fn convert(file: &GgufFile) -> Result<Parts> {
    let model = file.get_str("tokenizer.ggml.model")?;
    let texts = file.get_str_array("tokenizer.ggml.tokens")?;
    if texts.is_empty() {
        return Err(TokenizerError::Invalid {
            path: file.path().to_path_buf(),
            what: "tokenizer.ggml.tokens is empty".into(),
        });
    }
    let types = match file.get("tokenizer.ggml.token_type") {
        None => vec![TYPE_NORMAL; texts.len()],
        Some(_) => file.get_i64_array("tokenizer.ggml.token_type")?,
    };
    let tokens = GgufTokens { file, texts, types };
    if tokens.types.len() != tokens.texts.len() {
        return Err(tokens.invalid(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            tokens.types.len(),
            tokens.texts.len()
        )));
    }

    let (mut inner, default_adds_bos) = match model {
        "gpt2" => byte_level_bpe(&tokens)?,
        "llama" => (sentencepiece_bpe(&tokens)?, true),
        other => {
            return Err(tokens.unsupported(format!("tokenizer.ggml.model {other:?} (gpt2 and llama are supported)")))
        }
    };
    inner.add_tokens(&tokens.added_tokens());

    let bos = tokens.token_id("tokenizer.ggml.bos_token_id")?;
    let eos = tokens.token_id("tokenizer.ggml.eos_token_id")?;
    let adds_bos = tokens.optional_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_adds_bos);
    if adds_bos && bos.is_none() {
        return Err(tokens.invalid("the vocabulary adds BOS but tokenizer.ggml.bos_token_id is missing".into()));
    }
    let chat_template = match file.get("tokenizer.chat_template") {
        None => None,
        Some(_) => Some(file.get_str("tokenizer.chat_template")?.to_string()),
    };
    Ok(Parts { inner, bos, eos, adds_bos, special: tokens.special_flags(), chat_template, extra_eos: Vec::new() })
}

/// Returns the tokenizer and llama.cpp's default for adding BOS with this `pre`.
fn byte_level_bpe(tokens: &GgufTokens) -> Result<(tokenizers::Tokenizer, bool)> {
    let pre = match tokens.file.get("tokenizer.ggml.pre") {
        None => "default",
        Some(_) => tokens.file.get_str("tokenizer.ggml.pre")?,
    };
    let pre_tokenizer = llama_pre::for_pre(pre).ok_or_else(|| {
        tokens.unsupported(format!("tokenizer.ggml.pre {pre:?} (no pre-tokenizer regexes known for it)"))
    })?;

    let merges: Merges = tokens
        .file
        .get_str_array("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| {
                tokens.invalid(format!("tokenizer.ggml.merges: {m:?} is not two tokens separated by a space"))
            })
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(tokens.vocab()?, merges)
        .ignore_merges(pre_tokenizer.ignore_merges)
        .build()
        .map_err(|source| TokenizerError::Build { path: tokens.file.path().to_path_buf(), source })?;

    let mut steps = Vec::with_capacity(pre_tokenizer.regexes.len() + 1);
    for regex in pre_tokenizer.regexes {
        let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|source| TokenizerError::Build { path: tokens.file.path().to_path_buf(), source })?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    // The regexes already split the text; ByteLevel only maps bytes to its printable alphabet.
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)));

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(steps))));
    inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok((inner, pre_tokenizer.adds_bos))
}

fn sentencepiece_bpe(tokens: &GgufTokens) -> Result<tokenizers::Tokenizer> {
    let scores = tokens.file.get_f32_array("tokenizer.ggml.scores")?;
    if scores.len() != tokens.texts.len() {
        return Err(tokens.invalid(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.texts.len()
        )));
    }
    let add_space_prefix = tokens.optional_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let unk = tokens.token_id("tokenizer.ggml.unknown_token_id")?;

    let mut builder = BPE::builder()
        .vocab_and_merges(tokens.vocab()?, score_merges(tokens, &scores))
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(tokens.texts[unk as usize].to_string());
    }
    let bpe =
        builder.build().map_err(|source| TokenizerError::Build { path: tokens.file.path().to_path_buf(), source })?;

    let replace = |from: &str, to: &str| {
        Replace::new(from, to)
            .map_err(|source| TokenizerError::Build { path: tokens.file.path().to_path_buf(), source })
    };
    // llama.cpp prefixes a space to every text fragment that starts the input or follows an added
    // token; a normalizer runs once per such fragment, so Prepend reproduces it.
    let normalizer = if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPM_SPACE.to_string())),
            NormalizerWrapper::Replace(replace(" ", SPM_SPACE)?),
        ]))
    } else {
        NormalizerWrapper::Replace(replace(" ", SPM_SPACE)?)
    };
    let mut decoders = vec![
        DecoderWrapper::Replace(replace(SPM_SPACE, " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_normalizer(Some(normalizer));
    inner.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(decoders))));
    Ok(inner)
}

/// Every split of every model token into two model tokens, best-scoring whole token first.
///
/// Ties keep vocabulary order and, within one token, shorter left pieces first; llama.cpp breaks
/// ties by position in the text instead, which only differs when two pairs with the same score
/// overlap (every Gemma 3 score is distinct).
fn score_merges(tokens: &GgufTokens, scores: &[f32]) -> Merges {
    let pieces: HashMap<&str, u32> = tokens
        .texts
        .iter()
        .enumerate()
        .filter(|&(id, _)| tokens.is_model_token(id))
        .map(|(id, &text)| (text, id as u32))
        .collect();

    // (merged token, byte offset of the split); strings are only built once the order is known.
    let mut splits: Vec<(u32, u32)> = Vec::new();
    for (id, &text) in tokens.texts.iter().enumerate() {
        if !tokens.is_model_token(id) {
            continue;
        }
        for (at, _) in text.char_indices().skip(1) {
            if pieces.contains_key(&text[..at]) && pieces.contains_key(&text[at..]) {
                splits.push((id as u32, at as u32));
            }
        }
    }
    // Stable: vocabulary order, then split position, survive among equal scores.
    splits.sort_by(|a, b| scores[b.0 as usize].total_cmp(&scores[a.0 as usize]));
    splits
        .into_iter()
        .map(|(id, at)| {
            let text = tokens.texts[id as usize];
            let (left, right) = text.split_at(at as usize);
            (left.to_string(), right.to_string())
        })
        .collect()
}
