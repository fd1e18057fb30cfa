#!/usr/bin/env python3
"""Writes crates/formats/tests/data/hf_tiny: a tiny Llama-shaped Hugging Face model directory.

2 layers, width 64, 4 query heads / 2 kv heads of 16, MLP 128, vocabulary 96, untied lm_head;
tensors in a mix of F32, F16 and BF16, sharded into two safetensors files with an index, written
with numpy and the `safetensors` Python package (pip install numpy safetensors).

expected.json records, for every tensor, its Hugging Face and canonical (llama.cpp GGUF) name,
dtype, shape, the shard that holds it, sampled values at fixed flat indices and the float64 sum of
all its values, all computed here with numpy from what was written. `file_order` lists canonical
names shard by shard in data-offset order, read back from the written headers.

Run from the repository root:  python3 scripts/golden/gen_hf_tiny.py
"""

import json
import os
import struct

import numpy as np
from safetensors import serialize_file
from safetensors._safetensors_rust import TensorSpec

OUT = os.path.join("crates", "formats", "tests", "data", "hf_tiny")
VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 96, 64, 128, 2, 4, 2, 16
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-05,
    "rope_theta": 50000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": [2, 5],
    "torch_dtype": "float32",
}


def layer_tensors(i):
    """(hf name, canonical name, shape, dtype) of layer i; dtypes are mixed on purpose."""
    p, c = f"model.layers.{i}.", f"blk.{i}."
    return [
        (p + "input_layernorm.weight", c + "attn_norm.weight", (HIDDEN,), "F32"),
        (p + "self_attn.q_proj.weight", c + "attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), "BF16"),
        (p + "self_attn.k_proj.weight", c + "attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), "F16"),
        (p + "self_attn.v_proj.weight", c + "attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), "F32"),
        (p + "self_attn.o_proj.weight", c + "attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), "BF16"),
        # Llama's norm before the MLP is llama.cpp's ffn_norm.
        (p + "post_attention_layernorm.weight", c + "ffn_norm.weight", (HIDDEN,), "BF16"),
        (p + "mlp.gate_proj.weight", c + "ffn_gate.weight", (INTER, HIDDEN), "F16"),
        (p + "mlp.up_proj.weight", c + "ffn_up.weight", (INTER, HIDDEN), "BF16"),
        (p + "mlp.down_proj.weight", c + "ffn_down.weight", (HIDDEN, INTER), "F32"),
    ]


def shard_contents():
    first = [("model.embed_tokens.weight", "token_embd.weight", (VOCAB, HIDDEN), "F32")] + layer_tensors(0)
    second = layer_tensors(1) + [
        ("model.norm.weight", "output_norm.weight", (HIDDEN,), "F16"),
        ("lm_head.weight", "output.weight", (VOCAB, HIDDEN), "BF16"),
    ]
    return [first, second]


def to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (no NaNs occur here)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def encode(values, dtype):
    """(stored array, float32 values exactly as stored, safetensors dtype name)."""
    if dtype == "F32":
        stored = values.astype("<f4")
        return stored, stored.astype(np.float32), "float32"
    if dtype == "F16":
        stored = values.astype("<f2")
        return stored, stored.astype(np.float32), "float16"
    bits = to_bf16_bits(values).astype("<u2")
    decoded = (bits.astype(np.uint32) << 16).view(np.float32)
    return bits, decoded, "bfloat16"


def sample_indices(n, rng):
    picks = sorted(set([0, 1, n - 1] + [int(i) for i in rng.integers(0, n, 5)]))
    return picks


def main():
    rng = np.random.default_rng(20250101)
    os.makedirs(OUT, exist_ok=True)
    expected = {"config": CONFIG, "tensors": {}, "file_order": []}
    weight_map = {}
    total_size = 0
    for shard, contents in zip(SHARDS, shard_contents()):
        specs, keep = {}, []
        for hf, canonical, shape, dtype in contents:
            values = rng.standard_normal(shape).astype(np.float32) * 0.25
            if "norm" in hf:
                values = 1.0 + values * 0.1
            stored, decoded, st_dtype = encode(values, dtype)
            stored = np.ascontiguousarray(stored)
            keep.append(stored)
            specs[hf] = TensorSpec(dtype=st_dtype, shape=list(shape), data_ptr=stored.ctypes.data, data_len=stored.nbytes)
            flat = decoded.reshape(-1)
            idx = sample_indices(flat.size, rng)
            expected["tensors"][canonical] = {
                "hf_name": hf,
                "dtype": dtype,
                "shape": list(shape),
                "shard": shard,
                "samples": [[i, float(flat[i])] for i in idx],
                "sum": float(flat.astype(np.float64).sum()),
            }
            weight_map[hf] = shard
            total_size += stored.nbytes
        serialize_file(specs, os.path.join(OUT, shard), metadata={"format": "pt"})
        os.chmod(os.path.join(OUT, shard), 0o644)
        del keep

    by_hf = {v["hf_name"]: k for k, v in expected["tensors"].items()}
    for shard in SHARDS:
        with open(os.path.join(OUT, shard), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        for hf in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
            expected["file_order"].append(by_hf[hf])

    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
