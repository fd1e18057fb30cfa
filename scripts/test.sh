#!/usr/bin/env bash
# The test suite: fetches the real models it checks against (cached), then runs every test, then two checks by
# independent Python code, each in a cached virtual environment: OpenAI's own client against `lowbit serve`, and
# PyPI gguf + numpy reading lowbit's GGUF conversion of the GPT-OSS fixtures.
# Real-model tests read $LOWBIT_MODELS (default ~/.cache/lowbit/models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh all >/dev/null
LOWBIT_REQUIRE_MODELS=1 cargo test --workspace --release

# venv DIR CHECK PACKAGE...: a virtual environment at DIR whose python passes CHECK, made afresh when it does not.
venv() {
  local dir=$1 check=$2
  shift 2
  if ! "$dir/bin/python" -c "$check" 2>/dev/null; then
    echo "== pip install $* into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir" || { echo "test: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
    "$dir/bin/pip" install -q "$@"
  fi
}

cargo build --release -p lowbit
lowbit="${CARGO_TARGET_DIR:-target}/release/lowbit"

OPENAI_VERSION=3.60.0
venv "$HOME/.cache/lowbit/venv-openai" "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" \
  "openai==$OPENAI_VERSION"
"$HOME/.cache/lowbit/venv-openai/bin/python" scripts/openai_client_test.py "$lowbit" \
  "${LOWBIT_MODELS:-$HOME/.cache/lowbit/models}/SmolLM2-135M-Instruct.Q4_1.gguf"

GGUF_VERSION=0.19.0
venv "$HOME/.cache/lowbit/venv-gguf" "import gguf, numpy, importlib.metadata as m, sys; sys.exit(m.version('gguf') != '$GGUF_VERSION')" \
  "gguf==$GGUF_VERSION" numpy
fixtures=../shared/fixtures/gpt-oss-tiny
"$HOME/.cache/lowbit/venv-gguf/bin/python" scripts/check_gpt_oss_gguf.py "$lowbit" "$fixtures/tiny_mxfp4" "$fixtures/tiny_f32"
