//! llama.cpp's pre-tokenizer regexes for byte-level BPE vocabularies, by `tokenizer.ggml.pre`.
//!
//! llama.cpp applies a list of regexes in turn: each one splits every piece produced so far,
//! keeping both the matches and the text between them. A `Split` pre-tokenizer with `Isolated`
//! behaviour does exactly that, so the list becomes a `Sequence` of `Split`s. The regexes are
//! copied verbatim from `llm_tokenizer_bpe` in llama.cpp's `src/llama-vocab.cpp`, except o200k's.

/// GPT-2's regex without the trailing `|\s+`; the text it leaves unmatched is kept as a piece.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes and merges one family of `pre` values.
pub(super) struct PreTokenizer {
    pub regexes: &'static [&'static str],
    /// Words found whole in the vocabulary skip the merges (llama.cpp's `ignore_merges`).
    pub ignore_merges: bool,
    /// llama.cpp's `add_bos` default when `tokenizer.ggml.add_bos_token` is absent.
    pub adds_bos: bool,
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value, or `None` when lowbit does not know it.
pub(super) fn for_pre(pre: &str) -> Option<PreTokenizer> {
    let (regexes, ignore_merges, adds_bos): (&'static [&'static str], bool, bool) = match pre {
        "default" => (&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], false, false),
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" => (&[GPT2], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (&[r"\p{N}", GPT2], false, false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (&[LLAMA3], true, true),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" => (&[QWEN2], false, false),
        // o200k (GPT-OSS): tiktoken's own regex, which llama.cpp approximates for its regex engine; tiktoken looks a
        // pre-token up whole before merging.
        "gpt-4o" => (&[super::harmony::O200K_PATTERN], true, false),
        _ => return None,
    };
    Some(PreTokenizer { regexes, ignore_merges, adds_bos })
}
