#!/usr/bin/env python3
"""Golden fixtures for lowbit's reference quantization (crates/formats/src/quantize/), written by two independent
implementations: PyPI `gguf` (`gguf.quants.quantize`, which has quantizers for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0,
TQ2_0, MXFP4 and BF16; F16 is numpy's float16 cast) and llama.cpp's `llama-quantize` (every type, with and without an
importance matrix; MXFP4 as `MXFP4_MOE --pure`).

Run from the repository root (needs `pip install gguf numpy`; gguf 0.19.0 and numpy 2.4 were used) after building
the llama.cpp peer (shared/tools/llama-cpp-peer.sh; commit 0c1e570, see scripts/golden/README.md):

    python3 scripts/golden/gen_quantize.py [--llama-quantize PATH]

It writes into crates/formats/tests/data/quantize/ (about 140 KB, byte-identical on reruns: fixed seed):

  manifest.json     the tensors (name, rows, cols) in the order every other file concatenates them, and provenance
  inputs.f32        the tensors' values, little-endian f32: several distributions, see `inputs`
  importance.f32    one importance weight per column of each tensor
  <type>.bin        the tensors quantized without importance. Q4_0 … Q8_0 and MXFP4: by gguf.quants.quantize; Q2_K …
                    Q6_K, TQ1_0 and TQ2_0: by `llama-quantize --pure in.gguf out.gguf TYPE`. (TQ1_0, TQ2_0 and MXFP4
                    ignore importance in llama.cpp, so they have no .imatrix fixture.)
  <type>.imatrix.bin  the tensors quantized by `llama-quantize --pure --imatrix imatrix.gguf`, for every type with a
                    weighted search (all but Q8_0, which ignores the importance matrix)
  plain.f32, plain.f16.bin, plain.bf16.bin   values chosen to hit the F16/BF16 rounding ties, subnormals and range
                    ends, and their conversions by numpy (astype float16) and gguf.quants (BF16)

manifest.json also holds hashes for a bulk test too large to store: a 256 × 1024 matrix (1024 super-blocks, several
distributions, one per row modulo 4) and its column importances, both computed from a counter-based integer
generator with exact f32 arithmetic only, so that the Rust test rebuilds them bit for bit (see `bulk_inputs`; the
test has the same code). For every type, with and without importance, it stores the hash of each group of 16 rows
of the quantized bytes, as the same implementations write them. Rare branches of the scale searches (the last grid
step of Q4_K's, say, is taken by about one super-block in 200) are only exercised at that size.

The script also checks that the two implementations agree wherever both exist: llama-quantize's Q4_0 … Q8_0, F16
and BF16 bytes equal gguf's for every tensor, its TQ1_0, TQ2_0 and MXFP4 bytes equal gguf's except on the `tiny`
tensor, and its Q8_0 with an importance matrix equals Q8_0 without. It stops with an error if they do not.

Two deliberate exceptions, both on blocks of subnormal values (the `tiny` tensor): there 1/amax overflows and ggml
converts infinities to integers, or computes a negative MXFP4 exponent and converts it to uint8_t, which C leaves
undefined. TQ1_0/TQ2_0 fixtures come from llama-quantize (x86-64's conversions; gguf's numpy casts differ there).
For MXFP4 llama-quantize refuses its own output on such blocks (exponent 0xFF), so it is not run on `tiny`, and
blocks whose largest magnitude is below 2^-125 get exponent 0 (the smallest scale, what lowbit writes) and codes by
ggml's nearest-value rule, computed here in numpy (`mxfp4_smallest_scale`).

How llama-quantize is driven: the tensors go into a minimal `llama` GGUF (F32, names `<distribution>.weight` so
that every one is quantized), `--pure` keeps each in the requested type, and the importance matrix is a GGUF in
llama-imatrix's format (`<name>.in_sum2` with `<name>.counts` = 1, so llama-quantize's per-column weights are the
values of importance.f32 exactly). Without `--imatrix` llama-quantize runs ggml's `quantize_row_*_ref`, with it
`quantize_row_*_impl`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf.quants import quantize

OUT_DIR = Path("crates/formats/tests/data/quantize")
DEFAULT_LLAMA_QUANTIZE = (
    Path.home() / ".cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin/llama-quantize"
)
SEED = 20250301

LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
TERNARY = [T.TQ1_0, T.TQ2_0]
# llama-quantize's name for a file of one type, where it is not the type's own.
FTYPE_NAME = {T.MXFP4: "MXFP4_MOE"}
WEIGHTED = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, *KQUANTS]


def inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four rows per distribution; the first tensor has two 256-blocks per row, the others one."""
    t: dict[str, np.ndarray] = {}
    # Trained-weight-like values.
    t["normal"] = rng.normal(0, 0.02, (4, 512))
    # Outliers dominate their blocks' scales.
    t["heavy"] = rng.standard_t(1.5, (4, 256)) * 0.01
    # Exact zeros: half the values; a whole leading 32-block; a whole row; a single non-zero value.
    z = rng.normal(0, 1, (4, 256))
    z[0, rng.random(256) < 0.5] = 0
    z[1, :32] = 0
    z[2, :] = 0
    z[3, :] = 0
    z[3, 77] = -1.5
    t["zeros"] = z
    # Constant rows, where max == min and every code search degenerates.
    t["constant"] = np.array([0.5, -0.25, 0.0, 3e-3])[:, None].repeat(256, axis=1)
    # One sign only, an offset, and sub-blocks of very different magnitude.
    s = np.empty((4, 256))
    s[0] = rng.random(256)
    s[1] = -rng.random(256) * 3
    s[2] = rng.normal(1, 0.1, 256)
    s[3] = rng.normal(0, 1, 256) * np.repeat(10.0 ** rng.uniform(-6, 2, 16), 16)
    t["skewed"] = s
    # Multiples of 1/2, 1/4, 1/8 and 1: scaled values land exactly on rounding ties.
    t["grid"] = rng.integers(-16, 17, (4, 256)) / np.array([2.0, 4.0, 8.0, 1.0])[:, None]
    # Tiny and subnormal values: f16 scales underflow, and 1/d overflows in the legacy quantizers.
    t["tiny"] = rng.normal(0, 1, (4, 256)) * np.array([1e-38, 1e-42, 1e-30, 1e-20])[:, None]
    return {k: v.astype(np.float32) for k, v in t.items()}


