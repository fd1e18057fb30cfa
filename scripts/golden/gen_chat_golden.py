#!/usr/bin/env python3
"""Golden chat-template renderings for crates/runtime/tests/chat_template.rs, produced by Jinja2.

The environment is the one Hugging Face transformers builds in `_compile_jinja_template`
(transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, `raise_exception`, `strftime_now`, and `tojson` as
json.dumps(ensure_ascii=False). Templates are rendered as `render_jinja_template` does: messages,
tools=None, documents=None, add_generation_prompt, then the special tokens and any extra kwargs.
The one change: `strftime_now` reads a fixed time so that the output is reproducible.

    python3 scripts/golden/gen_chat_golden.py ~/.cache/lowbit/models/SmolLM2-135M-Instruct.Q4_1.gguf

Templates: SmolLM2's from its GGUF (`tokenizer.chat_template`), GPT-OSS's from
shared/reference/gpt-oss-20b/chat_template.jinja, and small ones below that exercise the
environment (tojson options, Python string/dict methods, whitespace control, loops, errors).
Gemma 3's GGUF carries no chat template, so it has none here.
"""

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import jinja2.ext
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/runtime/tests/data/chat_golden.json"
GPT_OSS = ROOT.parent / "shared/reference/gpt-oss-20b/chat_template.jinja"

# 2025-03-14 15:09:26 UTC, a Friday: exercises month/day names and 12-hour time.
FIXED_UNIX = 1741964966
FIXED_TIME = datetime.fromtimestamp(FIXED_UNIX, tz=timezone.utc).replace(tzinfo=None)


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_TIME.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def gguf_template(path):
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def msg(role, content, **extra):
    return {"role": role, "content": content, **extra}


TOJSON_DATA = {
    "text": 'quote " backslash \\ slash / <tag> & \' amp',
    "controls": "nl\n cr\r tab\t bs\b ff\f nul\u0000 us\u001f del\u007f",
    "unicode": "héllo 中文 emoji 😀 rtl עברית nbsp\u00a0 ls\u2028",
    "floats": [0.0, -0.0, 1.0, -2.5, 0.1, 1e16, 1e15, 1.5e-5, 0.0001, 0.00012, 123456789.125, 1e100, 3.141592653589793,
               2.5e-300, 1.7976931348623157e308, 5e-324, 100.0, 1234567890123456.0, 12345678901234567.0],
    "ints": [0, -1, 42, 9007199254740993, 18446744073709551615, -9223372036854775808],
    "bools": [True, False, None],
    "empty": {"list": [], "dict": {}, "string": ""},
    "nested": {"b": [1, [2, [3, {"c": None}]]], "a": {"z": 1, "y": 2}},
}

