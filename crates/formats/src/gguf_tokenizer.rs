//! A byte-level BPE vocabulary as GGUF metadata (`tokenizer.ggml.*`), in the keys, types and order llama.cpp's
//! converter writes for a `gpt2` tokenizer: its readers (llama.cpp's and lowbit's) rebuild the tokenizer from them.

use crate::error::Result;
use crate::gguf::{Value, ValueType};
use crate::gguf_write::GgufWriter;

/// llama.cpp's `LLAMA_TOKEN_TYPE_NORMAL`.
pub const TOKEN_NORMAL: i32 = 1;
/// llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`: special tokens, matched whole and never shown as text.
pub const TOKEN_CONTROL: i32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct BpeVocab {
    /// llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`, "gpt-4o" for o200k).
    pub pre: String,
    /// By id, in GPT-2's printable byte alphabet.
    pub tokens: Vec<String>,
    /// By id: [`TOKEN_NORMAL`] or [`TOKEN_CONTROL`].
    pub token_types: Vec<i32>,
    /// "left right", first merge first.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

impl BpeVocab {
    /// Keeps the first `n` ids, for a model whose embedding has fewer rows than the tokenizer has ids (a tiny test
    /// model): merges that make or use a dropped token go, and so do special ids past the end.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(n);
        self.token_types.truncate(n);
        let kept: std::collections::HashSet<&str> = self.tokens.iter().map(String::as_str).collect();
        self.merges.retain(|m| {
            let (l, r) = m.split_once(' ').unwrap_or((m, ""));
            kept.contains(l) && kept.contains(r) && kept.contains(format!("{l}{r}").as_str())
        });
        for id in [&mut self.bos, &mut self.eos, &mut self.pad] {
            *id = id.filter(|&i| (i as usize) < n);
        }
    }

    /// Adds the `tokenizer.ggml.*` keys to `w`.
    pub fn write_metadata(&self, w: &mut GgufWriter) -> Result<()> {
        let strings = |v: &[String]| Value::Array(ValueType::String, v.iter().cloned().map(Value::String).collect());
        w.metadata("tokenizer.ggml.model", Value::String("gpt2".into()))?;
        w.metadata("tokenizer.ggml.pre", Value::String(self.pre.clone()))?;
        w.metadata("tokenizer.ggml.tokens", strings(&self.tokens))?;
        let types = self.token_types.iter().map(|&t| Value::I32(t)).collect();
        w.metadata("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types))?;
        w.metadata("tokenizer.ggml.merges", strings(&self.merges))?;
        let ids = [
            ("tokenizer.ggml.bos_token_id", self.bos),
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.padding_token_id", self.pad),
        ];
        for (key, id) in ids {
            if let Some(id) = id {
                w.metadata(key, Value::U32(id))?;
            }
        }
        w.metadata("tokenizer.ggml.add_bos_token", Value::Bool(self.add_bos))?;
        if let Some(t) = &self.chat_template {
            w.metadata("tokenizer.chat_template", Value::String(t.clone()))?;
        }
        Ok(())
    }
}
