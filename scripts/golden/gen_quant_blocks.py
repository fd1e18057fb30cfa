#!/usr/bin/env python3
"""Golden dequantizations for the block formats lowbit-kernels multiplies natively but lowbit-formats
does not (yet) dequantize: TQ1_0, TQ2_0 and MXFP4, computed by PyPI `gguf` (`gguf.quants.dequantize`).

Run from the repository root (gguf 0.19.0, numpy 2.4):

    python3 scripts/golden/gen_quant_blocks.py

It writes into crates/kernels/tests/data/: <type>.bin (16 random blocks, fixed seed) and <type>.f32
(gguf's values, little-endian f32). Block bytes are random except the f16 scale of TQ1_0/TQ2_0 (finite,
varied magnitude) and MXFP4's exponent byte (kept in 100..150 so values stay normal and finite);
crates/kernels/tests/quant.rs checks its own reading of the layouts against these.
"""

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = Path("crates/kernels/tests/data")
BLOCKS = 16


def main() -> None:
    rng = np.random.default_rng(20240617)
    OUT.mkdir(parents=True, exist_ok=True)
    for ty, size in [(T.TQ1_0, 54), (T.TQ2_0, 66), (T.MXFP4, 17)]:
        b = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
        if ty == T.MXFP4:
            b[:, 0] = rng.integers(100, 151, size=BLOCKS)
        else:
            d = (rng.uniform(0.5, 1.0, BLOCKS) * 2.0 ** rng.integers(-12, 4, BLOCKS)).astype(np.float16)
            b[:, size - 2 :] = d.view(np.uint8).reshape(BLOCKS, 2)
        y = quants.dequantize(b.reshape(-1), ty).astype("<f4")
        (OUT / f"{ty.name.lower()}.bin").write_bytes(b.tobytes())
        (OUT / f"{ty.name.lower()}.f32").write_bytes(y.tobytes())


if __name__ == "__main__":
    main()
