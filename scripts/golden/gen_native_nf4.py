#!/usr/bin/env python3
"""Golden fixture for lowbit's NF4 format with double quantization (crates/formats/src/native/nf4.rs).

An independent numpy (float32) implementation of bitsandbytes' `quantize_4bit(quant_type="nf4",
blocksize=64, compress_statistics=True)` as lowbit documents it, written from bitsandbytes'
functional.py and its CUDA kernels (kQuantizeBlockwise, dQuantizeNF4, dQuantize):

* NF4 codes: per block of 64 weights, absmax = max|w|; x = w * (1/absmax) in float32; the code is the
  number of NF4 midpoints strictly below x (dQuantizeNF4's decision tree: `x > mid` goes up). The
  midpoints are float32((t[i] + t[i+1]) / 2) from the float32 table, computed in float64; the script
  asserts that they equal the literals of bitsandbytes' kernel. A block whose absmax is 0 gets code 7
  (the exact 0) where bitsandbytes would compute 0 * inf = NaN and code 0.
* Double quantization of the block absmax values a_b (one float32 per 64 weights, the whole matrix in
  row-major block order): offset = float32(mean) with the sum taken left to right in float64;
  c_b = a_b - offset; per chunk of 256 blocks (the last one short) A = max|c_b|,
  x = c_b * (1/A) and q_b = the number of dynamic-map midpoints (m[i] + m[i+1]) * 0.5 (float32)
  strictly below x, i.e. the nearest map value, a tie taking the lower one; A = 0 gives q = 127 (the
  map's 0). Block scale s_b = m[q_b] * A + offset (two float32 roundings), weight = NF4[code] * s_b.
* The dynamic map: create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), with
  torch.linspace's float32 CPU arithmetic (start + step*i for i < steps/2, end - step*(steps-1-i)
  after, each a fused multiply-add: one rounding), adjacent means (b[i] + b[i+1]) / 2 and the scale
  float32(10^(i-6)) * mean in float32. These 256 values equal, bit for bit, the table bitsandbytes
  prints (checked against a published copy; a few of its entries are asserted below).
* Packing (lowbit's, not bitsandbytes'): each block of 64 codes is two sub-blocks of 32 in the layout
  of lowbit's INT4 group format: byte j of a sub-block holds code j in the low nibble and code j+16
  in the high nibble.

    python3 scripts/golden/gen_native_nf4.py > crates/formats/tests/data/native_nf4_golden.json
"""
import json
import sys

import numpy as np

F32 = np.float32
BLOCK = 64
NESTED = 256

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], F32)
# dQuantizeNF4's thresholds (bitsandbytes csrc/kernels.cu), in ascending order.
BNB_NF4_MIDPOINTS = [-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
                     -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
                     0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
                     0.5016634166240692, 0.6427869200706482, 0.8614784181118011]
# Entries of bitsandbytes' dynamic map where other linspace arithmetic (unfused, vectorized) differs.
BNB_DYNAMIC_SAMPLES = {18: -0.7398437261581421, 20: -0.7117187976837158, 30: -0.5710937976837158,
                       34: -0.5148437023162842, 36: -0.48671871423721313, 72: -0.07609374821186066,
                       102: -0.006343749817460775, 254: 0.992968738079071, 255: 1.0}


def fma(a, b, c):
    # a*b + c rounded once: the float64 product of two float32 and its sum with a float32 of similar
    # magnitude are exact here, so one rounding to float32 follows.
    return F32(np.float64(a) * np.float64(b) + np.float64(c))


def torch_linspace(start, end, steps):
    start, end = F32(start), F32(end)
    step = F32((end - start) / F32(steps - 1))
    half = steps // 2
    return np.array([fma(step, i, start) if i < half else fma(-step, steps - 1 - i, end) for i in range(steps)], F32)


def dynamic_map():
    data = []
    for i in range(7):
        b = torch_linspace(0.1, 1.0, 2**i + 1)
        means = (b[:-1] + b[1:]) / F32(2)
        vals = F32(10.0 ** (i - 6)) * means
        data += list(vals) + list(-vals)
    data += [F32(0), F32(1)]
    m = np.sort(np.array(data, F32))
    assert len(m) == 256 and len(set(m.tolist())) == 256
    return m


def nf4_midpoints():
    t = NF4.astype(np.float64)
    mids = ((t[:-1] + t[1:]) / 2).astype(F32)
    assert (mids == np.array(BNB_NF4_MIDPOINTS, F32)).all()
    return mids


