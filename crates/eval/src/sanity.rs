//! Whether generated text is text: a build that loops, stops at once, emits junk or word salad fails here even when its
//! perplexity looks tolerable, and a build that answers unlike the original shows as low overlap with the
//! original's greedy answer. Each figure is a plain function of tokens or text, so a threshold can be read off
//! a handful of generations.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// A generation is nonsense when the original model finds it this implausible: the perplexity of its tokens
/// under the original, given the prompt. Greedy text scores 1–10 under its own model; word salad in the
/// hundreds or more.
pub const MAX_NONSENSE_PPL: f64 = 40.0;
/// Length of the token n-grams [`repeat_rate`] counts (a loop of a short phrase repeats its 4-grams at once).
pub const NGRAM: usize = 4;
/// A generation is a loop when more than this share of its n-grams repeat earlier ones.
pub const MAX_REPEAT_RATE: f64 = 0.5;
/// A generation is junk when less than this share of its characters are text (letters, digits, white space,
/// punctuation and symbols; not control characters or U+FFFD, what a decoder writes for broken bytes).
pub const MIN_TEXT_FRACTION: f64 = 0.9;

/// The share of the n-grams of `tokens` that already occurred earlier in it: 0 for text that never repeats a
/// phrase, near 1 for a loop.
pub fn repeat_rate(tokens: &[u32], n: usize) -> f64 {
    if n == 0 || tokens.len() < n {
        return 0.0;
    }
    let mut seen = HashSet::new();
    let grams = tokens.windows(n);
    let total = grams.len();
    let repeated = grams.filter(|g| !seen.insert(*g)).count();
    repeated as f64 / total as f64
}

/// The share of the characters of `text` that are text rather than control characters or replacement
/// characters; 1 for empty text (emptiness is judged apart).
pub fn text_fraction(text: &str) -> f64 {
    let total = text.chars().count();
    if total == 0 {
        return 1.0;
    }
    let good = text.chars().filter(|&c| c != char::REPLACEMENT_CHARACTER && (!c.is_control() || c.is_whitespace()));
    good.count() as f64 / total as f64
}

/// How much of `a`'s vocabulary `b` shares: the F1 score of their token multisets (1 for the same tokens in any
/// order, 0 for none in common or either empty).
pub fn overlap(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut counts: HashMap<u32, usize> = HashMap::new();
    a.iter().for_each(|&t| *counts.entry(t).or_default() += 1);
    let common = b
        .iter()
        .filter(|t| match counts.get_mut(t) {
            Some(c) if *c > 0 => {
                *c -= 1;
                true
            }
            _ => false,
        })
        .count();
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

/// Tokens at the start of `a` and `b` that agree.
pub fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What is wrong with one generation, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Degenerate {
    /// No text (only white space) came out.
    Empty,
    /// Too few of its characters are text ([`MIN_TEXT_FRACTION`]).
    NotText,
    /// It repeats itself ([`MAX_REPEAT_RATE`]).
    Loop,
    /// The original model finds it implausible ([`MAX_NONSENSE_PPL`]).
    Nonsense,
}

/// The figures of one generation.
#[derive(Clone, Debug, Serialize)]
pub struct TextFigures {
    pub text: String,
    pub tokens: usize,
    pub repeat_rate: f64,
    pub text_fraction: f64,
    /// Perplexity of the tokens under the original model, given the prompt.
    pub original_ppl: f64,
    /// Why the generation is degenerate; `None` when it is text.
    pub degenerate: Option<Degenerate>,
}

impl TextFigures {
    /// The figures of a generation of `tokens` decoding to `text`, with `original_ppl` its perplexity under the
    /// original model.
    pub fn of(tokens: &[u32], text: &str, original_ppl: f64) -> TextFigures {
        let (repeat_rate, text_fraction) = (repeat_rate(tokens, NGRAM), text_fraction(text));
        let degenerate = if text.trim().is_empty() {
            Some(Degenerate::Empty)
        } else if text_fraction < MIN_TEXT_FRACTION {
            Some(Degenerate::NotText)
        } else if repeat_rate > MAX_REPEAT_RATE {
            Some(Degenerate::Loop)
        } else if original_ppl > MAX_NONSENSE_PPL {
            Some(Degenerate::Nonsense)
        } else {
            None
        };
        TextFigures {
            text: text.to_string(),
            tokens: tokens.len(),
            repeat_rate,
            text_fraction,
            original_ppl,
            degenerate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_repeats_its_ngrams_and_text_does_not() {
        let text: Vec<u32> = (0..40).collect();
        assert_eq!(repeat_rate(&text, 4), 0.0);
        // "1 2 3 4 5" five times: of the 22 4-grams only the first 5 are new.
        let looped: Vec<u32> = (0..5).flat_map(|_| 1..6).collect();
        assert!((repeat_rate(&looped, 4) - 17.0 / 22.0).abs() < 1e-12);
        assert_eq!(repeat_rate(&[1, 2, 3], 4), 0.0);
        assert_eq!(TextFigures::of(&looped, "a b c d e a b c d e", 2.0).degenerate, Some(Degenerate::Loop));
        assert_eq!(TextFigures::of(&text, "plain words, 42 of them.", 5.0).degenerate, None);
        assert_eq!(TextFigures::of(&text, "and- and and, - and", 900.0).degenerate, Some(Degenerate::Nonsense));
    }

    #[test]
    fn empty_and_broken_text_are_degenerate() {
        assert_eq!(TextFigures::of(&[], "  \n", 1.0).degenerate, Some(Degenerate::Empty));
        let junk = "ab\u{fffd}\u{fffd}\u{1}\u{fffd}";
        assert!((text_fraction(junk) - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(TextFigures::of(&[1, 2], junk, 1.0).degenerate, Some(Degenerate::NotText));
        assert_eq!(text_fraction("Ünïcode — text\n\twith tabs."), 1.0);
    }

    #[test]
    fn overlap_counts_shared_tokens_once_each() {
        assert_eq!(overlap(&[1, 2, 3], &[3, 2, 1]), 1.0);
        assert_eq!(overlap(&[1, 2, 3], &[4, 5]), 0.0);
        // One 7 in common: 2·1/(2+3).
        assert!((overlap(&[7, 7], &[7, 8, 9]) - 0.4).abs() < 1e-12);
        assert_eq!(overlap(&[], &[1]), 0.0);
        assert_eq!(shared_prefix(&[1, 2, 3, 4], &[1, 2, 5]), 2);
    }
}
