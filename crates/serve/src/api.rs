//! The requests OpenAI's clients send, checked and turned into what the engine runs. Every field the server
//! acts on is typed; a wrong type, a value out of range, an unknown model, a prompt that does not fit the
//! context: each is a 4xx naming the field, before any generation.

use lowbit_runtime::chat_template::{ChatMessage, ChatTemplate};
use lowbit_runtime::generate::GenerateOptions;
use lowbit_runtime::sampler::SamplingParams;
use lowbit_runtime::tokenizer::Tokenizer;
use serde::Deserialize;

use crate::error::ApiError;
use crate::ServeOptions;

/// OpenAI allows at most this many stop sequences.
const MAX_STOPS: usize = 4;

/// `stop`: one string or a list.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's `content`: a string, or parts of which the text ones are read.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// The sampling fields chat and completions share.
#[derive(Deserialize, Debug, Default)]
pub struct Sampling {
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub n: Option<u64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt`: a string, or a list holding one.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `POST /generate`: `{"prompt": ...}` and the same sampling fields.
#[derive(Deserialize, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A request ready for the engine.
#[derive(Debug)]
pub struct Checked {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses a JSON body as `T`; syntax and type errors become a 400 that quotes serde's message.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() { "malformed JSON" } else { "invalid request" };
        ApiError::invalid(None, format!("{what}: {e}"))
    })
}

pub fn check_model(asked: &str, opts: &ServeOptions) -> Result<(), ApiError> {
    match asked == opts.model_name {
        true => Ok(()),
        false => Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            message: format!("the model `{asked}` does not exist; this server serves `{}`", opts.model_name),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }),
    }
}

/// The conversation rendered by the model's chat template, as token ids.
pub fn chat_prompt(
    messages: &[Message],
    template: Option<&ChatTemplate>,
    tokenizer: &Tokenizer,
) -> Result<Vec<u32>, ApiError> {
    let template = template
        .ok_or_else(|| ApiError::invalid(Some("messages"), "this model has no chat template: use /v1/completions"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(Some("messages"), format!("unknown role `{}`", m.role)));
        }
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                Some("messages"),
                                format!("content parts of type `{kind}` are not supported (text only)"),
                            ))
                        }
                    }
                }
                text
            }
        };
        turns.push(ChatMessage::new(&m.role, text));
    }
    let text = template
        .render(&turns, true, &Default::default())
        .map_err(|e| ApiError::invalid(Some("messages"), format!("the chat template refused them: {e}")))?;
    encode(tokenizer, &text, false)
}

pub fn encode(tokenizer: &Tokenizer, text: &str, add_bos: bool) -> Result<Vec<u32>, ApiError> {
    tokenizer.encode(text, add_bos).map_err(|e| ApiError::invalid(Some("prompt"), format!("tokenizing: {e}")))
}

/// The single prompt of a completions request.
pub fn completion_text(prompt: &Prompt) -> Result<&str, ApiError> {
    match prompt {
        Prompt::One(p) => Ok(p),
        Prompt::Many(list) if list.len() == 1 => Ok(&list[0]),
        Prompt::Many(list) => Err(ApiError::invalid(
            Some("prompt"),
            format!("{} prompts in one request: this server takes one", list.len()),
        )),
    }
}

/// Checks the sampling fields against the server's limits and the prompt's length; `source` names the field the
/// prompt came from (`messages`, `prompt`).
pub fn check(prompt: Vec<u32>, source: &'static str, s: &Sampling, opts: &ServeOptions) -> Result<Checked, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid(Some(source), "the prompt is empty"));
    }
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(Some("n"), "this server generates one choice per request (n = 1)"));
    }
    let ctx = opts.ctx;
    if prompt.len() >= ctx {
        return Err(ApiError::invalid(
            Some(source),
            format!("the prompt has {} tokens; this model's context holds {ctx}", prompt.len()),
        )
        .with_code("context_length_exceeded"));
    }
    let room = ctx - prompt.len();
    let max_tokens = match s.max_completion_tokens.or(s.max_tokens) {
        None => opts.max_tokens.min(room),
        Some(0) => return Err(ApiError::invalid(Some("max_tokens"), "max_tokens must be at least 1")),
        Some(n) if n > opts.max_tokens as u64 => {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                format!("max_tokens is {n}; this server allows at most {}", opts.max_tokens),
            ))
        }
        Some(n) if n as usize > room => {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                format!(
                    "this model's context holds {ctx} tokens; the prompt has {} and max_tokens asks for {n}",
                    prompt.len()
                ),
            )
            .with_code("context_length_exceeded"))
        }
        Some(n) => n as usize,
    };
    let ranged = |v: Option<f64>, name: &'static str, lo: f64, hi: f64, default: f64| -> Result<f32, ApiError> {
        match v {
            None => Ok(default as f32),
            Some(x) if (lo..=hi).contains(&x) => Ok(x as f32),
            Some(x) => Err(ApiError::invalid(Some(name), format!("{name} is {x}; it must be within {lo}..={hi}"))),
        }
    };
    let stop = match &s.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(list)) => list.clone(),
    };
    if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(Some("stop"), format!("stop takes up to {MAX_STOPS} non-empty strings")));
    }
    let sampling = SamplingParams {
        // OpenAI's defaults: temperature 1 and no top-k or min-p cut.
        temperature: ranged(s.temperature, "temperature", 0.0, 2.0, 1.0)?,
        top_p: ranged(s.top_p, "top_p", 0.0, 1.0, 1.0)?,
        top_k: 0,
        min_p: 0.0,
        presence_penalty: ranged(s.presence_penalty, "presence_penalty", -2.0, 2.0, 0.0)?,
        frequency_penalty: ranged(s.frequency_penalty, "frequency_penalty", -2.0, 2.0, 0.0)?,
        seed: s.seed.map_or_else(|| SamplingParams::default().seed, |v| v as u64),
        ..SamplingParams::default()
    };
    let stream = s.stream.unwrap_or(false);
    let include_usage = s.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    Ok(Checked { prompt, opts: GenerateOptions { max_tokens, sampling, stop, ctx }, stream, include_usage })
}
