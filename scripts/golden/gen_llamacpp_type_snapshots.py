#!/usr/bin/env python3
"""llama.cpp's own record of its per-tensor type choices (tests/snapshots/*.schema in the llama.cpp tree, made by
its tests/test-quant-type-selection.cpp from real models' metadata), condensed for lowbit's rule test
(crates/quant/tests/llamacpp_type_snapshots.rs): for dense models whose tensors follow the standard llama layout and
whose row lengths are multiples of 256, so that the test can rebuild their tensor lists from the header alone.

Run from the repository root:

  python3 scripts/golden/gen_llamacpp_type_snapshots.py \\
      ~/.cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/tests/snapshots

Writes crates/quant/tests/data/llamacpp_type_snapshots.json: per model its architecture, hyperparameters, whether
the output matrix is tied to the token embedding (no section names output.weight), and per file type lowbit writes
the tensors whose type differs from the file type's default, as {type: {tensor name without "blk.N.": [N, ...]}}
(N = -1 for tensors outside the blocks).
"""
import json
import re
import sys
from pathlib import Path

# Model file, architecture (the schema header does not name it).
MODELS = {"meta-llama-3.1-70b-instruct": "llama", "qwen3-0.6b": "qwen3", "qwen3-14b": "qwen3", "gemma-3-4b-it": "gemma3"}
FTYPES = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
          "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "TQ1_0", "TQ2_0", "MXFP4_MOE"}
OUT = Path("crates/quant/tests/data/llamacpp_type_snapshots.json")


def main():
    snapshots = Path(sys.argv[1])
    result = {}
    for model, arch in MODELS.items():
        params, sections, section = {}, {}, None
        for line in (snapshots / f"{model}.schema").read_text().splitlines():
            if line.startswith("# n_embd"):
                params = {k: int(v) for k, v in (kv.split("=") for kv in line[2:].split(", "))}
            elif line.startswith("["):
                name, default = line[1:].split("] ")
                section = name if name in FTYPES else None
                if section:
                    sections[section] = {"default": default, "overrides": {}}
            elif line and not line.startswith("#") and section:
                tensor, kind = line.split()
                m = re.fullmatch(r"blk\.(\d+)\.(.+)", tensor)
                layer, rest = (int(m.group(1)), m.group(2)) if m else (-1, tensor)
                sections[section]["overrides"].setdefault(kind, {}).setdefault(rest, []).append(layer)
        tied = not any("output.weight" in names for s in sections.values() for names in s["overrides"].values())
        result[model] = {"arch": arch, "params": params, "tied": tied, "ftypes": sections}
        print(model, len(sections), "file types", file=sys.stderr)
    OUT.write_text(json.dumps(result, separators=(",", ":"), sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
