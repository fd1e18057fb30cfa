//! The server end to end on SmolLM2 over plain TCP: OpenAI's answers whole and streamed, the queue's 429, and the
//! 200 malformed or hostile requests of tests/data/hostile.jsonl, each answered 4xx with /health answering after
//! it. (Tests with the official `openai` Python client: scripts/openai_client_test.py, run by .ci/run.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lowbit_formats::source::ModelSource;
use lowbit_model::{Model, NativeFactory};
use lowbit_runtime::tokenizer::Tokenizer;
use lowbit_serve::ServeOptions;

const MODEL: &str = "smollm2";

/// A server on a free port, running until the test process ends.
fn start(opts: ServeOptions) -> Option<SocketAddr> {
    let path = lowbit_testdata::model(lowbit_testdata::SMOLLM2)?;
    let source = ModelSource::open(&path).unwrap();
    let model = Model::load(&source, &NativeFactory::default()).unwrap();
    let ModelSource::Gguf(file) = &source else { panic!("SmolLM2 is a GGUF file") };
    let tokenizer = Tokenizer::from_gguf(file).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || lowbit_serve::serve(model, tokenizer, opts, listener, |a| send.send(a).unwrap()));
    Some(receive.recv_timeout(Duration::from_secs(120)).unwrap())
}

fn options() -> ServeOptions {
    ServeOptions { model_name: MODEL.into(), max_body: 256 << 10, ..ServeOptions::default() }
}

/// Sends `raw` and reads until the server closes: (status, body).
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // A server may answer and close before it has read all of a large request. (No half-close after it: hyper
    // takes that for a client gone.)
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 1 << 16];
    // Until the server closes or the response is whole (a raw request may leave the connection open).
    while let Ok(n @ 1..) = s.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
        if response_is_whole(&out) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Whether `out` holds a response's head and all of the body its Content-Length or chunked encoding announces.
fn response_is_whole(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let head = head.to_ascii_lowercase();
    if let Some(n) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return n.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
    }
    head.contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n")
}

fn http(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, body) = exchange(addr, &http("POST", path, &body.to_string()));
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

#[test]
fn answers_whole_and_streamed_as_openai_does() {
    let Some(addr) = start(options()) else { return };
    let (status, health) = exchange(addr, &http("GET", "/health", ""));
    assert_eq!((status, health.contains("ok")), (200, true));
    let (status, models) = exchange(addr, &http("GET", "/v1/models", ""));
    assert_eq!(status, 200);
    assert!(models.contains(&format!(r#""id":"{MODEL}""#)), "{models}");

    let ask = serde_json::json!({
        "model": MODEL, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0,
    });
    let (status, whole) = post(addr, "/v1/completions", &ask);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(" Paris"), "{text:?}");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["usage"]["completion_tokens"], 6);
    assert_eq!(whole["usage"]["total_tokens"], whole["usage"]["prompt_tokens"].as_u64().unwrap() + 6);

    // The same greedy answer streamed: chunks that join into it, then the finish, the usage and [DONE].
    let mut stream = ask.clone();
    stream["stream"] = true.into();
    stream["stream_options"] = serde_json::json!({ "include_usage": true });
    let (status, body) = exchange(addr, &http("POST", "/v1/completions", &stream.to_string()));
    assert_eq!(status, 200);
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let joined: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(joined, text);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[n - 1]["usage"], whole["usage"]);

    // Chat: the template applies; a stop string ends the answer without being part of it.
    let chat = serde_json::json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 24,
        "temperature": 0, "stop": ["."],
    });
    let (status, answer) = post(addr, "/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.contains('.'), "{content:?}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let (status, generated) = post(
        addr,
        "/generate",
        &serde_json::json!({ "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0 }),
    );
    assert_eq!((status, generated["generated_text"].as_str()), (200, Some(text.as_str())));
}

/// One sequence at a time and one place in the queue: with one request running and one waiting, a third is
/// answered 429.
#[test]
fn a_full_queue_answers_429() {
    let Some(addr) = start(ServeOptions { max_batch: 1, queue: 1, ..options() }) else { return };
    let long = |stream: bool| {
        serde_json::json!({ "model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "stream": stream })
            .to_string()
    };
    // The first request is running once its first chunk arrives.
    let _running = first_chunk(addr, &long(true));
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting.write_all(&http("POST", "/v1/completions", &long(false))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = exchange(addr, &http("POST", "/v1/completions", &long(false)));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limit_error"), "{body}");
}

/// A streaming request that gets its first chunk: the stream to read on.
fn first_chunk(addr: SocketAddr, body: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&http("POST", "/v1/completions", body)).unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    reader
}

/// The status line of a request's answer, read as soon as it comes (a stream's comes once it is queued), and the
/// connection, kept open.
fn status_of(addr: SocketAddr, body: &str) -> (String, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&http("POST", "/v1/completions", body)).unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(s);
    reader.read_line(&mut line).unwrap();
    (line, reader)
}

/// One place to run and one to wait: a client that disconnects mid-stream gives its place up at its next token,
/// so of the two requests sent after it, one runs and one waits, and neither is refused (had the first gone on,
/// the third would get 429, as in `a_full_queue_answers_429`).
#[test]
fn a_client_that_leaves_frees_its_place() {
    let Some(addr) = start(ServeOptions { max_batch: 1, queue: 1, ..options() }) else { return };
    let long = serde_json::json!({ "model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "stream": true })
        .to_string();
    drop(first_chunk(addr, &long));
    std::thread::sleep(Duration::from_millis(300));
    let (second, _running) = status_of(addr, &long);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    std::thread::sleep(Duration::from_millis(300));
    let (third, _waiting) = status_of(addr, &long);
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
}

#[test]
fn hostile_requests_get_4xx_and_the_server_stays_up() {
    let Some(addr) = start(options()) else { return };
    let list = include_str!("data/hostile.jsonl");
    let mut statuses = std::collections::BTreeMap::new();
    for (i, line) in list.lines().enumerate() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = r["name"].as_str().unwrap();
        let raw = match r["raw"].as_str() {
            Some(raw) => raw.as_bytes().to_vec(),
            None => {
                let body = r["body"].as_str().unwrap().replace("MODEL", MODEL);
                http(r["method"].as_str().unwrap(), r["path"].as_str().unwrap(), &body)
            }
        };
        let started = std::time::Instant::now();
        let (status, body) = exchange(addr, &raw);
        if started.elapsed() > Duration::from_secs(2) {
            println!("request {i} ({name}) took {:.1} s", started.elapsed().as_secs_f64());
        }
        assert!((400..500).contains(&status), "request {i} ({name}): status {status}, {body:.300}");
        *statuses.entry(status).or_insert(0) += 1;
        let (health, _) = exchange(addr, &http("GET", "/health", ""));
        assert_eq!(health, 200, "/health after request {i} ({name})");
    }
    assert_eq!(statuses.values().sum::<usize>(), 200);
    println!("statuses: {statuses:?}");
}
