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
    Ok(Parts {
        inner,
        bos,
        eos,
        adds_bos,
        special: tokens.special_flags(),
        chat_template,
        extra_eos: Vec::new(),
        // Every added token is also in the model's vocabulary, so the ids are exactly 0..n.
        vocab_size: tokens.texts.len(),
    })
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

    let vocab = tokens.vocab()?;
    let merges = score_merges(tokens, &vocab, &scores);
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
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
fn score_merges(tokens: &GgufTokens, vocab: &Vocab, scores: &[f32]) -> Merges {
    let is_piece = |text: &str| vocab.get(text).is_some_and(|&id| tokens.is_model_token(id as usize));

    // (merged token, byte offset of the split); strings are only built once the order is known.
    let mut splits: Vec<(u32, u32)> = Vec::new();
    for (id, &text) in tokens.texts.iter().enumerate() {
        if !tokens.is_model_token(id) {
            continue;
        }
        for (at, _) in text.char_indices().skip(1) {
            if is_piece(&text[..at]) && is_piece(&text[at..]) {
                splits.push((id as u32, at as u32));
            }
        }
    }
    // Stable: vocabulary order, then split position, survive among equal scores.
    splits.sort_by(|a, b| scores[b.0 as usize].total_cmp(&scores[a.0 as usize]));
    splits
        .into_iter()
        .map(|(id, at)| {
            let (left, right) = tokens.texts[id as usize].split_at(at as usize);
            (left.to_string(), right.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Tokenizer, TokenizerError};
    use lowbit_formats::gguf::GgufFile;

    enum Meta<'a> {
        Str(&'a str),
        U32(u32),
        Bool(bool),
        Strs(Vec<String>),
        F32s(Vec<f32>),
        I32s(Vec<i32>),
    }

    /// A GGUF image with metadata only (GGUF value types: 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array).
    fn gguf(meta: &[(&str, Meta)]) -> GgufFile {
        fn string(b: &mut Vec<u8>, s: &str) {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        fn array_header(b: &mut Vec<u8>, element_type: u32, len: usize) {
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&element_type.to_le_bytes());
            b.extend_from_slice(&(len as u64).to_le_bytes());
        }
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (key, value) in meta {
            string(&mut b, key);
            match value {
                Meta::Str(s) => {
                    b.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut b, s);
                }
                Meta::U32(v) => {
                    b.extend_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&v.to_le_bytes());
                }
                Meta::Bool(v) => {
                    b.extend_from_slice(&7u32.to_le_bytes());
                    b.push(u8::from(*v));
                }
                Meta::Strs(v) => {
                    array_header(&mut b, 8, v.len());
                    v.iter().for_each(|s| string(&mut b, s));
                }
                Meta::F32s(v) => {
                    array_header(&mut b, 6, v.len());
                    v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                }
                Meta::I32s(v) => {
                    array_header(&mut b, 5, v.len());
                    v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                }
            }
        }
        GgufFile::from_bytes("tiny.gguf", b).unwrap()
    }

    /// A SentencePiece vocabulary: control tokens, all 256 byte tokens, then scored pieces.
    fn spm(pieces: &[(&str, f32)], add_space_prefix: bool) -> GgufFile {
        let mut texts = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..=255u8 {
            texts.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for &(text, score) in pieces {
            texts.push(text.to_string());
            types.push(1);
            scores.push(score);
        }
        gguf(&[
            ("tokenizer.ggml.model", Meta::Str("llama")),
            ("tokenizer.ggml.tokens", Meta::Strs(texts)),
            ("tokenizer.ggml.scores", Meta::F32s(scores)),
            ("tokenizer.ggml.token_type", Meta::I32s(types)),
            ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
            ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
            ("tokenizer.ggml.unknown_token_id", Meta::U32(0)),
            ("tokenizer.ggml.add_space_prefix", Meta::Bool(add_space_prefix)),
        ])
    }

    const FIRST_PIECE: u32 = 3 + 256;

    fn pieces(tok: &Tokenizer, text: &str) -> Vec<String> {
        tok.encode(text, false).unwrap().into_iter().map(|id| tok.token_text(id).unwrap()).collect()
    }

    #[test]
    fn sentencepiece_merges_the_best_scoring_pair_first() {
        // llama.cpp's SPM loop on "abc": the candidate pairs are "ab" (-3) and "bc" (-1); "bc"
        // wins, then "a"+"bc" is in the vocabulary only as "abc" (-2). With "bc" worse than "ab"
        // the loop makes "ab" and then stops, since "abc" = "ab"+"c" is absent.
        let a = [("a", -10.0), ("b", -11.0), ("c", -12.0), ("ab", -3.0), ("bc", -1.0), ("abc", -2.0)];
        let tok = Tokenizer::from_gguf(&spm(&a, false)).unwrap();
        assert_eq!(pieces(&tok, "abc"), ["abc"]);
        let b = [("a", -10.0), ("b", -11.0), ("c", -12.0), ("ab", -1.0), ("bc", -3.0), ("bca", -2.0)];
        let tok = Tokenizer::from_gguf(&spm(&b, false)).unwrap();
        assert_eq!(pieces(&tok, "abc"), ["ab", "c"]);
    }

    #[test]
    fn sentencepiece_spaces_byte_fallback_and_space_prefix() {
        let vocab = [("a", -10.0), ("b", -11.0), ("\u{2581}", -12.0), ("\u{2581}a", -1.0)];
        let tok = Tokenizer::from_gguf(&spm(&vocab, false)).unwrap();
        // "é" is not in the vocabulary: its UTF-8 bytes C3 A9 become byte tokens.
        assert_eq!(pieces(&tok, "a é"), ["a", "\u{2581}", "<0xC3>", "<0xA9>"]);
        assert_eq!(tok.decode(&tok.encode("a é b", false).unwrap()).unwrap(), "a é b");

        // With add_space_prefix every fragment that starts the text or follows a special token
        // gets a leading space (llama.cpp's is_prev_special); decoding drops the first one.
        let tok = Tokenizer::from_gguf(&spm(&vocab, true)).unwrap();
        assert_eq!(pieces(&tok, "a</s>a"), ["\u{2581}a", "</s>", "\u{2581}a"]);
        assert_eq!(tok.decode(&tok.encode("a b", false).unwrap()).unwrap(), "a b");
        assert!(tok.adds_bos());
        assert_eq!(tok.encode("a", true).unwrap(), [1, FIRST_PIECE + 3]);
        assert!(tok.is_special(0) && tok.is_special(1) && !tok.is_special(3) && !tok.is_special(FIRST_PIECE));
    }

    fn gpt2(pre: &str, tokens: &[&str], merges: &[&str]) -> GgufFile {
        gguf(&[
            ("tokenizer.ggml.model", Meta::Str("gpt2")),
            ("tokenizer.ggml.pre", Meta::Str(pre)),
            ("tokenizer.ggml.tokens", Meta::Strs(tokens.iter().map(|s| s.to_string()).collect())),
            ("tokenizer.ggml.merges", Meta::Strs(merges.iter().map(|s| s.to_string()).collect())),
        ])
    }

    #[test]
    fn byte_level_bpe_splits_digits_for_smollm() {
        let tokens = ["1", "2", "12", "a", "Ġ", "Ġa"];
        let merges = ["1 2", "Ġ a"];
        // "smollm" isolates every digit before the GPT-2 regex runs, so "12" never merges; the
        // plain GPT-2 regex keeps " 12" together and the merge applies.
        let tok = Tokenizer::from_gguf(&gpt2("smollm", &tokens, &merges)).unwrap();
        assert_eq!(tok.encode("12 a", false).unwrap(), [0, 1, 5]);
        let tok = Tokenizer::from_gguf(&gpt2("gpt-2", &tokens, &merges)).unwrap();
        assert_eq!(tok.encode("12 a", false).unwrap(), [2, 5]);
        assert!(!tok.adds_bos() && tok.bos_id().is_none() && tok.eos_ids().is_empty());
        assert_eq!(tok.decode(&[2, 5]).unwrap(), "12 a");
    }

    fn error(file: &GgufFile) -> String {
        let e = Tokenizer::from_gguf(file).unwrap_err();
        assert!(!matches!(e, TokenizerError::Codec { .. }));
        e.to_string()
    }

    #[test]
    fn bad_vocabularies_are_typed_errors_naming_the_field() {
        let e = error(&gpt2("no-such-pre", &["a"], &[]));
        assert!(e.contains("tiny.gguf") && e.contains("no-such-pre"), "{e}");
        let e = error(&gpt2("gpt-2", &["a", "a"], &[]));
        assert!(e.contains("more than once"), "{e}");
        let e = error(&gpt2("gpt-2", &["a", "b", "ab"], &["ab"]));
        assert!(e.contains("tokenizer.ggml.merges"), "{e}");
        let e = error(&gpt2("gpt-2", &["a", "b"], &["a b"]));
        assert!(e.contains("tiny.gguf"), "{e}");

        let e = error(&gguf(&[
            ("tokenizer.ggml.model", Meta::Str("bert")),
            ("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into()])),
        ]));
        assert!(e.contains("unsupported") && e.contains("bert"), "{e}");
        let e = error(&gguf(&[
            ("tokenizer.ggml.model", Meta::Str("llama")),
            ("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into()])),
        ]));
        assert!(e.contains("tokenizer.ggml.scores"), "{e}");
        let e = error(&gguf(&[
            ("tokenizer.ggml.model", Meta::Str("llama")),
            ("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into()])),
            ("tokenizer.ggml.scores", Meta::F32s(vec![0.0])),
            ("tokenizer.ggml.token_type", Meta::I32s(vec![1, 1])),
        ]));
        assert!(e.contains("token_type has 2 entries for 1 tokens"), "{e}");
        let e = error(&gguf(&[
            ("tokenizer.ggml.model", Meta::Str("llama")),
            ("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into()])),
            ("tokenizer.ggml.scores", Meta::F32s(vec![0.0])),
            ("tokenizer.ggml.bos_token_id", Meta::U32(7)),
        ]));
        assert!(e.contains("bos_token_id = 7"), "{e}");
        // SentencePiece adds BOS by default, so it needs one.
        let e = error(&gguf(&[
            ("tokenizer.ggml.model", Meta::Str("llama")),
            ("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into()])),
            ("tokenizer.ggml.scores", Meta::F32s(vec![0.0])),
        ]));
        assert!(e.contains("bos_token_id is missing"), "{e}");
        let e =
            error(&gguf(&[("tokenizer.ggml.model", Meta::Str("gpt2")), ("tokenizer.ggml.tokens", Meta::Strs(vec![]))]));
        assert!(e.contains("empty"), "{e}");
    }
}
