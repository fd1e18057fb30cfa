#!/usr/bin/env python3
"""Golden token ids for crates/runtime/tests/tokenizer_golden.rs, produced by llama.cpp.

Every string of crates/runtime/tests/data/tokenizer_strings.json is written byte-exact to a file
and tokenized by llama.cpp's `llama-tokenize` with the model's own BOS rule and special-token
parsing on (its defaults: `--ids --no-escape -f FILE`). llama.cpp is the reference because lowbit
runs GGUF files the way llama.cpp does; its tokenizers are written independently of lowbit's.

    LLAMA_TOKENIZE=~/.cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin/llama-tokenize \
    python3 scripts/golden/gen_token_ids.py ~/.cache/lowbit/models

llama-tokenize is built in the folder shared/tools/llama-cpp-peer.sh prints:
`ninja -C <that folder>/.. llama-tokenize`.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "crates/runtime/tests/data"
MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenize(tool, model, text, scratch):
    scratch.write_bytes(text.encode("utf-8"))
    out = subprocess.run(
        [tool, "-m", str(model), "-f", str(scratch), "--no-escape", "--ids", "--log-disable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # The ids are the last line: "[1, 2, 3]".
    return json.loads(out.strip().splitlines()[-1])


def version(tool):
    out = subprocess.run([tool, "--version"], capture_output=True, text=True)
    return (out.stdout + out.stderr).strip().splitlines()[0]


def main():
    models_dir = Path(sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/lowbit/models"))
    tool = os.environ.get("LLAMA_TOKENIZE", "llama-tokenize")
    strings = json.loads((DATA / "tokenizer_strings.json").read_text(encoding="utf-8"))["strings"]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "text.txt"
        for key, name in MODELS.items():
            model = models_dir / name
            ids = [tokenize(tool, model, s, scratch) for s in strings]
            golden = {
                "model": name,
                "model_sha256": sha256(model),
                "generator": f"llama-tokenize --ids --no-escape -f FILE ({version(tool)})",
                "ids": ids,
            }
            out = DATA / f"tokenizer_ids_{key}.json"
            with open(out, "w", encoding="utf-8") as f:
                f.write("{\n")
                for field in ("model", "model_sha256", "generator"):
                    f.write(f" {json.dumps(field)}: {json.dumps(golden[field])},\n")
                # One string's ids per line keeps diffs readable.
                f.write(' "ids": [\n')
                f.write(",\n".join("  " + json.dumps(x) for x in ids))
                f.write("\n ]\n}\n")
            print(f"{out}: {len(ids)} strings")


if __name__ == "__main__":
    main()
