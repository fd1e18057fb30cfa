#!/usr/bin/env python3
"""Golden fixture for lowbit's group-wise integer formats (crates/formats/src/native/group.rs).

An independent numpy implementation of the documented layout: round-to-nearest quantization
(symmetric: s = f16(absmax / (2^(b-1) - 1)), codes clip(round(x/s), -2^(b-1), 2^(b-1)-1) + 2^(b-1);
asymmetric: lo = min(min x, 0), hi = max(max x, 0), s = f16((hi - lo) / (2^b - 1)),
z = clip(round(-lo/s), 0, 2^b - 1), codes clip(round(x/s) + z, 0, 2^b - 1)), a zero scale giving
codes = z, all in float32 with numpy's round-half-to-even, then the sub-block packing of the module
documentation and the dequantization (u - z)*s.

    python3 scripts/golden/gen_native_group.py > crates/formats/tests/data/native_group_golden.json
"""
import json
import sys

import numpy as np

SUB = 32
# Rows whose dequantized values the fixture holds (ties and the outlier), to keep it small.
DEQUANTIZED_ROWS = [4, 5]


def quantize(x, bits, group, sym):
    rows, cols = x.shape
    ng = -(-cols // group)
    codes = np.zeros((rows, cols), np.uint8)
    scales = np.zeros((rows, ng), np.float16)
    zeros = np.zeros((rows, ng), np.uint8)
    maxq = np.float32(2**bits - 1)
    for r in range(rows):
        for g in range(ng):
            xg = x[r, g * group:(g + 1) * group]
            if sym:
                scale = np.float32(np.abs(xg).max()) / np.float32(2 ** (bits - 1) - 1)
                lo = np.float32(0)
            else:
                lo = np.minimum(xg.min(), np.float32(0))
                hi = np.maximum(xg.max(), np.float32(0))
                scale = (hi - lo) / maxq
            s = np.float16(scale)
            assert np.isfinite(s)
            s32 = np.float32(s)
            if sym:
                z = np.float32(2 ** (bits - 1))
            elif s32 == 0:
                z = np.float32(0)
            else:
                z = np.clip(np.round(-lo / s32), 0, maxq)
            if s32 == 0:
                u = np.full(xg.shape, z, np.float32)
            else:
                u = np.clip(np.round(xg / s32) + z, 0, maxq)
            codes[r, g * group:g * group + len(xg)] = u.astype(np.uint8)
            scales[r, g] = s
            zeros[r, g] = np.uint8(z)
    return codes, scales, zeros


def pack(codes, bits):
    out = []
    for row in codes:
        for sb in range(len(row) // SUB):
            u = row[sb * SUB:(sb + 1) * SUB].astype(np.uint32)
            if bits == 8:
                out += list(u)
            elif bits == 4:
                out += list(u[:16] | (u[16:] << 4))
            else:
                lo = u & 3
                out += list(lo[0:8] | lo[8:16] << 2 | lo[16:24] << 4 | lo[24:32] << 6)
                if bits == 3:
                    high = int(sum(int(u[i] >> 2) << i for i in range(SUB)))
                    out += list(high.to_bytes(4, "little"))
    return bytes(int(b) for b in out)


def dequantize(codes, scales, zeros, group):
    rows, cols = codes.shape
    out = np.zeros((rows, cols), np.float32)
    for c in range(cols):
        g = c // group
        out[:, c] = (codes[:, c].astype(np.float32) - zeros[:, g].astype(np.float32)) * scales[:, g].astype(np.float32)
    return out


def inputs():
    rng = np.random.default_rng(20240611)
    x = (rng.standard_normal((6, 576)) * 0.05).astype(np.float32)
    x[1, :200] = 0  # all-zero groups
    x[2, :] = np.abs(x[2, :]) + np.float32(0.01)  # all positive: asymmetric zero point 0
    x[3, :128] = np.float32(1e-9)  # scales that underflow f16
    # Exact ties at s = 2^-4 for INT4 symmetric (absmax 7/16): k + 0.5 steps round half to even.
    x[4, :32] = np.array([(k % 14 - 7 + 0.5) / 16 for k in range(32)], np.float32)
    x[4, 0] = np.float32(7 / 16)
    x[5, 300] = np.float32(3.0)  # one outlier
    return x


def main():
    x = inputs()
    cases = []
    for bits, group, sym in [(4, 128, True), (4, 128, False), (4, 64, True), (4, 32, False), (8, 576, True),
                             (8, 128, False), (3, 64, True), (3, 128, False), (2, 32, True), (2, 64, False)]:
        codes, scales, zeros = quantize(x, bits, group, sym)
        deq = dequantize(codes, scales, np.full_like(zeros, 2 ** (bits - 1)) if sym else zeros, group)
        cases.append({
            "bits": bits, "group": group, "sym": sym,
            "codes": pack(codes, bits).hex(),
            "scales": scales.astype("<f2").tobytes().hex(),
            "zeros": "" if sym else zeros.tobytes().hex(),
            "dequantized_rows": DEQUANTIZED_ROWS,
            "dequantized": deq[DEQUANTIZED_ROWS].astype("<f4").tobytes().hex(),
        })
    json.dump({
        "generator": "scripts/golden/gen_native_group.py (numpy %s)" % np.__version__,
        "rows": x.shape[0], "cols": x.shape[1],
        "input": x.astype("<f4").tobytes().hex(),
        "cases": cases,
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
