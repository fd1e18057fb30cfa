#!/usr/bin/env python3
"""Per-tensor fingerprints of llama.cpp's `llama-quantize --allow-requantize --pure F32 OUT TYPE`
for SmolLM2-135M (the F32 file made from the Q4_1 package by llama-quantize ... F32), so a test can
check that lowbit's GGUF export writes the same bytes without shipping 1 GB of files.

Run from the repository root (needs PyPI gguf + numpy and the peer's llama-quantize):
  LLAMA_BIN=~/.cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin \
  python3 scripts/golden/gen_quantize_llamacpp.py /path/to/smollm2-f32.gguf

Fingerprint of a tensor's bytes: pad with zeros to a multiple of 8, read little-endian u64 words
w_i, sum w_i * ((i * 0x9E3779B97F4A7C15) | 1) modulo 2^64 (crates/quant/tests/llamacpp_pure.rs
computes the same).
"""
import json, os, subprocess, sys, tempfile
import numpy as np
from gguf import GGUFReader

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
OUT = "crates/quant/tests/data/llamacpp_pure_smollm2.json"


def fingerprint(raw: bytes) -> int:
    pad = (-len(raw)) % 8
    words = np.frombuffer(raw + b"\0" * pad, dtype="<u8")
    weights = (np.arange(len(words), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(words * weights, dtype=np.uint64))


def main():
    f32 = sys.argv[1]
    quantize = os.path.join(os.environ["LLAMA_BIN"], "llama-quantize")
    result = {"source": "llama-quantize --allow-requantize --pure smollm2-f32.gguf OUT TYPE (llama.cpp 0c1e570)",
              "types": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for t in TYPES:
            out = os.path.join(tmp, f"{t}.gguf")
            subprocess.run([quantize, "--allow-requantize", "--pure", f32, out, t], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = GGUFReader(out)
            result["types"][t] = {
                "file_bytes": os.path.getsize(out),
                "tensors": {tn.name: [tn.tensor_type.name, str(fingerprint(bytes(np.asarray(tn.data).view(np.uint8))))]
                            for tn in r.tensors},
            }
            os.remove(out)
            print(t, "done", file=sys.stderr)
    with open(OUT, "w") as fh:
        json.dump(result, fh, indent=0, sort_keys=True)


if __name__ == "__main__":
    main()