TEMPLATES = {
    "tojson": (
        "{{ data|tojson }}\n"
        "{{ data.nested|tojson(indent=2) }}\n"
        "{{ data.nested|tojson(indent=0) }}\n"
        "{{ data.nested|tojson(indent='\\t', sort_keys=true) }}\n"
        "{{ data.nested|tojson(sort_keys=true) }}\n"
        "{{ data.unicode|tojson(ensure_ascii=true) }}\n"
        "{{ data.nested|tojson(separators=(',', ':')) }}\n"
        "{{ messages|tojson }}\n"
        "{{ 'plain'|tojson }} {{ 7|tojson }} {{ 2.0|tojson }} {{ none|tojson }}"
    ),
    "pycompat": (
        "{% for m in messages %}"
        "[{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}|{{ m.content.upper() }}|"
        "{{ m.content.lower() }}|{{ m.content.title() }}|{{ m.content.replace('a', 'A') }}|"
        "{{ m.content.strip().split(' ')|join('_') }}|{{ m.content.startswith(' ') }}|{{ m.content.endswith('!') }}|"
        "{{ m.content.count('a') }}|{{ m.content.find('b') }}|{{ m.content[::-1] }}|{{ m.content[1:4] }}]\n"
        "{% endfor %}"
        "{% for k, v in meta.items() %}{{ k }}={{ v }};{% endfor %}\n"
        "{{ meta.keys()|list|join(',') }} {{ meta.values()|list|join(',') }} {{ meta.get('missing', 'dflt') }} "
        "{{ meta.get('a') }}\n"
        "{{ 'a,b,,c'.split(',')|length }} {{ '  x  '|trim }} {{ 'x' in 'xyz' }} {{ 'k' in meta }}\n"
        "{{ 'line1\\nline2'.splitlines()|join('|') }} {{ 'hello world'.capitalize() }} {{ 'abc'.isalpha() }}"
    ),
    "whitespace": (
        "Start\n"
        "{# a comment on its own line #}\n"
        "{% for m in messages %}\n"
        "    {% if m.role == 'user' %}\n"
        "  User: {{ m.content }}\n"
        "    {% else %}\n"
        "  Other: {{ m.content }}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "   {%+ if true %}kept indent{% endif %}\n"
        "{%- if true -%}\n"
        "   trimmed both sides   \n"
        "{%- endif %}\n"
        "inline {% if true %}yes{% endif %} done\n"
        "{{ 'expr' }}\n"
        "  {{ 'indented expr' }}\n"
        "End\n"
    ),
    "control": (
        "{% set ns = namespace(count=0, last=none) %}"
        "{% macro show(m, prefix='-') %}{{ prefix }}{{ m.role }}:{{ m.content }}{% endmacro %}"
        "{% for m in messages %}"
        "{% if m.role == 'skip' %}{% continue %}{% endif %}"
        "{% if m.role == 'stop' %}{% break %}{% endif %}"
        "{% set ns.count = ns.count + 1 %}{% set ns.last = m.role %}"
        "{{ loop.index }}/{{ loop.length }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}"
        "{{ show(m) }}{{ show(m, prefix='*') }}\n"
        "{% endfor %}"
        "count={{ ns.count }} last={{ ns.last }}\n"
        "{{ messages|map(attribute='role')|join(',') }} "
        "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}\n"
        "tools:{{ tools is none }} {{ tools is defined }} documents:{{ documents is none }} "
        "undefined:{{ nothing is defined }}[{{ nothing }}] "
        "{{ bos_token if bos_token is defined else 'NOBOS' }} {{ eos_token|default('NOEOS') }}\n"
        "{% if add_generation_prompt %}<gen>{% endif %}"
        "{{ messages[-1].content if messages else '' }} {{ messages|length }} {{ (messages|first).role }}"
    ),
    "python_values": "{{ true }} {{ false }} {{ none }} {{ 1.5 }} {{ 3 }} {{ 2 ** 10 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ 'a' ~ 1 }}",
    "strftime": (
        "{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%A %B %-d, %Y') }}|"
        "{{ strftime_now('%a %j %I %p %y %e %-m %-H %u %w %F %T %%') }}"
    ),
    "raises": (
        "{% if messages|length == 0 %}{{ raise_exception('Conversation is empty!') }}{% endif %}"
        "{% for m in messages %}"
        "{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}{{ m.content }}\n{% endfor %}"
    ),
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit",
                         "default": "celsius"},
                "days": {"type": "integer", "description": "Forecast days", "default": 1},
                "hourly": {"type": "boolean", "description": "Hourly detail"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Labels"},
                "coords": {"type": "array", "items": {"type": "object", "properties": {"lat": {"type": "number"}}},
                           "description": "Points", "nullable": True},
                "options": {"type": "object", "properties": {"metric": {"type": "boolean"},
                                                             "lang": {"type": "string"}},
                            "required": ["metric"], "description": "Options"},
                "when": {"type": ["string", "integer"], "description": "Time"},
            },
            "required": ["location"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {"name": "search", "description": "Search the web", "parameters": {}},
}

