//! The HTTP routes: OpenAI's `/v1/chat/completions`, `/v1/completions` and `/v1/models`, `/health`, and
//! `/generate` (`{"prompt"}` → `{"generated_text"}`). Streaming answers are server-sent events in OpenAI's chunk
//! format, ending with `data: [DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lowbit_runtime::chat_template::ChatTemplate;
use lowbit_runtime::generate::FinishReason;
use lowbit_runtime::tokenizer::Tokenizer;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::{self, Checked};
use crate::engine::{Event, Job};
use crate::error::ApiError;
use crate::ServeOptions;

pub struct App {
    pub opts: ServeOptions,
    pub queue: mpsc::Sender<Job>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub requests: AtomicU64,
}

type Shared = State<Arc<App>>;

pub fn router(app: App) -> Router {
    let limit = app.opts.max_body;
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/generate", post(generate))
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, "not_found_error", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| declared_size(limit, request, next)))
        .with_state(Arc::new(app))
}

/// Answers 413 at once to a request whose Content-Length is over the limit, rather than waiting for a body it
/// would refuse (or that never comes).
async fn declared_size(limit: usize, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    match declared.map(|v| v.parse::<u64>()) {
        Some(Ok(n)) if n > limit as u64 => ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the body has {n} bytes; this server takes at most {limit}"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn models(State(app): Shared) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": app.opts.model_name, "object": "model", "created": now(), "owned_by": "lowbit" }],
    }))
}

/// The body, or the limit's or the connection's error as an OpenAI error.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError::status(r.status(), "invalid_request_error", r.body_text()))
}

/// Which endpoint an answer is shaped for.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// The fixed parts of one answer's JSON.
#[derive(Clone)]
struct Shape {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

impl Shape {
    fn new(app: &App, kind: Kind) -> Shape {
        let n = app.requests.fetch_add(1, Ordering::Relaxed);
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        Shape { kind, id: format!("{prefix}-{n}"), created: now(), model: app.opts.model_name.clone() }
    }

    fn whole(&self, text: String, finish: FinishReason, prompt: usize, completion: usize) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish_reason(finish),
            }),
            Kind::Completion => {
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason(finish) })
            }
        };
        let object = if self.kind == Kind::Chat { "chat.completion" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage(prompt, completion),
        })
    }

    /// One streamed chunk: a piece of text, the end (`finish`), or with neither the chat's opening role.
    fn chunk(&self, text: Option<&str>, finish: Option<FinishReason>) -> String {
        let finish = finish.map(finish_reason);
        let (object, choice) = match self.kind {
            Kind::Chat => {
                let delta = match (text, finish) {
                    (Some(t), _) => json!({ "content": t }),
                    (None, None) => json!({ "role": "assistant", "content": "" }),
                    (None, Some(_)) => json!({}),
                };
                (
                    "chat.completion.chunk",
                    json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }),
                )
            }
            Kind::Completion => (
                "text_completion",
                json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish }),
            ),
        };
        let chunk = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice],
        });
        chunk.to_string()
    }

    /// The chunk `stream_options.include_usage` asks for: no choices, the usage.
    fn usage_chunk(&self, prompt: usize, completion: usize) -> String {
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage(prompt, completion),
        })
        .to_string()
    }
}

fn submit(app: &App, job: Checked, harmony: bool) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    let (events, receiver) = mpsc::unbounded_channel();
    let job = Job { prompt: job.prompt, opts: job.opts, harmony, events };
    app.queue.try_send(job).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => ApiError::status(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("{} requests are waiting already; retry later", app.opts.queue),
        ),
        mpsc::error::TrySendError::Closed(_) => {
            ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the engine has stopped")
        }
    })?;
    Ok(receiver)
}

fn engine_failed(why: String) -> ApiError {
    ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "server_error", format!("generation failed: {why}"))
}

