#!/usr/bin/env python3
"""Golden fixtures for lowbit's reference dequantization (crates/formats/src/dequant/), computed by an
independent implementation: PyPI `gguf` (`gguf.quants.dequantize`, `gguf.GGUFReader`).

Run from the repository root (needs `pip install gguf numpy`; gguf 0.19.0 and numpy 2.4 were used):

    python3 scripts/golden/gen_dequant.py                      # random blocks of every type
    python3 scripts/golden/gen_dequant.py --models /work/models  # also the real-tensor fixture

It writes into crates/formats/tests/data/dequant/:

  <type>.bin   random blocks of that GGUF type (fixed seed, so reruns are byte-identical)
  <type>.f32   what gguf.quants.dequantize makes of them, little-endian f32
  real_tensors.json   (only with --models) for a few tensors of the two test models: their element
               count, a hash of their raw bytes (to recognise the file) and of gguf's dequantized
               values, and the first values; crates/formats/tests/dequant_golden.rs compares lowbit's
               dequantization with it when the model files are present ($LOWBIT_MODELS).

Random block bytes cover every quant and packed-scale bit pattern; only the f16 scale fields (d,
dmin, m) are overwritten with finite values of varied magnitude, and MXFP4's exponent byte with
exponents whose values stay finite (subnormal scales included), so that outputs are finite and
comparable. Plain types (F32/F16/BF16) keep fully random bits, NaN and infinities included. gguf
has no I8 dequantizer; its expected values are numpy's int8 -> float32 conversion.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

OUT_DIR = Path("crates/formats/tests/data/dequant")
SEED = 20240611

# Byte offsets of the f16 scale fields inside one block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.TQ1_0: [52],
    T.TQ2_0: [64],
}
# Byte offsets of E8M0 exponent fields (MXFP4's block scale is 2^(e - 128)).
E8M0_FIELDS = {T.MXFP4: [0]}
N_QUANT_BLOCKS = {32: 16, 256: 8}
N_PLAIN_ELEMENTS = 256

REAL_TENSORS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": [
        "token_embd.weight",  # Q8_0
        "blk.0.ffn_down.weight",  # Q4_1
        "blk.0.attn_norm.weight",  # F32
    ],
    "gemma-3-270m-q4_k_m.gguf": [
        "blk.0.attn_k.weight",  # Q5_0
        "blk.0.attn_output.weight",  # Q4_K
        "blk.0.ffn_down.weight",  # Q6_K
        "blk.0.attn_v.weight",  # Q8_0
        "output_norm.weight",  # F32
    ],
}
HEAD = 16


def fixture_name(t: T) -> str:
    return t.name.lower()


def random_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 values of both signs spanning about six decades, as raw bytes."""
    mags = 10.0 ** rng.uniform(-5, 1, n)
    return (rng.choice([-1.0, 1.0], n) * mags).astype(np.float16).view(np.uint8).reshape(n, 2)


def quant_blocks(rng: np.random.Generator, t: T) -> np.ndarray:
    block_len, block_bytes = GGML_QUANT_SIZES[t]
    n = N_QUANT_BLOCKS[block_len]
    blocks = rng.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)
    # Extreme codes: every quant and packed scale bit set, then every one clear.
    blocks[1, :] = 0xFF
    blocks[2, :] = 0x00
    if t in E8M0_FIELDS:
        off = E8M0_FIELDS[t][0]
        blocks[:, off] = rng.integers(100, 156, n)
        # The largest exponent whose values stay finite (12 * 2^124), and the two subnormal scales.
        blocks[1, off], blocks[2, off], blocks[3, off] = 252, 1, 0
        return blocks.reshape(-1)
    for off in F16_FIELDS[t]:
        blocks[:, off : off + 2] = random_scales(rng, n)
    # An f16 subnormal scale, whose conversion to f32 is the easiest to get wrong.
    blocks[3, F16_FIELDS[t][0] : F16_FIELDS[t][0] + 2] = np.array([3], dtype=np.uint16).view(np.uint8)
    return blocks.reshape(-1)


def plain_elements(rng: np.random.Generator, t: T) -> np.ndarray:
    width = {T.F32: 4, T.F16: 2, T.BF16: 2, T.I8: 1}[t]
    return rng.integers(0, 256, size=N_PLAIN_ELEMENTS * width, dtype=np.uint8)


def reference(raw: np.ndarray, t: T) -> np.ndarray:
    if t == T.I8:
        return raw.view(np.int8).astype(np.float32)
    return np.asarray(dequantize(raw, t), dtype=np.float32).reshape(-1)


def write_random_fixtures(rng: np.random.Generator) -> None:
    plain = [T.F32, T.F16, T.BF16, T.I8]
    # New types go last, so that the fixtures of the earlier ones stay byte-identical.
    for t in plain + list(F16_FIELDS) + list(E8M0_FIELDS):
        raw = plain_elements(rng, t) if t in plain else quant_blocks(rng, t)
        expected = reference(raw, t)
        if t not in plain:
            assert np.isfinite(expected).all(), t.name
            assert np.count_nonzero(expected) > expected.size // 2, t.name
        (OUT_DIR / f"{fixture_name(t)}.bin").write_bytes(raw.tobytes())
        (OUT_DIR / f"{fixture_name(t)}.f32").write_bytes(expected.astype("<f4").tobytes())
        print(f"{t.name:5} {raw.size:6} bytes -> {expected.size:5} values")


def weighted_hash(values: np.ndarray) -> int:
    """sum(v_i * w_i) mod 2^64 with odd weights w_i = (i * 0x9E3779B97F4A7C15 mod 2^64) | 1, over
    unsigned integers v_i (raw bytes, or f32 bit patterns). Any single changed value changes it.
    The Rust test computes the same; chunked to bound numpy's temporaries."""
    total = np.uint64(0)
    chunk = 1 << 22
    with np.errstate(over="ignore"):
        for start in range(0, values.size, chunk):
            v = values[start : start + chunk].astype(np.uint64)
            i = np.arange(start, start + v.size, dtype=np.uint64)
            w = (i * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
            total = total + np.sum(v * w, dtype=np.uint64)
    return int(total)


def write_real_fixture(models: Path) -> None:
    entries = []
    for file, names in REAL_TENSORS.items():
        reader = GGUFReader(models / file)
        by_name = {t.name: t for t in reader.tensors}
        for name in names:
            t = by_name[name]
            raw = np.asarray(t.data).view(np.uint8).reshape(-1)
            values = reference(raw, t.tensor_type)
            assert values.size == t.n_elements, name
            entries.append(
                {
                    "file": file,
                    "tensor": name,
                    "type": t.tensor_type.name,
                    "n_elements": int(t.n_elements),
                    "raw_hash": weighted_hash(raw),
                    "values_hash": weighted_hash(values.view(np.uint32)),
                    "head": [float(x) for x in values[:HEAD]],
                }
            )
            print(f"{file}: {name} {t.tensor_type.name} {t.n_elements} values")
    (OUT_DIR / "real_tensors.json").write_text(json.dumps(entries, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, help="directory holding the two test .gguf models")
    args = ap.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_random_fixtures(np.random.default_rng(SEED))
    if args.models:
        write_real_fixture(args.models)


if __name__ == "__main__":
    main()
