#!/usr/bin/env bash
# The test suite: fetches the real models it checks against (cached), then runs every test, then OpenAI's own
# Python client against `lowbit serve` (the openai package in a cached virtual environment).
# Real-model tests read $LOWBIT_MODELS (default ~/.cache/lowbit/models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh all >/dev/null
LOWBIT_REQUIRE_MODELS=1 cargo test --workspace --release

OPENAI_VERSION=3.60.0
venv=$HOME/.cache/lowbit/venv-openai
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "== pip install openai==$OPENAI_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" || { echo "test: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install -q "openai==$OPENAI_VERSION"
fi
cargo build --release -p lowbit
"$venv/bin/python" scripts/openai_client_test.py "${CARGO_TARGET_DIR:-target}/release/lowbit" \
  "${LOWBIT_MODELS:-$HOME/.cache/lowbit/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
