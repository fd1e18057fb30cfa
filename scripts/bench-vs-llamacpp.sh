#!/usr/bin/env bash
# lowbit against llama.cpp on the same GGUF file, same thread count, in the same run:
# pp512 / tg128 (llama-bench's tests) with runs of the two interleaved, so drift in the machine's speed
# hits both alike. Prints a table of medians and lowbit/llama.cpp ratios; --json FILE also writes them.
#   scripts/bench-vs-llamacpp.sh [-t THREADS] [-r ROUNDS] [--json FILE] MODEL.gguf [MODEL.gguf ...]
# llama.cpp comes from ../shared/tools/llama-cpp-peer.sh (built once, cached), or $LLAMA_CPP_BIN.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
threads=2 rounds=3 json=""
models=()
while [ $# -gt 0 ]; do
  case $1 in
    -t) threads=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || { echo "usage: $0 [-t THREADS] [-r ROUNDS] [--json FILE] MODEL.gguf..." >&2; exit 2; }
bin=${LLAMA_CPP_BIN:-$(bash "$root/../shared/tools/llama-cpp-peer.sh")}
[ -x "$bin/llama-bench" ] || { echo "no llama-bench in $bin" >&2; exit 1; }
cargo build --release -q -p lowbit --manifest-path "$root/Cargo.toml"
lowbit=$root/target/release/lowbit
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

for m in "${models[@]}"; do
  key=$(basename "$m")
  for r in $(seq "$rounds"); do
    echo "[$key] round $r/$rounds: lowbit" >&2
    "$lowbit" bench "$m" -t "$threads" -r 1 --json > "$tmp/$key.lowbit.$r.json"
    echo "[$key] round $r/$rounds: llama.cpp" >&2
    "$bin/llama-bench" -m "$m" -p 512 -n 128 -t "$threads" -r 1 -o json > "$tmp/$key.llama.$r.json" 2>/dev/null
  done
done

python3 - "$tmp" "$threads" "$rounds" "$json" "${models[@]}" <<'PY'
import json, os, statistics, sys
tmp, threads, rounds, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = []
for m in sys.argv[5:]:
    key = os.path.basename(m)
    lb = {"pp": [], "tg": []}; lc = {"pp": [], "tg": []}
    for r in range(1, rounds + 1):
        j = json.load(open(f"{tmp}/{key}.lowbit.{r}.json"))
        lb["pp"] += j["pp"]["runs"]; lb["tg"] += j["tg"]["runs"]
        for t in json.load(open(f"{tmp}/{key}.llama.{r}.json")):
            test = "pp" if t["n_gen"] == 0 else "tg"
            lc[test] += t["samples_ts"]
    row = {"model": key, "file_bytes": os.path.getsize(m), "threads": threads, "rounds": rounds}
    for test in ("pp", "tg"):
        a, b = statistics.median(lb[test]), statistics.median(lc[test])
        row[test] = {"lowbit": a, "llama_cpp": b, "ratio": a / b, "lowbit_runs": lb[test], "llama_cpp_runs": lc[test]}
    rows.append(row)
print(f"{'model':<40} {'test':<6} {'lowbit t/s':>11} {'llama.cpp t/s':>14} {'ratio':>6}")
for row in rows:
    for test, name in (("pp", "pp512"), ("tg", "tg128")):
        t = row[test]
        print(f"{row['model']:<40} {name:<6} {t['lowbit']:>11.1f} {t['llama_cpp']:>14.1f} {t['ratio']:>6.2f}")
print(f"(medians of {rounds} interleaved rounds, {threads} threads)")
if out:
    with open(out + ".tmp", "w") as f:
        json.dump(rows, f, indent=1)
    os.replace(out + ".tmp", out)
PY
