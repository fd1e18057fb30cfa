//! `lowbit serve`: an HTTP API that OpenAI's clients talk to, in front of one model.
//!
//! Requests are parsed and checked on the HTTP side ([`api`]): a bad one is answered 4xx with an OpenAI-style
//! error object before it reaches the model. A good one becomes a [`engine::Job`] and waits in a bounded queue
//! (full: 429) for the one engine thread, which owns the model and runs several sequences at once, a token of
//! each per round, each with its own KV cache. Text goes back to the request as it is generated; a request whose
//! client has gone (its receiver dropped) is cancelled at the next token.

pub mod api;
pub mod engine;
pub mod error;
pub mod routes;

use std::net::SocketAddr;

/// What the server allows and how much it runs at once.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The name clients ask for (`model` in requests, `/v1/models`).
    pub model_name: String,
    /// Sequences decoded together by the engine.
    pub max_batch: usize,
    /// Requests waiting for a place in the batch; one more is answered 429.
    pub queue: usize,
    /// The most tokens one request may ask to generate.
    pub max_tokens: usize,
    /// KV-cache positions per sequence: prompt plus generated tokens.
    pub ctx: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model_name: "model".into(),
            max_batch: 8,
            queue: 64,
            max_tokens: 1024,
            ctx: 4096,
            max_body: 1 << 20,
        }
    }
}

/// Serves `model` on `listener` until the process ends; `ready` is called with the bound address first (port 0
/// picks a free one).
pub fn serve(
    model: lowbit_model::Model,
    tokenizer: lowbit_runtime::tokenizer::Tokenizer,
    opts: ServeOptions,
    listener: std::net::TcpListener,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let ctx = opts.ctx.min(model.config.context_length);
    let opts = ServeOptions { ctx, ..opts };
    let template = lowbit_runtime::chat_template::ChatTemplate::from_tokenizer(&tokenizer)
        .map_err(|e| std::io::Error::other(format!("the model's chat template: {e}")))?;
    let tokenizer = std::sync::Arc::new(tokenizer);
    let queue = engine::start(model, tokenizer.clone(), opts.max_batch, opts.queue)?;
    let app = routes::router(routes::App { opts, queue, tokenizer, template, requests: Default::default() });
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        ready(addr);
        axum::serve(listener, app).await
    })
}
