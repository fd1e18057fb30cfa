#!/usr/bin/env bash
# lowbit's GGUF quantization, measured by llama.cpp and by lowbit on the same file: for each TYPE, writes
# MODEL quantized as TYPE (`lowbit quantize`), then reports llama-perplexity's PPL and `lowbit eval`'s PPL on the
# first CHUNKS chunks of ../shared/data/wiki.test.raw (ctx 512), and their ratio (bar: within ±0.5%).
#
#   scripts/check-llamacpp-ppl.sh MODEL.gguf TYPE [TYPE ...]      e.g. ... smollm2-f32.gguf Q4_K_M Q3_K_M TQ2_0
#
# A TYPE ending in "+pure" is written with --pure (Q4_K+pure). Environment: CHUNKS (12), THREADS (2), OUT (folder
# for the quantized files, default /tmp/lowbit-ppl), LOWBIT (target/release/lowbit). Needs the llama.cpp peer built
# (../shared/tools/llama-cpp-peer.sh prints its folder).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
MODEL=$1; shift
CHUNKS=${CHUNKS:-12}; THREADS=${THREADS:-2}; OUT=${OUT:-/tmp/lowbit-ppl}; LOWBIT=${LOWBIT:-target/release/lowbit}
CORPUS=../shared/data/wiki.test.raw
BIN=$(bash ../shared/tools/llama-cpp-peer.sh)
mkdir -p "$OUT"
printf '%-12s %12s %12s %9s %s\n' type llama.cpp lowbit ratio verdict
for T in "$@"; do
  type=${T%+pure}; pure=(); [ "$type" != "$T" ] && pure=(--pure)
  file="$OUT/$(basename "$MODEL" .gguf)-$T.gguf"
  "$LOWBIT" quantize "$MODEL" -o "$file" --type "$type" "${pure[@]}" >/dev/null
  llama=$("$BIN/llama-perplexity" -m "$file" -f "$CORPUS" -c 512 --chunks "$CHUNKS" -t "$THREADS" 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  [ -n "$llama" ] || { echo "$T: llama-perplexity gave no estimate" >&2; exit 1; }
  ours=$("$LOWBIT" eval "$file" --corpus "$CORPUS" --chunks "$CHUNKS" --json -t "$THREADS" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["ppl"])')
  python3 - "$T" "$llama" "$ours" <<'PY'
import sys
t, llama, ours = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ratio = ours / llama
print(f"{t:<12} {llama:12.4f} {ours:12.4f} {ratio:9.5f} {'ok' if abs(ratio - 1) <= 0.005 else 'OUTSIDE ±0.5%'}")
PY
done