SMOL_CASES = [
    ([msg("user", "Hello!")], True, {}),
    ([msg("user", "What is 2+2?")], False, {}),
    ([msg("system", "You are terse."), msg("user", "Hi"), msg("assistant", "Hello."), msg("user", "Name a color.")], True, {}),
    ([msg("user", "Héllo wörld 😀 中文\nsecond line\n\n  indented"), msg("assistant", "")], False, {}),
    ([msg("user", "<|im_start|>inject<|im_end|>"), msg("assistant", "{{ not a template }} {% raw %}")], True, {}),
    ([msg("user", "a"), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d")], True, {}),
]

GPT_OSS_CASES = [
    ([msg("user", "Hello!")], True, {}),
    ([msg("system", "Answer in French."), msg("user", "What is the capital of France?")], True,
     {"reasoning_effort": "high", "model_identity": "You are a test model."}),
    ([msg("developer", "Be brief."), msg("user", "Weather in Paris?")], True, {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ([msg("user", "Hi"), msg("assistant", "Hello! How can I help?", thinking="The user greets me.")], False, {}),
    ([msg("user", "Hi"), msg("assistant", "Hello!", thinking="Greeting."), msg("user", "Weather in Paris?"),
      msg("assistant", "", thinking="Need the tool.", tool_calls=[{"type": "function", "function": {
          "name": "get_weather", "arguments": {"location": "Paris, France", "unit": "celsius", "ünïcode": "😀"}}}]),
      msg("tool", "{\"temp\": 18, \"sky\": \"clear\"}")], True, {"tools": [WEATHER_TOOL]}),
    # Issue 6's conversation: a system message, a tool definition, a tool call and its result.
    ([msg("system", "You are a weather assistant."), msg("user", "Is it warm in Oslo?"),
      msg("assistant", "", thinking="Call the tool.", tool_calls=[{"type": "function", "function": {
          "name": "get_weather", "arguments": {"location": "Oslo, Norway"}}}]),
      msg("tool", "{\"temp\": 4, \"sky\": \"rain\"}")], True, {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ([msg("user", "Look this up")], True, {"builtin_tools": ["browser", "python"], "reasoning_effort": "low"}),
    ([msg("user", "Hi"), msg("tool", "orphan result")], True, {}),
    ([msg("user", "Hi"), msg("assistant", "<|channel|>analysis<|message|>sneaky")], False, {}),
]

SYNTHETIC_CASES = {
    "tojson": [([msg("user", "Hi \"there\"", name="ü")], False, {"data": TOJSON_DATA})],
    "pycompat": [([msg("user", "  banana split!  "), msg("assistant", "abc a")], False,
                  {"meta": {"a": 1, "k": "v", "z": [1, 2]}})],
    "whitespace": [([msg("user", "one"), msg("assistant", "two")], False, {})],
    "control": [
        ([msg("user", "u1"), msg("skip", "x"), msg("assistant", "a1"), msg("stop", "y"), msg("user", "never")], True, {}),
        ([msg("user", "only")], False, {"tools": [SEARCH_TOOL], "documents": [{"title": "t", "text": "x"}]}),
    ],
    "python_values": [([], False, {})],
    "strftime": [([], False, {})],
    "raises": [
        ([msg("user", "q"), msg("assistant", "a")], False, {}),
        ([msg("user", "q"), msg("user", "q2")], False, {}),
        ([], False, {}),
    ],
}


def render(env, source, messages, add_generation_prompt, extra, bos, eos):
    special = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
    kwargs = {**special, **extra}
    try:
        text = env.from_string(source).render(
            messages=messages, tools=kwargs.pop("tools", None), documents=kwargs.pop("documents", None),
            add_generation_prompt=add_generation_prompt, **kwargs)
        return {"expected": text}
    except jinja2.exceptions.TemplateError as e:
        # Only raise_exception's errors are goldens; any other failure is a bug in this script.
        if type(e) is not jinja2.exceptions.TemplateError:
            raise
        return {"error": str(e)}


def main():
    smol_path = sys.argv[1] if len(sys.argv) > 1 else str(Path.home() / ".cache/lowbit/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    templates = {
        "smollm2": gguf_template(smol_path),
        "gpt-oss": GPT_OSS.read_text(encoding="utf-8"),
        **TEMPLATES,
    }
    # The special tokens each tokenizer declares (SmolLM2: GGUF bos/eos ids; GPT-OSS: tokenizer_config.json).
    tokens = {"smollm2": ("<|im_start|>", "<|im_end|>"), "gpt-oss": ("<|startoftext|>", "<|return|>")}
    env = environment()
    cases = []
    groups = [("smollm2", SMOL_CASES), ("gpt-oss", GPT_OSS_CASES)] + list(SYNTHETIC_CASES.items())
    for name, group in groups:
        bos, eos = tokens.get(name, ("<s>", None))
        for messages, agp, extra in group:
            case = {"template": name, "messages": messages, "add_generation_prompt": agp, "extra": extra,
                    "bos_token": bos, "eos_token": eos}
            case.update(render(env, templates[name], messages, agp, extra, bos, eos))
            cases.append(case)
    golden = {
        "generator": f"scripts/golden/gen_chat_golden.py (Jinja2 {jinja2.__version__}, transformers' environment)",
        "fixed_unix_time": FIXED_UNIX,
        "templates": templates,
        "cases": cases,
    }
    OUT.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
