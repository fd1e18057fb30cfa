//! Chat templates rendered the way Hugging Face `transformers` renders them.
//!
//! `transformers.apply_chat_template` compiles a template in a Jinja2 sandbox with
//! `trim_blocks=True, lstrip_blocks=True`, registers `raise_exception`, `strftime_now` and a
//! `tojson` filter that is `json.dumps(x, ensure_ascii=False)` (Jinja's own escapes HTML
//! characters), and renders with `messages`, `tools=None`, `documents=None`,
//! `add_generation_prompt` and the tokenizer's special tokens (`bos_token`, `eos_token`). The
//! environment here is minijinja configured the same way, with Python's `str`/`dict` methods from
//! minijinja-contrib's pycompat. The golden test compares output byte for byte with Jinja2.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::tokenizer::Tokenizer;

const TEMPLATE_NAME: &str = "chat_template";

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template does not compile: {0:#}")]
    Syntax(#[source] minijinja::Error),
    #[error("chat template failed to render: {0:#}")]
    Render(#[source] minijinja::Error),
    /// The template itself rejected the conversation (`raise_exception`), e.g. roles that do not
    /// alternate. The message is the template's; it is meant for the user.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("template variable {0:?} is set by render itself and cannot be passed as extra")]
    ReservedVariable(String),
    #[error("chat messages cannot be converted to template values: {0}")]
    Messages(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, ChatTemplateError>;

/// One message as templates see it: `role`, `content`, and any further fields a template reads
/// (`thinking`, `tool_calls`, `name`, ...), in insertion order as in a Python dict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(flatten)]
    pub extra: Map<String, serde_json::Value>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), extra: Map::new() }
    }
}

/// Carried by the error `raise_exception` returns so render can tell it from engine errors.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos_token", &self.bos_token).field("eos_token", &self.eos_token).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors are reported here, not at the first render.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // transformers compiles with Jinja2's from_string: never auto-escaped.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_filter("tojson", tojson_filter);
        env.add_function("raise_exception", raise_exception);
        set_clock(&mut env, None);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(ChatTemplateError::Syntax)?;
        Ok(ChatTemplate { env, bos_token: None, eos_token: None })
    }

    /// The tokenizer's template with its BOS and EOS texts, or `None` if it has no template.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Option<Self>> {
        let Some(source) = tok.chat_template() else { return Ok(None) };
        let text = |id: Option<u32>| id.and_then(|id| tok.token_text(id));
        let template = Self::new(source)?;
        Ok(Some(template.with_special_tokens(text(tok.bos_id()).as_deref(), text(tok.eos_id()).as_deref())))
    }

    /// Sets `bos_token` and `eos_token` (left undefined when `None`, as transformers does).
    pub fn with_special_tokens(mut self, bos: Option<&str>, eos: Option<&str>) -> Self {
        self.bos_token = bos.map(str::to_string);
        self.eos_token = eos.map(str::to_string);
        self
    }

    /// Pins the time `strftime_now` reports (UTC), for reproducible prompts and tests.
    pub fn with_time(mut self, now: SystemTime) -> Self {
        set_clock(&mut self.env, Some(now));
        self
    }

    /// Renders a conversation. `extra` adds or overrides template variables (`tools`,
    /// `reasoning_effort`, `bos_token`, ...), like keyword arguments to `apply_chat_template`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &Map<String, serde_json::Value>,
    ) -> Result<String> {
        let mut ctx = Map::new();
        if let Some(bos) = &self.bos_token {
            ctx.insert("bos_token".into(), bos.clone().into());
        }
        if let Some(eos) = &self.eos_token {
            ctx.insert("eos_token".into(), eos.clone().into());
        }
        // transformers always passes these two, so templates may test `tools is none`.
        ctx.insert("tools".into(), serde_json::Value::Null);
        ctx.insert("documents".into(), serde_json::Value::Null);
        for (key, value) in extra {
            if key == "messages" || key == "add_generation_prompt" {
                return Err(ChatTemplateError::ReservedVariable(key.clone()));
            }
            ctx.insert(key.clone(), value.clone());
        }
        ctx.insert("messages".into(), serde_json::to_value(messages)?);
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());

        let template = self.env.get_template(TEMPLATE_NAME).map_err(ChatTemplateError::Render)?;
        template.render(Value::from_serialize(&ctx)).map_err(|e| match raised_message(&e) {
            Some(message) => ChatTemplateError::Raised(message),
            None => ChatTemplateError::Render(e),
        })
    }
}

fn raised_message(e: &minijinja::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(raised) = err.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        source = err.source();
    }
    None
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedException(message)))
}

fn set_clock(env: &mut Environment<'static>, fixed: Option<SystemTime>) {
    env.add_function("strftime_now", move |format: &str| -> std::result::Result<String, minijinja::Error> {
        let now = fixed.unwrap_or_else(SystemTime::now);
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(before) => -(before.duration().as_secs() as i64),
        };
        strftime(&CivilTime::from_unix(secs), format)
            .map_err(|directive| minijinja::Error::new(ErrorKind::InvalidOperation, directive))
    });
}

// ---------------------------------------------------------------------------------------------
// tojson: Python's json.dumps

/// `json.dumps(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False)` with
/// those four keyword arguments accepted, as transformers' filter does.
fn tojson_filter(value: &Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;

    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match (v.as_str(), i64::try_from(v.clone())) {
            (Some(s), _) => s.to_string(),
            (None, Ok(n)) => " ".repeat(n.max(0) as usize),
            _ => {
                return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an int or str"))
            }
        }),
    };
    // Python's defaults: ", " and ": " on one line; "," and ": " when indenting.
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let pair: Vec<String> = v
                .try_iter()?
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .filter(|p: &Vec<String>| p.len() == 2)
                .ok_or_else(|| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")
                })?;
            (pair[0].clone(), pair[1].clone())
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let json = PyJson {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    json.write(&mut out, value, 0)?;
    Ok(out)
}

