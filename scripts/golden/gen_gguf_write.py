#!/usr/bin/env python3
"""Golden files for lowbit's GGUF writer (crates/formats/src/gguf_write.rs), written by an independent
implementation: PyPI `gguf` (`gguf.GGUFWriter`; gguf 0.19.0, numpy 2.4 were used).

Run from the repository root:

    python3 scripts/golden/gen_gguf_write.py

It writes into crates/formats/tests/data/gguf_write/, for each case:

  <case>.gguf   the file GGUFWriter writes
  <case>.json   what it contains, in the order it was added, so crates/formats/tests/gguf_write.rs can
                rebuild the same content with lowbit's GgufWriter and compare the bytes exactly:
                  alignment   the data alignment the file uses
                  metadata    [{key, type, element_type?, value, repr?}] in file order. Float values
                              (scalars and array elements) are their IEEE bit patterns as integers
                              (f32 -> u32, f64 -> u64), so no decimal conversion is involved; `repr`
                              shows them for humans. Bool is true/false, strings are JSON strings.
                  tensors     [{name, type, shape, data_hex}] in file order; `shape` is row-major,
                              outermost first (numpy order; the file stores it reversed, as ggml's ne).
                  sha256, size  of the .gguf file

Optional acceptance check by llama.cpp's own gguf reader (through ctypes on libggml-base.so, e.g. the
peer build's build/bin/libggml-base.so), for files lowbit wrote (the Rust tests leave theirs under
target/tmp/gguf_write/):

    python3 scripts/golden/gen_gguf_write.py --llama-check LIBGGML_BASE FILE...

Cases:
  basic    default alignment (32, no general.alignment key): metadata of every scalar type (with
           non-finite floats, an empty string, non-ASCII and an embedded NUL), arrays of every element
           type, and tensors of F32, F16, BF16, I8, Q8_0, Q4_K (raw block bytes), a 3-D and a 4-D tensor
           with size-1 dimensions (which GGUFWriter keeps, unlike llama.cpp's ggml_n_dims trimming),
           with sizes that are not multiples of the alignment so padding is exercised.
  align64  general.alignment = 64 (u32, added after other keys, as add_custom_alignment does).

GGUFWriter conventions the Rust side must follow: general.architecture is the first key (the
constructor adds it); keys and tensors keep insertion order; the header, and every tensor including
the last, is zero-padded to the alignment; tensor offsets are relative to the aligned data start.
GGUFWriter also accepts arrays of arrays, which llama.cpp's gguf reader rejects ("invalid GGUF type"),
so lowbit's writer refuses them and they are not part of the golden content. It refuses empty arrays
(`Invalid GGUF metadata array. Empty array`), so they are not here either; lowbit's round-trip test
covers them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter

OUT_DIR = Path("crates/formats/tests/data/gguf_write")
SEED = 20240917

SCALAR_FMT = {
    V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i",
    V.UINT64: "Q", V.INT64: "q", V.FLOAT32: "f", V.FLOAT64: "d",
}
FLOAT_BITS = {V.FLOAT32: ("<f", "<I"), V.FLOAT64: ("<d", "<Q")}


def bits(vtype: V, x: float) -> int:
    """The IEEE bit pattern GGUFWriter stores for float `x` (struct.pack rounds f64 -> f32 to nearest)."""
    f, i = FLOAT_BITS[vtype]
    return struct.unpack(i, struct.pack(f, x))[0]


def describe(key: str, vtype: V, value, sub_type: V | None = None) -> dict:
    d: dict = {"key": key, "type": vtype.name}
    if vtype == V.ARRAY:
        d["element_type"] = sub_type.name
        if sub_type in FLOAT_BITS:
            d["value"] = [bits(sub_type, x) for x in value]
            d["repr"] = [repr(x) for x in value]
        else:
            d["value"] = list(value)
    elif vtype in FLOAT_BITS:
        d["value"] = bits(vtype, value)
        d["repr"] = repr(value)
    else:
        d["value"] = value
    return d


def metadata_entries() -> list[tuple[str, V, object, V | None]]:
    return [
        ("test.u8", V.UINT8, 255, None),
        ("test.i8", V.INT8, -128, None),
        ("test.u16", V.UINT16, 65535, None),
        ("test.i16", V.INT16, -32768, None),
        ("test.u32", V.UINT32, 4294967295, None),
        ("test.i32", V.INT32, -2147483648, None),
        ("test.u64", V.UINT64, 18446744073709551615, None),
        ("test.i64", V.INT64, -9223372036854775808, None),
        ("test.f32", V.FLOAT32, 0.1, None),  # rounded to f32 by struct.pack
        ("test.f32_neg_inf", V.FLOAT32, float("-inf"), None),
        ("test.f64", V.FLOAT64, -1.0e-300, None),
        ("test.f64_nan", V.FLOAT64, float("nan"), None),
        ("test.bool_true", V.BOOL, True, None),
        ("test.bool_false", V.BOOL, False, None),
        ("test.string", V.STRING, "h\u00e9llo \u2713 \u65e5\u672c", None),
        ("test.empty_string", V.STRING, "", None),
        ("test.nul_string", V.STRING, "a\u0000b", None),
        ("test.arr.u8", V.ARRAY, [0, 1, 255], V.UINT8),
        ("test.arr.i8", V.ARRAY, [-128, 0, 127], V.INT8),
        ("test.arr.u16", V.ARRAY, [0, 65535], V.UINT16),
        ("test.arr.i16", V.ARRAY, [-32768, 32767], V.INT16),
        ("test.arr.u32", V.ARRAY, [7, 4294967295], V.UINT32),
        ("test.arr.i32", V.ARRAY, [-1, 2, -3], V.INT32),
        ("test.arr.u64", V.ARRAY, [18446744073709551615, 0], V.UINT64),
        ("test.arr.i64", V.ARRAY, [-9223372036854775808, 9223372036854775807], V.INT64),
        ("test.arr.f32", V.ARRAY, [1.5, -0.0, 3.4e38, 1e-45], V.FLOAT32),
        ("test.arr.f64", V.ARRAY, [2.718281828459045, -1e308], V.FLOAT64),
        ("test.arr.bool", V.ARRAY, [True, False, True], V.BOOL),
        ("test.arr.string", V.ARRAY, ["<s>", "", "\u2581the", "\u00ff"], V.STRING),
        ("tokenizer.ggml.tokens", V.ARRAY, ["a", "b", "ab"], V.STRING),
    ]


def tensor_entries(rng: np.random.Generator) -> list[tuple[str, T, tuple[int, ...], np.ndarray]]:
    """(name, ggml type, row-major element shape, array handed to GGUFWriter.add_tensor)."""

    def raw(n: int) -> np.ndarray:
        return rng.integers(0, 256, size=n, dtype=np.uint8)

    return [
        ("f32.weight", T.F32, (3, 5), raw(3 * 5 * 4).view(np.float32).reshape(3, 5)),
        ("f16.bias", T.F16, (7,), raw(7 * 2).view(np.float16)),
        ("bf16.weight", T.BF16, (2, 3), raw(2 * 3 * 2).reshape(2, 6)),
        ("i8.weight", T.I8, (5,), raw(5).view(np.int8)),
        ("blk.0.q8_0.weight", T.Q8_0, (2, 64), raw(2 * 2 * 34).reshape(2, 68)),
        ("blk.0.q4_k.weight", T.Q4_K, (2, 256), raw(2 * 144).reshape(2, 144)),
        ("three_d.weight", T.F32, (2, 3, 4), raw(2 * 3 * 4 * 4).view(np.float32).reshape(2, 3, 4)),
        ("four_d.weight", T.F16, (2, 1, 3, 1), raw(2 * 3 * 2).view(np.float16).reshape(2, 1, 3, 1)),
    ]


def write_case(name: str, custom_alignment: int | None) -> None:
    rng = np.random.default_rng(SEED)
    path = OUT_DIR / f"{name}.gguf"
    w = GGUFWriter(path, arch="lowbit-test")
    meta = [describe("general.architecture", V.STRING, "lowbit-test")]
    entries = metadata_entries()
    for i, (key, vtype, value, sub_type) in enumerate(entries):
        w.add_key_value(key, value, vtype, sub_type=sub_type)
        meta.append(describe(key, vtype, value, sub_type))
        if custom_alignment is not None and i == len(entries) // 2:
            w.add_custom_alignment(custom_alignment)
            meta.append(describe("general.alignment", V.UINT32, custom_alignment))

    tensors = []
    for tname, ttype, shape, arr in tensor_entries(rng):
        raw_dtype = ttype if arr.dtype == np.uint8 else None
        w.add_tensor(tname, arr, raw_dtype=raw_dtype)
        tensors.append({"name": tname, "type": ttype.name, "shape": list(shape), "data_hex": arr.tobytes().hex()})

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Sanity check with gguf's own reader: the shapes it reports (ggml order) are ours reversed.
    r = GGUFReader(path)
    for t, rt in zip(tensors, r.tensors):
        assert rt.name == t["name"] and rt.tensor_type.name == t["type"], (rt.name, t)
        assert [int(d) for d in rt.shape] == t["shape"][::-1], (rt.name, rt.shape, t["shape"])
        assert bytes(rt.data.tobytes()) == bytes.fromhex(t["data_hex"]), rt.name

    blob = path.read_bytes()
    desc = {
        "file": path.name,
        "made_by": "scripts/golden/gen_gguf_write.py with gguf.GGUFWriter",
        "alignment": custom_alignment or 32,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "metadata": meta,
        "tensors": tensors,
    }
    (OUT_DIR / f"{name}.json").write_text(json.dumps(desc, indent=1, ensure_ascii=False) + "\n")
    print(f"{path}: {len(blob)} bytes, {len(meta)} keys, {len(tensors)} tensors")


def llama_check(lib_path: str, files: list[str]) -> bool:
    """Opens each file with llama.cpp's gguf_init_from_file (metadata only); True if all load."""
    import ctypes

    class InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]

    lib = ctypes.CDLL(lib_path)
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    for fn in ("gguf_get_n_kv", "gguf_get_n_tensors"):
        getattr(lib, fn).restype = ctypes.c_int64
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    ok = True
    for f in files:
        ctx = lib.gguf_init_from_file(f.encode(), InitParams(True, None))
        if not ctx:
            print(f"{f}: REJECTED by llama.cpp (its log above says why)")
            ok = False
            continue
        print(f"{f}: loads, {lib.gguf_get_n_kv(ctx)} keys, {lib.gguf_get_n_tensors(ctx)} tensors")
        lib.gguf_free(ctx)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-check", nargs="+", metavar=("LIBGGML_BASE", "FILE"),
                    help="only check that llama.cpp's gguf reader loads FILEs")
    args = ap.parse_args()
    if args.llama_check:
        raise SystemExit(0 if llama_check(args.llama_check[0], args.llama_check[1:]) else 1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_case("basic", None)
    write_case("align64", 64)


if __name__ == "__main__":
    main()