/// All of a job's text, why it ended and its token counts.
async fn collect(mut events: mpsc::UnboundedReceiver<Event>) -> Result<(String, FinishReason, usize, usize), ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, prompt_tokens, completion_tokens } => {
                return Ok((text, finish, prompt_tokens, completion_tokens))
            }
            Event::Failed(why) => return Err(engine_failed(why)),
        }
    }
    Err(engine_failed("the engine dropped the request".into()))
}

/// A job's events as server-sent events in OpenAI's chunk format. When the client goes, the stream (and with it
/// the receiver) is dropped, and the engine stops the job at its next token.
fn stream(shape: Shape, events: mpsc::UnboundedReceiver<Event>, include_usage: bool) -> Response {
    struct Streaming {
        events: mpsc::UnboundedReceiver<Event>,
        pending: VecDeque<String>,
        done: bool,
        shape: Shape,
        include_usage: bool,
    }
    let mut pending = VecDeque::new();
    if shape.kind == Kind::Chat {
        pending.push_back(shape.chunk(None, None));
    }
    let state = Streaming { events, pending, done: false, shape, include_usage };
    let chunks = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), s));
            }
            if s.done {
                return None;
            }
            match s.events.recv().await {
                Some(Event::Text(t)) => s.pending.push_back(s.shape.chunk(Some(&t), None)),
                Some(Event::Done { finish, prompt_tokens, completion_tokens }) => {
                    s.pending.push_back(s.shape.chunk(None, Some(finish)));
                    if s.include_usage {
                        s.pending.push_back(s.shape.usage_chunk(prompt_tokens, completion_tokens));
                    }
                    s.pending.push_back("[DONE]".into());
                    s.done = true;
                }
                Some(Event::Failed(why)) => {
                    s.pending.push_back(engine_failed(why).body().to_string());
                    s.done = true;
                }
                None => {
                    s.pending.push_back(engine_failed("the engine dropped the request".into()).body().to_string());
                    s.done = true;
                }
            }
        }
    });
    Sse::new(chunks).into_response()
}

async fn answer(app: &App, shape: Shape, job: Checked, harmony: bool) -> Result<Response, ApiError> {
    let (streaming, include_usage) = (job.stream, job.include_usage);
    let events = submit(app, job, harmony)?;
    if streaming {
        return Ok(stream(shape, events, include_usage));
    }
    let (text, finish, prompt, completion) = collect(events).await?;
    Ok(Json(shape.whole(text, finish, prompt, completion)).into_response())
}

async fn chat(State(app): Shared, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: api::ChatRequest = api::parse(&body(raw)?)?;
    api::check_model(&request.model, &app.opts)?;
    let prompt = api::chat_prompt(&request.messages, app.template.as_ref(), &app.tokenizer)?;
    let job = api::check(prompt, "messages", &request.sampling, &app.opts)?;
    // A harmony model (GPT-OSS) answers in channels: the client gets the final one.
    let harmony = app.tokenizer.token_id("<|channel|>").is_some();
    answer(&app, Shape::new(&app, Kind::Chat), job, harmony).await
}

async fn completions(State(app): Shared, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: api::CompletionRequest = api::parse(&body(raw)?)?;
    api::check_model(&request.model, &app.opts)?;
    let text = api::completion_text(&request.prompt)?;
    let prompt = api::encode(&app.tokenizer, text, app.tokenizer.adds_bos())?;
    let job = api::check(prompt, "prompt", &request.sampling, &app.opts)?;
    answer(&app, Shape::new(&app, Kind::Completion), job, false).await
}

async fn generate(State(app): Shared, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: api::GenerateRequest = api::parse(&body(raw)?)?;
    let prompt = api::encode(&app.tokenizer, &request.prompt, app.tokenizer.adds_bos())?;
    let job = api::check(prompt, "prompt", &request.sampling, &app.opts)?;
    if job.stream {
        return Err(ApiError::invalid(Some("stream"), "/generate answers whole: stream with /v1/completions"));
    }
    let (text, ..) = collect(submit(&app, job, false)?).await?;
    Ok(Json(json!({ "generated_text": text })).into_response())
}