struct PyJson {
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
}

fn not_serializable(value: &Value) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: a {} is not JSON serializable", value.kind()))
}

impl PyJson {
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> std::result::Result<(), minijinja::Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&number_text(value)?),
            ValueKind::String => self.write_str(out, value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(out, '[', ']', items.len(), depth, |out, i| {
                    self.write(out, &items[i], depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    entries.push((key_text(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.write_container(out, '{', '}', entries.len(), depth, |out, i| {
                    self.write_str(out, &entries[i].0);
                    out.push_str(&self.key_sep);
                    self.write(out, &entries[i].1, depth + 1)
                })?;
            }
            _ => return Err(not_serializable(value)),
        }
        Ok(())
    }

    fn write_container(
        &self,
        out: &mut String,
        open: char,
        close: char,
        len: usize,
        depth: usize,
        mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), minijinja::Error>,
    ) -> std::result::Result<(), minijinja::Error> {
        out.push(open);
        if len == 0 {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &self.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(indent);
                }
            }
        };
        for i in 0..len {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            newline(out, depth + 1);
            item(out, i)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    /// Python's `json` string escapes: the two-character forms, `\u00XX` for other controls,
    /// and with `ensure_ascii` every non-ASCII character as `\uXXXX` (surrogate pairs above BMP).
    fn write_str(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python converts int, float, bool and None keys to strings; anything else is a TypeError.
fn key_text(key: &Value) -> std::result::Result<String, minijinja::Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => number_text(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        _ => Err(not_serializable(key)),
    }
}

fn number_text(value: &Value) -> std::result::Result<String, minijinja::Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    let x = f64::try_from(value.clone())?;
    Ok(py_float_repr(x))
}

/// Python's `repr(float)` (which json.dumps uses): the shortest round-trip digits, positional for
/// decimal exponents in [-4, 16), otherwise scientific with a signed two-digit-minimum exponent.
fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    // Rust's `{:e}` gives the same shortest digits: "-1.2345e-7", "1e16".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{text}")
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

// ---------------------------------------------------------------------------------------------
// strftime_now

/// A UTC calendar time.
struct CivilTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Monday, as Python's `weekday()`.
    weekday: u32,
    /// 1-based day of the year.
    yearday: u32,
}

impl CivilTime {
    fn from_unix(secs: i64) -> CivilTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil: eras of 400 years starting on 1 March.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yearday = CUMULATIVE[month as usize - 1] + day + u32::from(leap && month > 2);
        CivilTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday (3).
            weekday: (days + 3).rem_euclid(7) as u32,
            yearday,
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// The C-locale `strftime` directives templates use, with glibc's `-` flag (no padding).
/// An unknown directive is an error naming it.
fn strftime(t: &CivilTime, format: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let pad = directive != Some('-');
        if !pad {
            directive = chars.next();
        }
        let num = |out: &mut String, n: i64, width: usize| {
            let _ = if pad { write!(out, "{n:0width$}") } else { write!(out, "{n}") };
        };
        let hour12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        match directive {
            Some('Y') => {
                let _ = write!(out, "{}", t.year);
            }
            Some('y') => num(&mut out, t.year.rem_euclid(100), 2),
            Some('m') => num(&mut out, t.month.into(), 2),
            Some('d') => num(&mut out, t.day.into(), 2),
            Some('e') => {
                let _ = if pad { write!(out, "{:2}", t.day) } else { write!(out, "{}", t.day) };
            }
            Some('H') => num(&mut out, t.hour.into(), 2),
            Some('I') => num(&mut out, hour12.into(), 2),
            Some('M') => num(&mut out, t.minute.into(), 2),
            Some('S') => num(&mut out, t.second.into(), 2),
            Some('j') => num(&mut out, t.yearday.into(), 3),
            Some('p') => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(MONTHS[t.month as usize - 1]),
            Some('b') | Some('h') => out.push_str(&MONTHS[t.month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[t.weekday as usize]),
            Some('a') => out.push_str(&WEEKDAYS[t.weekday as usize][..3]),
            Some('u') => num(&mut out, (t.weekday + 1).into(), 1),
            Some('w') => num(&mut out, ((t.weekday + 1) % 7).into(), 1),
            Some('F') => {
                let _ = write!(out, "{}-{:02}-{:02}", t.year, t.month, t.day);
            }
            Some('T') => {
                let _ = write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
            }
            Some('%') => out.push('%'),
            other => {
                let shown = other.map(|c| c.to_string()).unwrap_or_default();
                return Err(format!("strftime_now: unsupported directive %{}{shown}", if pad { "" } else { "-" }));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_matches_known_dates() {
        // 2000-02-29 12:34:56 UTC (leap day, a Tuesday), from `date -u -d @951827696`.
        let t = CivilTime::from_unix(951_827_696);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2000, 2, 29, 12, 34, 56));
        assert_eq!((t.weekday, t.yearday), (1, 60));
        // 1969-12-31 23:59:59 UTC, a Wednesday, day 365.
        let t = CivilTime::from_unix(-1);
        assert_eq!((t.year, t.month, t.day, t.hour, t.weekday, t.yearday), (1969, 12, 31, 23, 2, 365));
    }

    #[test]
    fn strftime_rejects_unknown_directives() {
        let t = CivilTime::from_unix(0);
        assert_eq!(strftime(&t, "%Y-%m-%d %H:%M:%S").unwrap(), "1970-01-01 00:00:00");
        assert!(strftime(&t, "%Q").unwrap_err().contains("%Q"));
        assert!(strftime(&t, "trailing %").is_err());
    }
}
