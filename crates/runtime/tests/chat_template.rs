//! Chat templates rendered by lowbit must be byte-identical to Jinja2 rendering them in the
//! environment Hugging Face transformers builds (goldens: scripts/golden/gen_chat_golden.py).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lowbit_formats::gguf::GgufFile;
use lowbit_runtime::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
use lowbit_runtime::tokenizer::Tokenizer;
use serde::Deserialize;
use serde_json::Map;

#[derive(Deserialize)]
struct Golden {
    fixed_unix_time: u64,
    templates: Map<String, serde_json::Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    extra: Map<String, serde_json::Value>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    expected: Option<String>,
    error: Option<String>,
}

fn golden() -> Golden {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat_golden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn template(golden: &Golden, name: &str) -> ChatTemplate {
    let source = golden.templates[name].as_str().unwrap();
    ChatTemplate::new(source)
        .unwrap_or_else(|e| panic!("template {name}: {e}"))
        .with_time(UNIX_EPOCH + Duration::from_secs(golden.fixed_unix_time))
}

#[test]
fn renders_like_jinja2() {
    let golden = golden();
    let mut failures = Vec::new();
    for (i, case) in golden.cases.iter().enumerate() {
        let t =
            template(&golden, &case.template).with_special_tokens(case.bos_token.as_deref(), case.eos_token.as_deref());
        let got = t.render(&case.messages, case.add_generation_prompt, &case.extra);
        match (&case.expected, &case.error, got) {
            (Some(want), _, Ok(got)) if *want == got => {}
            (_, Some(want), Err(ChatTemplateError::Raised(got))) if *want == got => {}
            (want, want_err, got) => failures.push(format!(
                "case {i} ({}): expected {:?} / error {:?}\n got {:?}",
                case.template, want, want_err, got
            )),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), golden.cases.len(), failures.join("\n"));
}

#[test]
fn the_golden_covers_each_template_and_both_outcomes() {
    let golden = golden();
    for name in golden.templates.keys() {
        assert!(golden.cases.iter().any(|c| &c.template == name), "no case renders {name}");
    }
    assert!(golden.cases.iter().any(|c| c.error.is_some()));
    assert!(golden.cases.iter().filter(|c| c.template == "gpt-oss").count() >= 6);
}

#[test]
fn syntax_errors_are_reported_at_construction() {
    assert!(matches!(ChatTemplate::new("{% for m in messages %}unclosed"), Err(ChatTemplateError::Syntax(_))));
    // transformers' `{% generation %}` tag is a Jinja2 extension minijinja does not have.
    assert!(matches!(ChatTemplate::new("{% generation %}x{% endgeneration %}"), Err(ChatTemplateError::Syntax(_))));
}

#[test]
fn reserved_variables_cannot_be_overridden() {
    let t = ChatTemplate::new("{{ messages|length }}").unwrap();
    let mut extra = Map::new();
    extra.insert("messages".into(), serde_json::json!([]));
    assert!(matches!(t.render(&[], false, &extra), Err(ChatTemplateError::ReservedVariable(v)) if v == "messages"));
}

#[test]
fn engine_errors_are_not_mistaken_for_raised_exceptions() {
    let t = ChatTemplate::new("{{ tojson_me|tojson }}").unwrap();
    // An undefined value is not JSON serializable (a TypeError in Python).
    assert!(matches!(t.render(&[], false, &Map::new()), Err(ChatTemplateError::Render(_))));
    let t = ChatTemplate::new("{{ [1]|tojson(bogus=1) }}").unwrap();
    assert!(matches!(t.render(&[], false, &Map::new()), Err(ChatTemplateError::Render(_))));
}

#[test]
fn strftime_now_reads_the_clock_when_not_pinned() {
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}").unwrap();
    let year: i64 = t.render(&[], false, &Map::new()).unwrap().parse().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    // Mean Gregorian year; a day's slack either way covers New Year's Eve.
    let approx = 1970.0 + now as f64 / 31_556_952.0;
    assert!((year as f64 - approx).abs() < 1.01, "year {year}, clock says {approx}");
}

#[test]
fn smollm2_gguf_template_and_special_tokens() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let golden = golden();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    assert_eq!(tok.chat_template(), golden.templates["smollm2"].as_str());
    let t = ChatTemplate::from_tokenizer(&tok)
        .unwrap()
        .expect("SmolLM2 carries a template")
        .with_time(UNIX_EPOCH + Duration::from_secs(golden.fixed_unix_time));
    let case = golden.cases.iter().find(|c| c.template == "smollm2").unwrap();
    assert_eq!(case.bos_token.as_deref(), Some("<|im_start|>"));
    assert_eq!(
        &t.render(&case.messages, case.add_generation_prompt, &case.extra).unwrap(),
        case.expected.as_ref().unwrap()
    );
}
