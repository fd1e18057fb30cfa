#!/usr/bin/env bash
# lowbit's GGUF quantization, measured by llama.cpp and by lowbit on the same file: for each TYPE, writes
# MODEL quantized as TYPE (`lowbit quantize`), then reports llama-perplexity's PPL and `lowbit eval`'s PPL on the
# first CHUNKS chunks of ../shared/data/wiki.test.raw (ctx 512), and their ratio (bar: within ±0.5%).
#
# Three comparisons per file. "native": llama-perplexity against lowbit's --runtime native-llama, both with int8
# activations rounded llama.cpp's way (one scale per 256 values (Q8_K) for k-quant and ternary weights, per 32
# otherwise): the bar. "blocks32": against lowbit's default runtime, which rounds activations per 32 values
# whatever the weights, so its k-quant perplexities sit a little lower (closer to the weights' own); shown, not
# judged. "weights": f32 activations on both sides -- llama-perplexity on the file dequantized by llama-quantize,
# lowbit's --runtime f32 on the file itself -- which isolates how the two read the stored weights.
#
#   scripts/check-llamacpp-ppl.sh MODEL.gguf TYPE [TYPE ...]      e.g. ... smollm2-f32.gguf Q4_K_M Q3_K_M TQ2_0
#
# A TYPE ending in "+pure" is written with --pure (Q4_K+pure). Environment: CHUNKS (12), THREADS (2), OUT (folder
# for the quantized files, default /tmp/lowbit-ppl), LOWBIT (target/release/lowbit). Needs the llama.cpp peer built
# (../shared/tools/llama-cpp-peer.sh prints its folder).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,15p' "$0"; exit 2; }
MODEL=$1; shift
CHUNKS=${CHUNKS:-12}; THREADS=${THREADS:-2}; OUT=${OUT:-/tmp/lowbit-ppl}; LOWBIT=${LOWBIT:-target/release/lowbit}
CORPUS=../shared/data/wiki.test.raw
BIN=$(bash ../shared/tools/llama-cpp-peer.sh)
mkdir -p "$OUT"
printf '%-12s %-8s %12s %12s %9s %s\n' type compare llama.cpp lowbit ratio verdict
llama_ppl() {
  "$BIN/llama-perplexity" -m "$1" -f "$CORPUS" -c 512 --chunks "$CHUNKS" -t "$THREADS" 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'
}
lowbit_ppl() {
  "$LOWBIT" -t "$THREADS" eval "$@" --corpus "$CORPUS" --chunks "$CHUNKS" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["ppl"])'
}
verdict() {
  python3 - "$@" <<'PY'
import sys
t, kind, llama, ours = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
ratio = ours / llama
judged = kind != "blocks32"
verdict = ("ok" if abs(ratio - 1) <= 0.005 else "OUTSIDE ±0.5%") if judged else "(not judged)"
print(f"{t:<12} {kind:<8} {llama:12.4f} {ours:12.4f} {ratio:9.5f} {verdict}")
PY
}
for T in "$@"; do
  type=${T%+pure}; pure=(); [ "$type" != "$T" ] && pure=(--pure)
  file="$OUT/$(basename "$MODEL" .gguf)-$T.gguf"
  "$LOWBIT" quantize "$MODEL" -o "$file" --type "$type" "${pure[@]}" >/dev/null
  llama=$(llama_ppl "$file")
  [ -n "$llama" ] || { echo "$T: llama-perplexity gave no estimate" >&2; exit 1; }
  verdict "$T" native "$llama" "$(lowbit_ppl --runtime native-llama "$file")"
  verdict "$T" blocks32 "$llama" "$(lowbit_ppl "$file")"
  "$BIN/llama-quantize" --allow-requantize "$file" "$OUT/dequantized.gguf" F32 >/dev/null 2>&1
  llama=$(llama_ppl "$OUT/dequantized.gguf")
  [ -n "$llama" ] || { echo "$T: llama-perplexity gave no estimate for the dequantized file" >&2; exit 1; }
  verdict "$T" weights "$llama" "$(lowbit_ppl --runtime f32 "$file")"
  rm -f "$OUT/dequantized.gguf"
done
