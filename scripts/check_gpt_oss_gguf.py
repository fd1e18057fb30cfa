"""lowbit's GGUF output for a GPT-OSS checkpoint, checked by code that is not lowbit's.

`lowbit quantize CHECKPOINT --type T -o FILE` converts a Hugging Face GPT-OSS directory as llama.cpp's converter
does, then re-quantizes it as llama-quantize does. This script reads the checkpoint with numpy (safetensors parsed
here, MXFP4 decoded by the OCP definition: FP4 E2M1 codes, low nibble first, times 2^(scale - 127)) and the GGUF
file with PyPI `gguf` (its reader and its dequantizers), maps names with gguf's own TensorNameMap for `gpt-oss`,
and checks what llama.cpp's gpt-oss loader relies on:

* the hyperparameter keys against config.json;
* every tensor present once, with llama.cpp's shape;
* the fused gate/up experts split into `ffn_gate_exps` (even rows) and `ffn_up_exps` (odd rows), biases too;
* values: with --type F32 every tensor equals the checkpoint's exactly; with --type MXFP4_MOE the experts are
  MXFP4 blocks that decode to exactly the checkpoint's values.

Usage: check_gpt_oss_gguf.py LOWBIT CHECKPOINT_DIR... (writes its GGUF files to a temporary directory).
"""

import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, MODEL_ARCH, get_tensor_name_map
from gguf.quants import dequantize

FP4 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def read_safetensors(directory):
    """Tensor name -> numpy array (float32 for floats, uint8 for MXFP4 parts)."""
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for name in files:
        raw = (directory / name).read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + n])
        body = raw[8 + n :]
        for key, t in header.items():
            if key == "__metadata__":
                continue
            a, b = t["data_offsets"]
            data = body[a:b]
            if t["dtype"] == "BF16":
                v = (np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                v = np.frombuffer(data, dtype={"F32": np.float32, "F16": np.float16, "U8": np.uint8}[t["dtype"]])
            out[key] = v.reshape(t["shape"])
    return out


def mxfp4(blocks, scales):
    """[..., nb, 16] codes and [..., nb] scales -> [..., nb * 32] values."""
    pairs = np.stack([FP4[blocks & 0x0F], FP4[blocks >> 4]], axis=-1).reshape(*blocks.shape[:-1], 32)
    values = pairs * np.ldexp(np.float32(1), scales.astype(np.int32) - 127)[..., None]
    return values.reshape(*blocks.shape[:-2], -1).astype(np.float32)


def expected_tensors(hf, n_layers):
    """GGUF name -> float32 values in llama.cpp's layout, from the checkpoint."""
    names = get_tensor_name_map(MODEL_ARCH.GPT_OSS, n_layers)
    out = {}

    def put(hf_name, values):
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, f"gguf has no name for {hf_name}"
        assert gguf_name not in out, gguf_name
        out[gguf_name] = values.astype(np.float32)

    for key, v in hf.items():
        if key.endswith("_scales"):
            continue
        stem = key.rsplit(".", 1)[0] if key.endswith((".weight", ".bias")) else key
        if key.endswith("_blocks"):
            v = mxfp4(v, hf[key.replace("_blocks", "_scales")])  # [experts, rows, cols]
            key = key.replace("_blocks", "")
        elif key.endswith(("gate_up_proj", "down_proj")):
            v = np.swapaxes(v, 1, 2)  # transformers' x @ W -> Linear rows
        if key.endswith("gate_up_proj_bias"):
            base = key[: -len("gate_up_proj_bias")]
            put(base + "gate_proj.bias", v[:, 0::2])
            put(base + "up_proj.bias", v[:, 1::2])
        elif key.endswith("gate_up_proj"):
            base = key[: -len("gate_up_proj")]
            put(base + "gate_proj.weight", v[:, 0::2])
            put(base + "up_proj.weight", v[:, 1::2])
        elif key.endswith("down_proj_bias"):
            put(key[: -len("_bias")] + ".bias", v)
        elif key.endswith("down_proj"):
            put(key + ".weight", v)
        elif key.endswith("sinks"):
            put(key + ".weight", v)
        else:
            put(key if stem != key else key + ".weight", v)
    return out


def check_metadata(reader, config):
    def field(key):
        f = reader.fields[key]
        return f.contents()

    assert field("general.architecture") == "gpt-oss"
    want = {
        "block_count": config["num_hidden_layers"],
        "embedding_length": config["hidden_size"],
        "attention.head_count": config["num_attention_heads"],
        "attention.head_count_kv": config["num_key_value_heads"],
        "attention.key_length": config["head_dim"],
        "attention.value_length": config["head_dim"],
        "expert_count": config["num_local_experts"],
        "expert_used_count": config["num_experts_per_tok"],
        "expert_feed_forward_length": config["intermediate_size"],
        "attention.sliding_window": config["sliding_window"],
    }
    rope = config.get("rope_parameters") or config["rope_scaling"]
    for key, value in want.items():
        assert field(f"gpt-oss.{key}") == value, (key, field(f"gpt-oss.{key}"), value)
    assert field("gpt-oss.rope.scaling.type") == "yarn"
    assert np.isclose(field("gpt-oss.rope.scaling.factor"), rope["factor"])
    assert field("gpt-oss.rope.scaling.original_context_length") == rope["original_max_position_embeddings"]
    theta = rope.get("rope_theta", config.get("rope_theta"))
    assert np.isclose(field("gpt-oss.rope.freq_base"), theta)
    assert len(field("tokenizer.ggml.tokens")) == config["vocab_size"]
    assert field("tokenizer.ggml.pre") == "gpt-4o"


def check(lowbit, checkpoint, ftype, workdir):
    out = workdir / f"{checkpoint.name}-{ftype}.gguf"
    subprocess.run([lowbit, "quantize", str(checkpoint), "--type", ftype, "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
    config = json.loads((checkpoint / "config.json").read_text())
    reader = GGUFReader(out)
    check_metadata(reader, config)
    want = expected_tensors(read_safetensors(checkpoint), config["num_hidden_layers"])
    got = {t.name: t for t in reader.tensors}
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    exact = 0
    for name, values in want.items():
        t = got[name]
        shape = tuple(int(d) for d in reversed(t.shape))
        assert shape == values.shape, (name, shape, values.shape)
        experts = "_exps.weight" in name
        if ftype == "MXFP4_MOE" and not experts:
            continue
        if ftype == "MXFP4_MOE":
            assert t.tensor_type == GGMLQuantizationType.MXFP4, (name, t.tensor_type)
        decoded = dequantize(t.data, t.tensor_type).reshape(values.shape)
        assert np.array_equal(decoded, values), (name, float(np.abs(decoded - values).max()))
        exact += 1
    print(f"{checkpoint.name} --type {ftype}: {len(want)} tensors in llama.cpp's layout, {exact} equal to the checkpoint")


def main():
    lowbit, checkpoints = sys.argv[1], [Path(p) for p in sys.argv[2:]]
    with tempfile.TemporaryDirectory() as workdir:
        for checkpoint in checkpoints:
            mxfp4_experts = "quantization_config" in json.loads((checkpoint / "config.json").read_text())
            for ftype in ["F32", "MXFP4_MOE"] if mxfp4_experts else ["F32"]:
                check(lowbit, checkpoint, ftype, Path(workdir))


if __name__ == "__main__":
    main()
