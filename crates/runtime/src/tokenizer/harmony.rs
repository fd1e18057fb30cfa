//! GPT-OSS's o200k_harmony tokenizer, built from the o200k_base ranks that ship inside the `tiktoken-rs`
//! crate (no model hub needed), plus the harmony special tokens.
//!
//! tiktoken encodes a pre-token by looking it up whole, then by repeatedly merging the adjacent pair whose
//! concatenation has the lowest rank. A byte-level BPE gives the same ids when its vocabulary is the ranks,
//! its merges are every split of every token into two tokens, ordered by the whole token's rank (the idea
//! of transformers' `TikTokenConverter`), and `ignore_merges` looks pre-tokens up whole first. The
//! pre-tokenizer is o200k's regex; the result is what Hugging Face's gpt-oss `tokenizer.json` holds, so it
//! can be written out as one (`Tokenizer::save_hf_dir`).

use std::collections::HashMap;
use std::path::PathBuf;

use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use lowbit_formats::gguf_tokenizer::{BpeVocab, TOKEN_CONTROL, TOKEN_NORMAL};

use super::{Parts, Result, TokenizerError};

/// o200k's pre-tokenizer regex (tiktoken's `o200k_base` pattern).
pub(super) const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

/// Ranks of o200k_base: ids 0..BASE_TOKENS.
const BASE_TOKENS: u32 = 199_998;

/// The harmony special tokens by id, as the released tokenizer_config.json lists them; the rest of
/// 199998..=LAST_SPECIAL are `<|reserved_N|>`.
const SPECIAL: [(u32, &str); 10] = [
    (199_998, "<|startoftext|>"),
    (199_999, "<|endoftext|>"),
    (200_002, "<|return|>"),
    (200_003, "<|constrain|>"),
    (200_005, "<|channel|>"),
    (200_006, "<|start|>"),
    (200_007, "<|end|>"),
    (200_008, "<|message|>"),
    (200_012, "<|call|>"),
    (200_018, "<|endofprompt|>"),
];
/// The harmony encoding reserves every id up to 201087, so the vocabulary covers the embedding's 201088 rows and
/// any id the model emits decodes (the released tokenizer_config.json names only those up to 200018).
const LAST_SPECIAL: u32 = 201_087;

/// The text of special token `id` (199998..=LAST_SPECIAL).
pub(super) fn special_text(id: u32) -> String {
    SPECIAL.iter().find(|(i, _)| *i == id).map_or_else(|| format!("<|reserved_{id}|>"), |(_, t)| t.to_string())
}

fn build_error(what: String) -> TokenizerError {
    TokenizerError::Invalid { path: PathBuf::from("tiktoken-rs o200k_base"), what }
}

/// GPT-2's printable alphabet for bytes (the one byte-level BPE vocabularies are written in).
fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[usize::from(b)] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("below the surrogates")
        };
    }
    map
}

/// o200k_base's ranks as byte-level BPE: each rank's text in GPT-2's byte alphabet, and the merges.
struct O200k {
    tokens: Vec<String>,
    merges: Merges,
}

fn o200k_base() -> Result<O200k> {
    let base = tiktoken_rs::o200k_base().map_err(|e| build_error(e.to_string()))?;
    let mut ranks: HashMap<Vec<u8>, u32> = HashMap::with_capacity(BASE_TOKENS as usize);
    let mut by_rank = Vec::with_capacity(BASE_TOKENS as usize);
    for rank in 0..BASE_TOKENS {
        let bytes = base.decode_bytes(&[rank]).map_err(|e| build_error(format!("rank {rank}: {e:?}")))?;
        ranks.insert(bytes.clone(), rank);
        by_rank.push(bytes);
    }
    let alphabet = byte_alphabet();
    let text = |b: &[u8]| b.iter().map(|&x| alphabet[usize::from(x)]).collect::<String>();
    // Every split of a token into two tokens, in the order of the token's rank (then of the halves' ranks).
    let mut merges: Merges = Vec::new();
    for token in &by_rank {
        let mut splits: Vec<(u32, u32, usize)> =
            (1..token.len()).filter_map(|i| Some((*ranks.get(&token[..i])?, *ranks.get(&token[i..])?, i))).collect();
        splits.sort_unstable();
        merges.extend(splits.into_iter().map(|(_, _, i)| (text(&token[..i]), text(&token[i..]))));
    }
    Ok(O200k { tokens: by_rank.iter().map(|b| text(b)).collect(), merges })
}

/// o200k_harmony as a GGUF `gpt2` vocabulary (llama.cpp's pre-tokenizer "gpt-4o"), BOS, EOS and padding as
/// transformers' gpt-oss tokenizer names them.
pub(super) fn o200k_harmony_gguf(chat_template: Option<String>) -> Result<BpeVocab> {
    let O200k { mut tokens, merges } = o200k_base()?;
    tokens.extend((BASE_TOKENS..=LAST_SPECIAL).map(special_text));
    let mut token_types = vec![TOKEN_NORMAL; BASE_TOKENS as usize];
    token_types.resize(tokens.len(), TOKEN_CONTROL);
    Ok(BpeVocab {
        pre: "gpt-4o".into(),
        tokens,
        token_types,
        merges: merges.into_iter().map(|(l, r)| format!("{l} {r}")).collect(),
        bos: Some(199_998),
        eos: Some(200_002),
        pad: Some(199_999),
        add_bos: false,
        chat_template,
    })
}

pub(super) fn o200k_harmony() -> Result<Parts> {
    let O200k { tokens, merges } = o200k_base()?;
    let vocab: Vocab = tokens.into_iter().zip(0..).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(true)
        .build()
        .map_err(|e| build_error(e.to_string()))?;
    let split = Split::new(SplitPattern::Regex(O200K_PATTERN.to_string()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| build_error(e.to_string()))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ]))));
    inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    // Added in id order, they take the ids after the ranks: 199998 onwards.
    let specials: Vec<AddedToken> =
        (BASE_TOKENS..=LAST_SPECIAL).map(|id| AddedToken::from(special_text(id), true)).collect();
    inner.add_special_tokens(&specials);
    let vocab_size = LAST_SPECIAL as usize + 1;
    let mut special = vec![false; vocab_size];
    special[BASE_TOKENS as usize..].iter_mut().for_each(|s| *s = true);
    let id = |t: &str| inner.token_to_id(t);
    Ok(Parts {
        bos: id("<|startoftext|>"),
        // transformers' eos_token; <|call|> ends a turn too (END_OF_GENERATION_TEXTS).
        eos: id("<|return|>"),
        adds_bos: false,
        special,
        chat_template: None,
        extra_eos: Vec::new(),
        vocab_size,
        inner,
    })
}
