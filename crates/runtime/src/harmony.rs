//! Reading a GPT-OSS reply in the harmony format as it streams: the model writes messages
//! `<|channel|>NAME<|message|>TEXT<|end|>`, each after `<|start|>ROLE` (the first one's header is in the prompt),
//! and ends its turn with `<|return|>` (done) or `<|call|>` (a tool call awaits its result). The `analysis`
//! channel holds its reasoning, `commentary` tool calls and preambles, `final` the answer.
//!
//! [`HarmonyReader`] takes decoded text pieces (special tokens included, as [`crate::tokenizer::Tokenizer::decode`]
//! spells them) and gives each piece of message text with the channel it belongs to.

/// The markers of harmony's structure.
const START: &str = "<|start|>";
const CHANNEL: &str = "<|channel|>";
const MESSAGE: &str = "<|message|>";
const END: &str = "<|end|>";
const RETURN: &str = "<|return|>";
const CALL: &str = "<|call|>";
const MARKERS: [&str; 6] = [START, CHANNEL, MESSAGE, END, RETURN, CALL];

/// Message text and the channel it was written in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelText {
    /// `final`, `analysis`, `commentary`; empty when the header named none.
    pub channel: String,
    /// The header after the channel name (` to=functions.get_weather <|constrain|>json` for a tool call).
    pub recipient: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading a message header up to `<|message|>`.
    Header(String),
    /// Inside a message's text.
    Message { channel: String, recipient: String },
    /// After `<|return|>` or `<|call|>`.
    Done,
}

#[derive(Clone, Debug)]
pub struct HarmonyReader {
    state: State,
    /// Text not yet attributed: the tail that may begin a marker.
    held: String,
}

impl Default for HarmonyReader {
    fn default() -> Self {
        HarmonyReader { state: State::Header(String::new()), held: String::new() }
    }
}

impl HarmonyReader {
    /// A reader for a reply whose prompt ends inside the first message's header (`<|start|>assistant`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the turn has ended (`<|return|>` or `<|call|>` seen).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds one decoded piece; returns the message text it completes, by channel.
    pub fn push(&mut self, piece: &str) -> Vec<ChannelText> {
        self.held.push_str(piece);
        let mut out = Vec::new();
        loop {
            let marker = MARKERS.iter().filter_map(|m| self.held.find(m).map(|at| (at, *m))).min_by_key(|&(at, _)| at);
            let Some((at, marker)) = marker else { break };
            let before: String = self.held.drain(..at + marker.len()).collect();
            self.take(&before[..at], &mut out);
            self.state = match (std::mem::replace(&mut self.state, State::Done), marker) {
                (_, RETURN | CALL) => State::Done,
                (State::Done, _) => State::Done,
                (_, START) => State::Header(String::new()),
                (State::Header(h), MESSAGE) => {
                    let (channel, recipient) = parse_header(&h);
                    State::Message { channel, recipient }
                }
                (State::Header(h), other) => State::Header(h + other),
                (State::Message { .. }, END) => State::Header(String::new()),
                // A marker that has no place inside a message is text of it.
                (State::Message { channel, recipient }, other) => {
                    push_text(&mut out, &channel, &recipient, other);
                    State::Message { channel, recipient }
                }
            };
        }
        // Keep back a tail that could be the start of a marker split across pieces.
        let keep = self.held.rfind('<').filter(|&i| MARKERS.iter().any(|m| m.starts_with(&self.held[i..])));
        let ready: String = match keep {
            Some(i) => self.held.drain(..i).collect(),
            None => std::mem::take(&mut self.held),
        };
        self.take(&ready, &mut out);
        out
    }

    /// Text left at the end of the stream.
    pub fn finish(&mut self) -> Vec<ChannelText> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.held);
        self.take(&rest, &mut out);
        out
    }

    fn take(&mut self, text: &str, out: &mut Vec<ChannelText>) {
        if text.is_empty() {
            return;
        }
        match &mut self.state {
            State::Header(h) => h.push_str(text),
            State::Message { channel, recipient } => push_text(out, channel, recipient, text),
            State::Done => {}
        }
    }
}

fn push_text(out: &mut Vec<ChannelText>, channel: &str, recipient: &str, text: &str) {
    match out.last_mut() {
        Some(last) if last.channel == channel && last.recipient == recipient => last.text.push_str(text),
        _ => out.push(ChannelText { channel: channel.into(), recipient: recipient.into(), text: text.into() }),
    }
}

/// (channel, the rest of the header) of a header such as `assistant<|channel|>commentary to=functions.f`.
fn parse_header(header: &str) -> (String, String) {
    let Some((role_part, after)) = header.split_once(CHANNEL) else { return (String::new(), header.trim().into()) };
    let name_end = after.find(|c: char| c.is_whitespace() || c == '<').unwrap_or(after.len());
    let rest = format!("{}{}", role_part.trim(), &after[name_end..]);
    (after[..name_end].to_string(), rest.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pieces: &[&str]) -> (Vec<ChannelText>, bool) {
        let mut r = HarmonyReader::new();
        let mut out: Vec<ChannelText> = Vec::new();
        for p in pieces {
            for t in r.push(p) {
                push_text(&mut out, &t.channel, &t.recipient, &t.text);
            }
        }
        for t in r.finish() {
            push_text(&mut out, &t.channel, &t.recipient, &t.text);
        }
        (out, r.is_done())
    }

    #[test]
    fn splits_analysis_from_the_final_answer() {
        let pieces = [
            "<|channel|>",
            "analysis",
            "<|message|>",
            "User greets",
            ". Reply",
            ".",
            "<|end|>",
            "<|start|>",
            "assistant",
            "<|channel|>",
            "final",
            "<|message|>",
            "Hello",
            " there!",
            "<|return|>",
            "ignored",
        ];
        let (out, done) = read(&pieces);
        assert!(done);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].channel.as_str(), out[0].text.as_str()), ("analysis", "User greets. Reply."));
        assert_eq!(
            (out[1].channel.as_str(), out[1].text.as_str(), out[1].recipient.as_str()),
            ("final", "Hello there!", "assistant")
        );
    }

    #[test]
    fn a_tool_call_names_its_recipient_and_ends_the_turn() {
        let text = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"Oslo\"}<|call|>";
        let (out, done) = read(&[text]);
        assert!(done);
        assert_eq!(out[0].channel, "commentary");
        assert_eq!(out[0].recipient, "to=functions.get_weather <|constrain|>json");
        assert_eq!(out[0].text, "{\"location\":\"Oslo\"}");
    }

    #[test]
    fn markers_split_across_pieces_are_recognised() {
        let (out, _) = read(&["<|chan", "nel|>final<|mess", "age|>a <", "b <|", "end|>"]);
        assert_eq!(out, vec![ChannelText { channel: "final".into(), recipient: String::new(), text: "a <b ".into() }]);
    }
}
