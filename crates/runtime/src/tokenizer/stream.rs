//! Incremental detokenization for streaming output.
//!
//! Decoding token by token goes wrong in two ways: a character can be spread over several tokens
//! (`<0xE2><0x82><0xAC>` is "€"; byte-level BPE splits characters too), and some decoders look at
//! neighbours (SentencePiece decoders strip the space of the *first* token, so " Paris" decoded
//! alone comes out as "Paris"). So text is always decoded as `anchor + pending`: the anchor is the
//! last token that decoded cleanly on its own, kept only as left context, and the part after the
//! anchor's own text is new. Pending tokens are held back while their text ends in U+FFFD, the
//! mark of an unfinished UTF-8 sequence.

use super::{Result, Tokenizer};

/// A UTF-8 character has at most four bytes and every token carries at least one, so a tail that
/// is still unfinished after this many tokens is malformed and is released as it is.
const MAX_PENDING: usize = 4;

const REPLACEMENT: char = '\u{FFFD}';

#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    anchor: Option<(u32, String)>,
    pending: Vec<u32>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts after `context` (the prompt): its last token becomes the left context, so the first
    /// generated token keeps a leading space that a decoder would strip at the start of a text.
    pub fn with_context(tok: &Tokenizer, context: &[u32]) -> Result<Self> {
        let anchor = match context.last() {
            Some(&id) => Some((id, tok.decode(&[id])?)),
            None => None,
        };
        Ok(StreamDecoder { anchor, pending: Vec::new() })
    }

    /// Adds one token; returns the text it completes, if any. Never splits a character.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.pending.push(id);
        let (text, anchor_len) = self.decode_window(tok)?;
        if text.ends_with(REPLACEMENT) && self.pending.len() < MAX_PENDING {
            return Ok(None);
        }
        self.release(tok, text, anchor_len)
    }

    /// Releases whatever is held back (an unfinished character comes out as U+FFFD).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let (text, anchor_len) = self.decode_window(tok)?;
        self.release(tok, text, anchor_len)
    }

    /// The text of `anchor + pending`, and how many leading bytes of it belong to the anchor.
    fn decode_window(&mut self, tok: &Tokenizer) -> Result<(String, usize)> {
        if let Some((anchor, anchor_text)) = &self.anchor {
            let mut window = Vec::with_capacity(self.pending.len() + 1);
            window.push(*anchor);
            window.extend_from_slice(&self.pending);
            let text = tok.decode(&window)?;
            if text.starts_with(anchor_text.as_str()) {
                let len = anchor_text.len();
                return Ok((text, len));
            }
            // A decoder that rewrites its left context: continue without one.
            self.anchor = None;
        }
        Ok((tok.decode(&self.pending)?, 0))
    }

    fn release(&mut self, tok: &Tokenizer, text: String, anchor_len: usize) -> Result<Option<String>> {
        let Some(&last) = self.pending.last() else { return Ok(None) };
        self.pending.clear();
        // The newest token anchors the next window only if its text stands on its own; a byte
        // token would otherwise fuse with the bytes that follow it and corrupt them.
        let last_text = tok.decode(&[last])?;
        if !last_text.contains(REPLACEMENT) && text.ends_with(last_text.as_str()) {
            self.anchor = Some((last, last_text));
        }
        let new = &text[anchor_len..];
        Ok((!new.is_empty()).then(|| new.to_string()))
    }
}