def pow2_inputs(rng: np.random.Generator) -> np.ndarray:
    """Blocks whose largest magnitude sits within a few ulps of a power of two (below, at, above), where the floor of
    log2f is not the binary exponent: MXFP4's shared exponent must follow ggml's log2f. Drawn from its own generator
    (added after the others, whose fixtures stay byte-identical)."""
    x = rng.normal(0, 0.25, (4, 256)).astype(np.float32)
    blocks = x.reshape(-1, 32)
    for b in range(blocks.shape[0]):
        k, ulps = int(rng.integers(-20, 5)), int(rng.integers(-3, 4))
        top = np.array(int(np.float32(2.0**k).view(np.uint32)) + ulps, dtype=np.uint32).view(np.float32)
        blocks[b] *= np.float32(0.999 * 2.0**k) / np.abs(blocks[b]).max()
        blocks[b, int(rng.integers(0, 32))] = top * np.float32(rng.choice([-1, 1]))
    return x


def importance(rng: np.random.Generator, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Skewed positive column weights, as squared activations are, with some zero columns."""
    out = {}
    for name, x in tensors.items():
        w = rng.gamma(0.5, 1.0, x.shape[1])
        w[rng.random(x.shape[1]) < 0.1] = 0
        out[name] = w.astype(np.float32)
    out["heavy"] *= np.float32(1e3)
    out["zeros"][:32] = 0  # a whole block without importance
    return out


def plain_values(rng: np.random.Generator) -> np.ndarray:
    """Values whose F16/BF16 conversions test rounding: exact ties both ways, subnormals, the ends of the range."""
    f16_ties = [1 + 2**-11, 1 + 3 * 2**-11, -(2 + 2**-10), 2**-24 * 0.5, 2**-24 * 1.5, 2**-14 * (1 - 2**-11)]
    f16_edges = [65504.0, 65519.0, -65504.0, 2**-24, 2**-25, 2**-26, 6e-8, 1e-8, 0.0, -0.0]
    bf16_ties = (np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x00018000, 0x477F8000], dtype=np.uint32)).view(np.float32)
    f32_subnormals = [1e-45, -3e-40, 1e-39]
    special = np.concatenate([f16_ties, f16_edges, bf16_ties, f32_subnormals]).astype(np.float32)
    rest = rng.normal(0, 1, 512 - special.size) * 10.0 ** rng.uniform(-9, 3, 512 - special.size)
    values = np.concatenate([special, rest.astype(np.float32)])
    # Every value must fit F16 (the Rust quantizer refuses overflow, llama.cpp validates it away).
    assert np.isfinite(values.astype(np.float16)).all()
    return values


BULK_ROWS, BULK_COLS, BULK_GROUP = 256, 1024, 16
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(seed: int, counters: np.ndarray) -> np.ndarray:
    """splitmix64 of counter i: mix(seed + (i + 1)·golden), with wrapping uint64 arithmetic."""
    z = np.uint64(seed) + (counters.astype(np.uint64) + np.uint64(1)) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def bulk_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The bulk matrix and its importance. Only integer operations, exact conversions, multiplications by powers of
    two and single IEEE f32 additions and divisions, so any language reproduces them exactly.

    Element (r, c), n = r·cols + c: u = splitmix64(n), v = splitmix64(rows·cols + n); g = (sum of the four 16-bit
    fields of u − 131070)·2⁻¹⁷, bell-shaped in [−1, 1]. Row r % 4 selects: 0 → g·2⁻⁵; 1 → g·2⁻⁵ / ((v & 1023) + 1),
    heavy-tailed; 2 → g·2^(k − 12) with k = (v₀ >> 32) % 25 for v₀ the v of the sub-block's first element (16
    columns), and 0 where v >> 60 is 0; 3 → (g + 2^−(v & 3))·2⁻⁴, mostly positive. Importance of column c:
    w = splitmix64(2·rows·cols + c); ((w >> 40) & 0xFFFF)·2⁻¹², or 0 where w & 7 is 0.
    """
    n = BULK_ROWS * BULK_COLS
    idx = np.arange(n, dtype=np.uint64)
    u, v = splitmix64(seed, idx), splitmix64(seed, idx + np.uint64(n))
    fields = sum(((u >> np.uint64(16 * k)) & np.uint64(0xFFFF)).astype(np.int64) for k in range(4))
    g = ((fields - 131070).astype(np.float32) * np.float32(2.0**-17)).reshape(BULK_ROWS, BULK_COLS)
    v = v.reshape(BULK_ROWS, BULK_COLS)
    x = np.empty_like(g)
    x[0::4] = g[0::4] * np.float32(2.0**-5)
    x[1::4] = (g[1::4] * np.float32(2.0**-5)) / ((v[1::4] & np.uint64(1023)) + np.uint64(1)).astype(np.float32)
    first = np.repeat(v[2::4, ::16], 16, axis=1)
    k = ((first >> np.uint64(32)) % np.uint64(25)).astype(np.int32) - 12
    x[2::4] = np.where((v[2::4] >> np.uint64(60)) == 0, np.float32(0), g[2::4] * np.ldexp(np.float32(1), k))
    x[3::4] = (g[3::4] + np.ldexp(np.float32(1), -(v[3::4] & np.uint64(3)).astype(np.int32))) * np.float32(2.0**-4)
    w = splitmix64(seed, np.arange(BULK_COLS, dtype=np.uint64) + np.uint64(2 * n))
    importance = ((w >> np.uint64(40)) & np.uint64(0xFFFF)).astype(np.float32) * np.float32(2.0**-12)
    importance[(w & np.uint64(7)) == 0] = 0
    assert x.dtype == np.float32 and importance.dtype == np.float32
    return x, importance


def weighted_hash(data: bytes) -> int:
    """sum(b_i * w_i) mod 2^64 over the bytes, w_i = (i * 0x9E3779B97F4A7C15 mod 2^64) | 1 (gen_dequant.py's)."""
    b = np.frombuffer(data, np.uint8).astype(np.uint64)
    w = (np.arange(b.size, dtype=np.uint64) * GOLDEN) | np.uint64(1)
    return int(np.sum(b * w, dtype=np.uint64))


def group_hashes(data: bytes) -> list[int]:
    step = len(data) // (BULK_ROWS // BULK_GROUP)
    return [weighted_hash(data[i : i + step]) for i in range(0, len(data), step)]


def write_model(path: Path, tensors: dict[str, np.ndarray]) -> None:
    w = GGUFWriter(path, "llama")
    # The hyperparameters llama-quantize's model loader insists on; nothing is evaluated.
    w.add_context_length(64)
    w.add_embedding_length(256)
    w.add_block_count(1)
    w.add_feed_forward_length(256)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    for name, x in tensors.items():
        w.add_tensor(f"{name}.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_imatrix(path: Path, weights: dict[str, np.ndarray]) -> None:
    w = GGUFWriter(path, "imatrix")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["gen_quantize.py synthetic"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, v in weights.items():
        w.add_tensor(f"{name}.weight.in_sum2", v.reshape(1, -1))
        w.add_tensor(f"{name}.weight.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_quantize(exe: Path, model: Path, qtype: T, workdir: Path, imatrix: Path | None) -> dict[str, bytes]:
    out = workdir / f"{qtype.name}{'-imatrix' if imatrix else ''}.gguf"
    cmd = [str(exe), "--allow-requantize", "--pure"]
    if imatrix:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(model), str(out), FTYPE_NAME.get(qtype, qtype.name), "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    result = {}
    for t in GGUFReader(out).tensors:
        assert t.tensor_type == qtype, f"{t.name}: llama-quantize wrote {t.tensor_type.name}, not {qtype.name}"
        result[t.name.removesuffix(".weight")] = np.asarray(t.data).view(np.uint8).tobytes()
    return result


def mxfp4_smallest_scale(x: np.ndarray, gguf_bytes: bytes) -> bytes:
    """gguf's MXFP4 bytes with every block whose largest magnitude is in (0, 2^-125) re-quantized at exponent 0:
    d = 2^-128, each value the first of the 16 codes nearest to it (ggml's best_index_mxfp4, in float32)."""
    blocks = x.reshape(-1, 32)
    out = np.frombuffer(gguf_bytes, np.uint8).reshape(-1, 17).copy()
    amax = np.abs(blocks).max(axis=1)
    kvalues = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
    d = np.float32(2.0**-128)
    for b in np.nonzero((amax > 0) & (amax < np.float32(2.0**-125)))[0]:
        codes = np.argmin(np.abs(kvalues[None, :] * d - blocks[b][:, None]), axis=1).astype(np.uint8)
        out[b, 0] = 0
        out[b, 1:] = codes[:16] | (codes[16:] << 4)
    return out.tobytes()


def concat(names: list[str], parts: dict[str, bytes]) -> bytes:
    return b"".join(parts[n] for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-quantize", type=Path, default=DEFAULT_LLAMA_QUANTIZE)
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    tensors = inputs(rng)
    weights = importance(rng, tensors)
    plain = plain_values(rng)
    extra = np.random.default_rng(SEED + 1)
    tensors["pow2"] = pow2_inputs(extra)
    weights["pow2"] = extra.gamma(0.5, 1.0, 256).astype(np.float32)
    names = list(tensors)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> None:
        (OUT_DIR / name).write_bytes(data)
        print(f"{name:24} {len(data):7} bytes")

    write("inputs.f32", b"".join(tensors[n].astype("<f4").tobytes() for n in names))
    write("importance.f32", b"".join(weights[n].astype("<f4").tobytes() for n in names))
    write("plain.f32", plain.astype("<f4").tobytes())
    write("plain.f16.bin", plain.astype("<f2").tobytes())
    write("plain.bf16.bin", np.asarray(quantize(plain, T.BF16)).tobytes())

    # The tiny tensor makes 1/d overflow inside gguf's legacy quantizers, as inside ggml's; numpy warns about it.
    with np.errstate(over="ignore", invalid="ignore"):
        gguf_py = {t: {n: np.asarray(quantize(tensors[n], t)).tobytes() for n in names} for t in LEGACY}
    for t in LEGACY:
        write(f"{t.name.lower()}.bin", concat(names, gguf_py[t]))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        gguf_new = {t: {n: np.asarray(quantize(tensors[n], t)).tobytes() for n in names} for t in [*TERNARY, T.MXFP4]}
    gguf_new[T.MXFP4] = {n: mxfp4_smallest_scale(tensors[n], b) for n, b in gguf_new[T.MXFP4].items()}
    write("mxfp4.bin", concat(names, gguf_new[T.MXFP4]))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, imatrix = work / "in.gguf", work / "imatrix.gguf"
        write_model(model, tensors)
        write_imatrix(imatrix, weights)
        for t in KQUANTS + TERNARY:
            write(f"{t.name.lower()}.bin", concat(names, llama_quantize(args.llama_quantize, model, t, work, None)))
        for t in WEIGHTED:
            got = llama_quantize(args.llama_quantize, model, t, work, imatrix)
            write(f"{t.name.lower()}.imatrix.bin", concat(names, got))

        # Cross-checks between the two implementations.
        for t in LEGACY:
            ours = llama_quantize(args.llama_quantize, model, t, work, None)
            for n in names:
                assert ours[n] == gguf_py[t][n], f"{t.name} {n}: llama-quantize and gguf.quants disagree"
        for t in TERNARY:
            ours = llama_quantize(args.llama_quantize, model, t, work, None)
            for n in names:
                assert n == "tiny" or ours[n] == gguf_new[t][n], f"{t.name} {n}: llama-quantize and gguf.quants disagree"
        no_tiny = work / "no-tiny.gguf"
        write_model(no_tiny, {n: x for n, x in tensors.items() if n != "tiny"})
        ours = llama_quantize(args.llama_quantize, no_tiny, T.MXFP4, work, None)
        for n in ours:
            assert ours[n] == gguf_new[T.MXFP4][n], f"MXFP4 {n}: llama-quantize and gguf.quants disagree"
        q8_weighted = llama_quantize(args.llama_quantize, model, T.Q8_0, work, imatrix)
        assert all(q8_weighted[n] == gguf_py[T.Q8_0][n] for n in names), "Q8_0 with an imatrix differs"
        plain_model = work / "plain.gguf"
        write_model(plain_model, {"plain": plain.reshape(2, -1)})
        assert llama_quantize(args.llama_quantize, plain_model, T.F16, work, None)["plain"] == plain.astype("<f2").tobytes()
        assert llama_quantize(args.llama_quantize, plain_model, T.BF16, work, None)["plain"] == np.asarray(
            quantize(plain, T.BF16)
        ).tobytes()
        print("llama-quantize agrees with gguf.quants on Q4_0 … Q8_0, TQ1_0, TQ2_0, MXFP4, F16 and BF16")

        bulk, bulk_importance = bulk_inputs(SEED)
        bulk_model, bulk_imatrix = work / "bulk.gguf", work / "bulk-imatrix.gguf"
        write_model(bulk_model, {"bulk": bulk})
        write_imatrix(bulk_imatrix, {"bulk": bulk_importance})
        bulk_hashes = {}
        for t in [*LEGACY, *KQUANTS, *TERNARY, T.MXFP4, T.F16, T.BF16]:
            got = llama_quantize(args.llama_quantize, bulk_model, t, work, None)["bulk"]
            if t in LEGACY or t in TERNARY or t in (T.MXFP4, T.BF16):
                with np.errstate(over="ignore", invalid="ignore"):
                    assert np.asarray(quantize(bulk, t)).tobytes() == got, f"bulk {t.name}: gguf.quants disagrees"
            bulk_hashes[t.name] = group_hashes(got)
        for t in WEIGHTED:
            got = llama_quantize(args.llama_quantize, bulk_model, t, work, bulk_imatrix)["bulk"]
            bulk_hashes[f"{t.name}.imatrix"] = group_hashes(got)
        print(f"bulk: {len(bulk_hashes)} hash lists")

    manifest = {
        "tensors": [{"name": n, "rows": int(tensors[n].shape[0]), "cols": int(tensors[n].shape[1])} for n in names],
        "plain_values": int(plain.size),
        "seed": SEED,
        "bulk": {"rows": BULK_ROWS, "cols": BULK_COLS, "group_rows": BULK_GROUP, "hashes": bulk_hashes},
        "made_by": {
            "legacy": "gguf.quants.quantize (gguf 0.19.0), equal to llama-quantize",
            "mxfp4": "gguf.quants.quantize, equal to llama-quantize MXFP4_MOE --pure; blocks below 2^-125: exponent 0",
            "tq1_0, tq2_0": "llama-quantize --pure, equal to gguf.quants.quantize except on the tiny tensor",
            "k-quants and imatrix": "llama-quantize --allow-requantize --pure [--imatrix], llama.cpp 0c1e570",
            "f16": "numpy astype(float16), equal to llama-quantize F16",
            "bf16": "gguf.quants.quantize BF16, equal to llama-quantize BF16",
        },
    }
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
