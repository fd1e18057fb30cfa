#!/usr/bin/env python3
"""What llama.cpp's `llama-imatrix` collects and `llama-quantize --imatrix` writes with it, for SmolLM2-135M, so that
tests can check lowbit's importance matrices against them (crates/quant/tests/llamacpp_imatrix.rs).

Run from the repository root (needs the peer's llama-imatrix and llama-quantize, and SmolLM2's F32 file, which
`lowbit quantize MODEL -o F32FILE --type F32` writes):

  LLAMA_BIN=~/.cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin \\
  python3 scripts/golden/gen_imatrix_llamacpp.py /tmp/smollm2-f32.gguf

It writes, under crates/quant/tests/data/:

  imatrix_calib.txt     the first lines of shared/data/groups_merged.txt (at least CHUNKS × CTX tokens of text)
  imatrix_smollm2.gguf  `llama-imatrix -f imatrix_calib.txt -o imatrix_smollm2.gguf -c 512 -b 512 --chunks 4
                        --no-ppl` (run inside that folder, so the file records the bare dataset name)
  imatrix_llamacpp.json per file type, the size and SHA-256 of `llama-quantize --imatrix imatrix_smollm2.gguf
                        F32 OUT TYPE` (run inside that folder, so the output records the bare imatrix name), and the
                        commands
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

DATA = "crates/quant/tests/data"
CALIB_SOURCE = "../shared/data/groups_merged.txt"
CALIB, IMATRIX, OUT = "imatrix_calib.txt", "imatrix_smollm2.gguf", "imatrix_llamacpp.json"
CHUNKS, CTX = 4, 512
# About 4 bytes of this text per token: twice the bytes a chunk set needs is plenty.
CALIB_BYTES = 2 * 4 * CHUNKS * CTX
TYPES = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q4_0"]


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def main():
    bin_dir = os.path.expanduser(os.environ["LLAMA_BIN"])
    f32 = os.path.abspath(sys.argv[1])
    lines, size = [], 0
    with open(CALIB_SOURCE, encoding="utf-8") as fh:
        for line in fh:
            lines.append(line)
            size += len(line.encode())
            if size >= CALIB_BYTES:
                break
    with open(os.path.join(DATA, CALIB), "w", encoding="utf-8") as fh:
        fh.write("".join(lines))
    imatrix_cmd = [os.path.join(bin_dir, "llama-imatrix"), "-m", f32, "-f", CALIB, "-o", IMATRIX, "-c", str(CTX),
                   "-b", str(CTX), "--chunks", str(CHUNKS), "--no-ppl", "-t", "2"]
    subprocess.run(imatrix_cmd, check=True, cwd=DATA, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {
        "source": "llama.cpp 0c1e570 (llama-cpp-python 0.3.36)",
        "imatrix_command": " ".join(["llama-imatrix"] + imatrix_cmd[1:2] + ["F32"] + imatrix_cmd[3:]),
        "imatrix": IMATRIX,
        "imatrix_sha256": sha256(os.path.join(DATA, IMATRIX)),
        "calib": CALIB,
        "chunks": CHUNKS,
        "ctx": CTX,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for ftype in TYPES:
            out = os.path.join(tmp, "out.gguf")
            cmd = [os.path.join(bin_dir, "llama-quantize"), "--imatrix", IMATRIX, f32, out, ftype]
            subprocess.run(cmd, check=True, cwd=DATA, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result["runs"][ftype] = {"bytes": os.path.getsize(out), "sha256": sha256(out)}
            os.remove(out)
            print(ftype, "done", file=sys.stderr)
    result["quantize_command"] = f"llama-quantize --imatrix {IMATRIX} F32 OUT TYPE"
    with open(os.path.join(DATA, OUT), "w") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main()