def quantize(w, dmap):
    rows, cols = w.shape
    blocks = w.reshape(-1, BLOCK)
    absmax = np.abs(blocks).max(axis=1).astype(F32)
    mids = nf4_midpoints()
    codes = np.full(blocks.shape, 7, np.uint8)
    for b in range(len(blocks)):
        if absmax[b] != 0:
            x = blocks[b] * (F32(1) / absmax[b])
            codes[b] = (x[:, None] > mids[None, :]).sum(axis=1)
    offset = F32(np.cumsum(absmax.astype(np.float64))[-1] / len(absmax))
    centered = absmax - offset
    dmids = (dmap[:-1] + dmap[1:]) * F32(0.5)
    qabs = np.zeros(len(absmax), np.uint8)
    nested = []
    for c in range(0, len(absmax), NESTED):
        part = centered[c:c + NESTED]
        a2 = np.abs(part).max().astype(F32)
        nested.append(a2)
        if a2 == 0:
            qabs[c:c + NESTED] = 127
        else:
            x = part * (F32(1) / a2)
            qabs[c:c + NESTED] = (x[:, None] > dmids[None, :]).sum(axis=1)
    nested = np.array(nested, F32)
    scales = np.array([F32(F32(dmap[q] * nested[b // NESTED]) + offset) for b, q in enumerate(qabs)], F32)
    deq = (NF4[codes] * scales[:, None]).astype(F32).reshape(rows, cols)
    return codes, qabs, nested, offset, scales, deq


def pack(codes):
    out = []
    for sub in codes.reshape(-1, 32).astype(np.uint8):
        out += list(sub[:16] | (sub[16:] << 4))
    return bytes(int(b) for b in out)


def inputs(rng):
    """8 × 2304: 288 blocks, so the nested absmax has a full chunk of 256 and a short one of 32.
    Stored as int8 × 2^-e (exact in float32) plus a few float32 overrides, to keep the fixture small."""
    rows, cols = 8, 2304
    q = np.clip(np.round(rng.standard_normal((rows, cols)) * 30), -127, 127).astype(np.int8)
    q[1, 64:128] = 0  # an all-zero block
    q[2, :] = np.abs(q[2, :])  # all-positive row
    q[3, 100] = -127  # a block whose extreme is negative: code 0
    exps = np.array([7, 7, 8, 6, 7, 10, 7, 5], np.int32)
    w = q.astype(F32) * np.ldexp(F32(1), -exps)[:, None].astype(F32)
    overrides = {}
    # Block 0 of row 4: absmax exactly 1, so x = w; values exactly at every NF4 midpoint and one ulp
    # either side (the tie rule), plus the table values themselves.
    base = 4 * cols
    vals = [F32(1.0)]
    for m in nf4_midpoints():
        vals += [m, np.nextafter(m, F32(2)), np.nextafter(m, F32(-2))]
    vals += list(NF4[1:15])
    for i, v in enumerate(vals[:BLOCK]):
        overrides[base + i] = F32(v)
    # Row 6: one block with a large outlier (its scale far above the mean).
    overrides[6 * cols + 700] = F32(3.5)
    flat = w.reshape(-1)
    for i, v in overrides.items():
        flat[i] = v
    return q, exps, overrides, flat.reshape(rows, cols)


def main():
    dmap = dynamic_map()
    for i, v in BNB_DYNAMIC_SAMPLES.items():
        assert dmap[i] == F32(v), (i, dmap[i], v)
    rng = np.random.default_rng(20240612)
    q, exps, overrides, w = inputs(rng)
    codes, qabs, nested, offset, scales, deq = quantize(w, dmap)
    rows, cols = w.shape
    json.dump({
        "generator": "scripts/golden/gen_native_nf4.py (numpy %s)" % np.__version__,
        "dynamic_map": dmap.astype("<f4").tobytes().hex(),
        "nf4_midpoints": nf4_midpoints().astype("<f4").tobytes().hex(),
        "rows": rows, "cols": cols,
        "input_i8": q.astype(np.int8).tobytes().hex(),
        "input_row_exponent": exps.tolist(),
        "input_overrides": [[int(i), F32(v).astype("<f4").tobytes().hex()] for i, v in sorted(overrides.items())],
        "codes": pack(codes).hex(),
        "absmax": qabs.tobytes().hex(),
        "nested_absmax": nested.astype("<f4").tobytes().hex(),
        "offset": np.array([offset], F32).astype("<f4").tobytes().hex(),
        "block_scales": scales.astype("<f4").tobytes().hex(),
        "dequantized_rows": [4, 6],
        "dequantized": deq[[4, 6]].astype("<f4").tobytes().hex(),
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
