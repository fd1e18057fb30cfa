#!/usr/bin/env python3
"""What llama.cpp's `llama-quantize` writes for whole models, compactly, so that tests can check that lowbit's GGUF
export writes the same files without shipping gigabytes: for SmolLM2-135M and Gemma-3-270M, every mix
(`Q2_K`, `Q3_K_S` … `Q5_K_M`, `Q6_K`, the legacy types, `TQ1_0`, `TQ2_0`, `MXFP4_MOE`) and every `--pure` type.

Run from the repository root (needs PyPI gguf + numpy, the peer's llama-quantize, and the F32 files, which
`lowbit quantize MODEL -o F32FILE --type F32` writes identically to `llama-quantize --allow-requantize MODEL F32FILE
F32`):

  LLAMA_BIN=~/.cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin \\
  python3 scripts/golden/gen_quantize_llamacpp.py smollm2=/work/models/smollm2-f32.gguf gemma3=/work/models/gemma3-f32.gguf

For each model it writes crates/quant/tests/data/llamacpp_<model>.json:

  tensors       tensor names in the order llama-quantize writes them
  runs          per run ("Q4_K_M", "Q4_K --pure", …): the command's type argument and --pure flag,
                general.file_type, the file's size and fingerprint, and each tensor's storage type as its ggml type
                id (in `tensors` order)
  fingerprints  per tensor, per storage type it has in any run: the fingerprint of its bytes (a tensor quantized to
                one type has the same bytes in every run, which the script checks)

Fingerprint of bytes: pad with zeros to a multiple of 8, read little-endian u64 words w_i, sum w_i·((i·0x9E3779B97F4A7C15)
| 1) modulo 2^64, as 16 hex digits (crates/quant/tests/llamacpp_quantize.rs computes the same).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

MIXES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
         "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4_MOE", "F16", "BF16", "F32"]
PURE = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0", "MXFP4_MOE"]
OUT = "crates/quant/tests/data/llamacpp_{}.json"


def fingerprint(raw: bytes) -> str:
    pad = (-len(raw)) % 8
    words = np.frombuffer(raw + b"\0" * pad, dtype="<u8")
    weights = (np.arange(len(words), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return f"{int(np.sum(words * weights, dtype=np.uint64)):016x}"


def file_fingerprint(path: str) -> str:
    with open(path, "rb") as fh:
        return fingerprint(fh.read())


def main():
    quantize = os.path.join(os.environ["LLAMA_BIN"], "llama-quantize")
    for arg in sys.argv[1:]:
        model, f32 = arg.split("=", 1)
        result = {"source": f"llama-quantize --allow-requantize [--pure] {os.path.basename(f32)} OUT TYPE "
                            "(llama.cpp 0c1e570)",
                  "tensors": None, "runs": {}, "fingerprints": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for ftype, pure in [(t, False) for t in MIXES] + [(t, True) for t in PURE]:
                out = os.path.join(tmp, "out.gguf")
                cmd = [quantize, "--allow-requantize"] + (["--pure"] if pure else []) + [f32, out, ftype]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                r = GGUFReader(out)
                names = [t.name for t in r.tensors]
                if result["tensors"] is None:
                    result["tensors"] = names
                assert names == result["tensors"], f"{ftype}: tensor order changed"
                types = []
                for t in r.tensors:
                    kind = t.tensor_type.name
                    fp = fingerprint(bytes(np.asarray(t.data).view(np.uint8)))
                    seen = result["fingerprints"].setdefault(t.name, {})
                    assert seen.setdefault(kind, fp) == fp, f"{ftype} {t.name}: {kind} bytes differ between runs"
                    types.append(int(t.tensor_type))
                run = f"{ftype} --pure" if pure else ftype
                result["runs"][run] = {
                    "type": ftype,
                    "pure": pure,
                    "file_type": int(r.fields["general.file_type"].contents()),
                    "file_bytes": os.path.getsize(out),
                    "file_fingerprint": file_fingerprint(out),
                    "types": types,
                }
                os.remove(out)
                print(model, run, "done", file=sys.stderr)
        with open(OUT.format(model), "w") as fh:
            json.dump(result, fh, indent=None, separators=(",", ":"), sort_keys=True)
            fh.write("\n")


if __name__ == "__main__":
    main()
