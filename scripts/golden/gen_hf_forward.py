#!/usr/bin/env python3
"""Writes crates/model/tests/data/hf_forward: tiny random Hugging Face model directories and the
logits an independent numpy forward pass computes for them (golden data for
crates/model/tests/hf_forward.rs).

Run from the repository root (needs numpy and the `safetensors` package: pip install numpy safetensors):

    python3 scripts/golden/gen_hf_forward.py

The output is deterministic (fixed seeds); rerunning it rewrites the same bytes.

What it writes, for each of three models
----------------------------------------
  hf_forward/llama/   model_type llama: tied embeddings (no lm_head tensor), GQA 4 heads / 2 kv heads,
                      head_dim 16, 2 layers, vocab 256, rope_theta 10000, weights stored BF16,
                      one model.safetensors.
  hf_forward/qwen2/   model_type qwen2: q/k/v biases, untied lm_head, no head_dim key (derived as
                      hidden/heads), rope_theta 1e6, weights stored F16, sharded into
                      model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json.
  hf_forward/gemma3/  model_type gemma3_text: QK-norm, four norms per block stored as w and applied as
                      (1 + w), gelu_pytorch_tanh, query_pre_attn_scalar 24 != head_dim 16, q width 64
                      != hidden 48, 3 layers with layer_types sliding/full/sliding, sliding_window 4,
                      rope_local_base_freq 1e4 != rope_theta 1e6, embedding scaled by sqrt(48),
                      tied embeddings (key omitted, as transformers omits it), weights stored F32.
  hf_forward/<name>.input_ids.npy   int32 [12]: the input (longer than the sliding window)
  hf_forward/<name>.logits.npy      float32 [12, vocab]: logits of every position
  hf_forward/<name>.checks.json     what the self-checks below measured (informative; not read by tests)

config.json files carry the keys transformers 4.55 writes for these classes (save_pretrained's
diff against the defaults: e.g. Gemma 3's tie_word_embeddings, true by default, is left out).
Weights are random with trained-model-like scales: projections ~N(0, (gain/sqrt(fan_in))^2), Llama
norm weights around 1, Gemma's stored norm weights around 0, Qwen2 biases of order 0.1-1.

The forward pass
----------------
Written from the semantics of transformers' LlamaForCausalLM / Qwen2ForCausalLM / Gemma3ForCausalLM
(modeling_llama.py, modeling_qwen2.py, modeling_gemma3.py), not from lowbit's Rust code, evaluated in
float64 on the weights exactly as stored (BF16/F16 decoded to float32 first), i.e. what transformers
computes with torch_dtype=float32 up to rounding:
  x = embed[ids]                                  (Gemma: * float32(sqrt(hidden)), the scale cast to the
                                                   weight dtype as Gemma3TextScaledWordEmbedding does)
  per layer:
    h = RMSNorm(x)                                RMSNorm(x) = x * rsqrt(mean(x^2) + eps) * w  (Gemma: * (1 + w))
    q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)       split into heads of head_dim
    Gemma: q = RMSNorm_head(q) q_norm, k = RMSNorm_head(k) k_norm  (per head, before RoPE)
    RoPE rotate_half style: inv_freq = base^(-arange(0, d, 2)/d), emb = [pos*inv_freq, pos*inv_freq],
      q' = q cos(emb) + rotate_half(q) sin(emb), rotate_half([x1, x2]) = [-x2, x1]
      (Gemma: base rope_local_base_freq on sliding layers, rope_theta on full layers)
    repeat_kv: query head h reads kv head h // (heads / kv_heads)
    scores = q k^T * scaling (head_dim^-0.5; Gemma: query_pre_attn_scalar^-0.5)
    mask: query i sees key j iff j <= i and, on sliding layers, i - j < sliding_window
    softmax (in float), attn = P v, heads concatenated, o = attn Wo^T
    Gemma: o = RMSNorm(o) post_attention_layernorm
    x = x + o
    h = RMSNorm(x) (Llama/Qwen2: post_attention_layernorm; Gemma: pre_feedforward_layernorm)
    m = down(act(gate(h)) * up(h)), act = silu (Llama/Qwen2) or gelu tanh approximation (Gemma)
    Gemma: m = RMSNorm(m) post_feedforward_layernorm
    x = x + m
  logits = RMSNorm(x) norm  @  (lm_head or embed)^T
transformers itself could not be used to cross-check: PyPI's torch wheels for Linux are CUDA builds
well over 1 GB with their dependencies.

Self-checks (the script fails if one does not hold), so that the Rust test's tolerance ATOL means
something:
  * the same forward in float32 stays within ATOL/4 of the float64 golden (f32 rounding, which
    lowbit has too, is far below the tolerance);
  * at every position the top-1 logit beats the runner-up by more than 20*ATOL (argmax is stable);
  * each deliberate bug (interleaved RoPE, wrong GQA head mapping, no biases, wrong rope base,
    swapped Gemma rope bases, norm without the +1, no embedding scale, head_dim instead of
    query_pre_attn_scalar, window off by one, no window, no QK-norm, erf GELU, ...) moves some
    logit by more than 100*ATOL (exact instead of tanh GELU, a subtle change: 10*ATOL), so a Rust
    forward with that bug fails the test.
"""

import json
import math
import os
import struct

import numpy as np

try:  # safetensors >= 0.6 takes TensorSpec; older releases take dicts with the raw bytes.
    from safetensors import serialize_file
    from safetensors._safetensors_rust import TensorSpec
except ImportError:  # pragma: no cover
    from safetensors import serialize_file

    TensorSpec = None

OUT = os.path.join("crates", "model", "tests", "data", "hf_forward")
N_TOKENS = 12
# The Rust test's tolerance on logits (absolute); see hf_forward.rs for why.
ATOL = 1e-4
TRANSFORMERS_VERSION = "4.55.0"


# ----------------------------------------------------------------------------------------------
# Models: config.json as transformers writes it, plus how to draw the weights.
# ----------------------------------------------------------------------------------------------

LLAMA = {
    "name": "llama",
    "seed": 1101,
    "dtype": "BF16",
    "shards": 1,
    "config": {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 128,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": 256,
    },
}

QWEN2 = {
    "name": "qwen2",
    "seed": 2202,
    "dtype": "F16",
    "shards": 2,
    "config": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 160,
        "layer_types": ["full_attention", "full_attention"],
        "max_position_embeddings": 128,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 288,
    },
}

GEMMA3 = {
    "name": "gemma3",
    "seed": 3303,
    "dtype": "F32",
    "shards": 1,
    "config": {
        "_sliding_window_pattern": 2,
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "final_logit_softcapping": None,
        "head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": 96,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "max_position_embeddings": 128,
        "model_type": "gemma3_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 24,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 4,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_bidirectional_attention": False,
        "use_cache": True,
        "vocab_size": 262,
    },
}

MODELS = [LLAMA, QWEN2, GEMMA3]


class Hp:
    """Hyperparameters read from a config dict the way the transformers classes read them."""

    def __init__(self, cfg):
        mt = cfg["model_type"]
        self.gemma = mt == "gemma3_text"
        self.qwen2 = mt == "qwen2"
        self.vocab = cfg["vocab_size"]
        self.hidden = cfg["hidden_size"]
        self.inter = cfg["intermediate_size"]
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg["num_key_value_heads"]
        self.head_dim = cfg.get("head_dim") or self.hidden // self.heads
        self.eps = cfg["rms_norm_eps"]
        self.tied = cfg.get("tie_word_embeddings", True if self.gemma else False)
        # Qwen2Attention: q/k/v Linear(bias=True); Llama: attention_bias (also on o_proj).
        self.qkv_bias = self.qwen2 or cfg.get("attention_bias", False)
        if self.gemma:
            self.scaling = cfg["query_pre_attn_scalar"] ** -0.5
            self.layer_types = cfg["layer_types"]
            self.window = cfg["sliding_window"]
            self.theta = {"full_attention": cfg["rope_theta"], "sliding_attention": cfg["rope_local_base_freq"]}
            self.act = cfg["hidden_activation"]
        else:
            self.scaling = self.head_dim**-0.5
            self.layer_types = cfg.get("layer_types") or ["full_attention"] * self.layers
            self.window = None
            self.theta = {"full_attention": cfg["rope_theta"]}
            self.act = cfg["hidden_act"]
        assert all(t in self.theta for t in self.layer_types)


def draw_weights(spec, rng):
    """HF name -> float32 values (before storage rounding), in the order save_pretrained lists them."""
    hp = Hp(spec["config"])
    d, ff, qd, kvd = hp.hidden, hp.inter, hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim

    def lin(rows, cols, gain):
        return (rng.standard_normal((rows, cols)) * (gain / math.sqrt(cols))).astype(np.float32)

    def norm(n, spread, gemma_centre=0.0):
        # Llama stores the multiplier (around 1); Gemma stores w of (1 + w) (around 0, or above
        # for the post-sublayer norms, whose trained multipliers are large).
        centre = gemma_centre if hp.gemma else 1.0
        return (centre + rng.standard_normal(n) * spread).astype(np.float32)

    w = {}
    # Tied heads: the embedding doubles as the output projection, so its scale sets the logit scale.
    embed_std = {"llama": 0.5, "qwen2": 0.1, "gemma3": 0.25}[spec["name"]]
    # Gain of the projections that write into the residual stream: enough that the blocks, not
    # the token's own embedding, decide the prediction of a tied model.
    out_gain = 2.0
    w["model.embed_tokens.weight"] = (rng.standard_normal((hp.vocab, d)) * embed_std).astype(np.float32)
    for i in range(hp.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(d, 0.2)
        w[p + "self_attn.q_proj.weight"] = lin(qd, d, 1.5)
        w[p + "self_attn.k_proj.weight"] = lin(kvd, d, 1.5)
        w[p + "self_attn.v_proj.weight"] = lin(kvd, d, 1.0)
        if hp.qkv_bias:
            w[p + "self_attn.q_proj.bias"] = (rng.standard_normal(qd) * 0.5).astype(np.float32)
            w[p + "self_attn.k_proj.bias"] = (rng.standard_normal(kvd) * 0.5).astype(np.float32)
            w[p + "self_attn.v_proj.bias"] = (rng.standard_normal(kvd) * 0.2).astype(np.float32)
        w[p + "self_attn.o_proj.weight"] = lin(d, qd, out_gain)
        if hp.gemma:
            w[p + "self_attn.q_norm.weight"] = norm(hp.head_dim, 0.3)
            w[p + "self_attn.k_norm.weight"] = norm(hp.head_dim, 0.3)
        # Llama: the norm before the MLP; Gemma: the norm after attention.
        w[p + "post_attention_layernorm.weight"] = norm(d, 0.2) if not hp.gemma else norm(d, 0.3, gemma_centre=0.5)
        if hp.gemma:
            w[p + "pre_feedforward_layernorm.weight"] = norm(d, 0.2)
            w[p + "post_feedforward_layernorm.weight"] = norm(d, 0.3, gemma_centre=0.5)
        w[p + "mlp.gate_proj.weight"] = lin(ff, d, 1.0)
        w[p + "mlp.up_proj.weight"] = lin(ff, d, 1.0)
        w[p + "mlp.down_proj.weight"] = lin(d, ff, out_gain)
    w["model.norm.weight"] = norm(d, 0.2)
    if not hp.tied:
        w["lm_head.weight"] = (rng.standard_normal((hp.vocab, d)) * 0.5).astype(np.float32)
    return w


# ----------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------


def to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (no NaNs occur here)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def encode(values, dtype):
    """(array to write, float32 values exactly as stored, safetensors dtype name)."""
    if dtype == "F32":
        stored = values.astype("<f4")
        return stored, stored.astype(np.float32), "float32"
    if dtype == "F16":
        stored = values.astype("<f2")
        assert np.all(np.isfinite(stored))
        return stored, stored.astype(np.float32), "float16"
    assert dtype == "BF16"
    bits = to_bf16_bits(values).astype("<u2")
    decoded = (bits.astype(np.uint32) << 16).view(np.float32)
    return bits, decoded, "bfloat16"


def write_safetensors(path, tensors):
    """tensors: list of (name, contiguous little-endian array, safetensors dtype name)."""
    if TensorSpec is not None:
        specs = {
            name: TensorSpec(dtype=st, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
            for name, a, st in tensors
        }
    else:
        specs = {name: {"dtype": st, "shape": list(a.shape), "data": a.tobytes()} for name, a, st in tensors}
    serialize_file(specs, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)


def write_model(spec, weights, model_dir):
    """Writes config.json and the safetensors file(s); returns HF name -> float32 values as stored."""
    os.makedirs(model_dir, exist_ok=True)
    for f in os.listdir(model_dir):
        os.remove(os.path.join(model_dir, f))
    stored, decoded = {}, {}
    for name, values in weights.items():
        a, dec, st = encode(values, spec["dtype"])
        stored[name] = (np.ascontiguousarray(a), st)
        decoded[name] = dec
    names = list(weights)
    if spec["shards"] == 1:
        write_safetensors(os.path.join(model_dir, "model.safetensors"), [(n, *stored[n]) for n in names])
    else:
        # Split at a layer boundary, as save_pretrained's size-based sharding does.
        n_layers = spec["config"]["num_hidden_layers"]
        first = [n for n in names if n == "model.embed_tokens.weight" or n.startswith("model.layers.0.")]
        second = [n for n in names if n not in first]
        assert n_layers >= 2 and len(first) + len(second) == len(names)
        shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        weight_map = {}
        for shard, members in zip(shard_names, [first, second]):
            write_safetensors(os.path.join(model_dir, shard), [(n, *stored[n]) for n in members])
            weight_map.update({n: shard for n in members})
        index = {
            "metadata": {
                "total_parameters": int(sum(v.size for v in weights.values())),
                "total_size": int(sum(a.nbytes for a, _ in stored.values())),
            },
            "weight_map": dict(sorted(weight_map.items())),
        }
        with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2, sort_keys=False)
            f.write("\n")
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(spec["config"], f, indent=2, sort_keys=True)
        f.write("\n")
    return decoded


def read_back(model_dir):
    """HF name -> float32 values, read back from the written files (independent of what was kept)."""
    out = {}
    for fname in sorted(os.listdir(model_dir)):
        if not fname.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, fname), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        header.pop("__metadata__", None)
        for name, e in header.items():
            a, b = e["data_offsets"]
            raw = data[a:b]
            if e["dtype"] == "F32":
                v = np.frombuffer(raw, "<f4")
            elif e["dtype"] == "F16":
                v = np.frombuffer(raw, "<f2").astype(np.float32)
            elif e["dtype"] == "BF16":
                v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise ValueError(e["dtype"])
            out[name] = v.reshape(e["shape"]).astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------
# Forward pass (transformers semantics), with optional deliberate bugs for the self-checks.
# ----------------------------------------------------------------------------------------------


def rms_norm(x, w, eps, offset):
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * (offset + w)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, positions, base, dt, interleaved=False):
    """x: [T, H, D]. rotate_half RoPE (HF checkpoints); `interleaved` is the deliberate bug."""
    d = x.shape[-1]
    inv_freq = 1.0 / (base ** (np.arange(0, d, 2, dtype=np.float64) / d))
    freqs = np.outer(positions.astype(np.float64), inv_freq)  # [T, D/2]
    if interleaved:
        cos, sin = np.cos(freqs)[:, None, :].astype(dt), np.sin(freqs)[:, None, :].astype(dt)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :].astype(dt), np.sin(emb)[:, None, :].astype(dt)
    return x * cos + rotate_half(x) * sin


def softmax(s):
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(cfg, w, ids, dt=np.float64, bug=None):
    """Logits [T, vocab] of `ids`; `bug` names a deliberate deviation (self-checks only)."""
    hp = Hp(cfg)
    W = {k: v.astype(dt) for k, v in w.items()}
    T = len(ids)
    pos = np.arange(T)
    offset = 1.0 if (hp.gemma and bug != "no_norm_offset") else 0.0
    eps = hp.eps

    def norm(x, name):
        return rms_norm(x, W[name], dt(eps), dt(offset))

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        if name + ".bias" in W and bug != "no_bias":
            y = y + W[name + ".bias"]
        return y

    x = W["model.embed_tokens.weight"][ids]
    if hp.gemma and bug != "no_embed_scale":
        x = x * dt(np.float32(hp.hidden**0.5))  # transformers casts the scale to the weight dtype
    group = hp.heads // hp.kv_heads
    scaling = hp.head_dim**-0.5 if bug == "head_dim_scaling" else hp.scaling
    for i in range(hp.layers):
        p = f"model.layers.{i}."
        kind = hp.layer_types[i]
        if bug == "no_window":
            kind = "full_attention"
        h = norm(x, p + "input_layernorm.weight")
        q = lin(h, p + "self_attn.q_proj").reshape(T, hp.heads, hp.head_dim)
        k = lin(h, p + "self_attn.k_proj").reshape(T, hp.kv_heads, hp.head_dim)
        v = lin(h, p + "self_attn.v_proj").reshape(T, hp.kv_heads, hp.head_dim)
        if hp.gemma and bug != "no_qk_norm":
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        theta = hp.theta[hp.layer_types[i]]
        if bug == "swap_rope_bases":
            theta = hp.theta["full_attention" if hp.layer_types[i] == "sliding_attention" else "sliding_attention"]
        if bug == "rope_base_1e4":
            theta = 10000.0
        interleaved = bug == "interleaved_rope"
        q = apply_rope(q, pos, theta, dt, interleaved)
        k = apply_rope(k, pos, theta, dt, interleaved)
        # repeat_kv: query head h uses kv head h // group.
        kv_of = np.arange(hp.heads) % hp.kv_heads if bug == "gqa_modulo" else np.arange(hp.heads) // group
        kh, vh = k[:, kv_of, :], v[:, kv_of, :]  # [T, H, D]
        scores = np.einsum("thd,shd->hts", q, kh) * dt(scaling)  # [H, Tq, Tk]
        qi, kj = pos[:, None], pos[None, :]
        allowed = kj <= qi
        if kind == "sliding_attention":
            reach = hp.window + 1 if bug == "window_plus_one" else hp.window
            allowed &= (qi - kj) < reach
        if bug == "no_causal_mask":
            allowed = np.ones_like(allowed)
        scores = np.where(allowed[None], scores, -np.inf)
        probs = softmax(scores)
        attn = np.einsum("hts,shd->thd", probs, vh).reshape(T, hp.heads * hp.head_dim)
        o = lin(attn, p + "self_attn.o_proj")
        if hp.gemma:
            o = norm(o, p + "post_attention_layernorm.weight")
        x = x + o
        h = norm(x, p + ("pre_feedforward_layernorm.weight" if hp.gemma else "post_attention_layernorm.weight"))
        g = lin(h, p + "mlp.gate_proj")
        u = lin(h, p + "mlp.up_proj")
        if hp.act == "gelu_pytorch_tanh":
            a = gelu_erf(g) if bug == "gelu_erf" else gelu_tanh(g)
        else:
            assert hp.act == "silu"
            a = silu(g)
        m = lin(a * u, p + "mlp.down_proj")
        if hp.gemma:
            m = norm(m, p + "post_feedforward_layernorm.weight")
        x = x + m
    x = norm(x, "model.norm.weight")
    head = W["model.embed_tokens.weight"] if hp.tied else W["lm_head.weight"]
    return x @ head.T


BUGS = {
    "llama": ["interleaved_rope", "gqa_modulo", "no_causal_mask"],
    "qwen2": ["no_bias", "rope_base_1e4", "interleaved_rope", "gqa_modulo"],
    "gemma3": [
        "no_norm_offset",
        "no_embed_scale",
        "head_dim_scaling",
        "swap_rope_bases",
        "window_plus_one",
        "no_window",
        "no_qk_norm",
        "gelu_erf",
        "interleaved_rope",
        "gqa_modulo",
    ],
}


def input_ids(spec, rng):
    cfg = spec["config"]
    ids = rng.integers(3, cfg["vocab_size"], N_TOKENS)
    ids[0] = cfg["bos_token_id"]
    ids[7] = ids[3]  # a repeated token: identical keys at two positions
    return ids.astype(np.int64)


def save_npy(path, array):
    np.save(path, array, allow_pickle=False)
    os.chmod(path, 0o644)


def main():
    os.makedirs(OUT, exist_ok=True)
    for spec in MODELS:
        name = spec["name"]
        for attempt in range(100):
            rng = np.random.default_rng(spec["seed"] + attempt)
            weights = draw_weights(spec, rng)
            ids = input_ids(spec, rng)
            cfg = spec["config"]
            model_dir = os.path.join(OUT, name)
            write_model(spec, weights, model_dir)
            w = read_back(model_dir)
            assert sorted(w) == sorted(weights)
            golden = forward(cfg, w, ids)
            top2 = np.sort(golden, axis=-1)[:, -2:]
            margin = float(np.min(top2[:, 1] - top2[:, 0]))
            if margin > 20 * ATOL:
                break
            print(f"{name}: seed {spec['seed'] + attempt}: top-1 margin {margin:.2e} too small, next seed")
        else:
            raise SystemExit(f"{name}: no seed gives a stable argmax")

        f32_err = float(np.max(np.abs(forward(cfg, w, ids, dt=np.float32).astype(np.float64) - golden)))
        assert f32_err < ATOL / 4, f"{name}: float32 forward differs by {f32_err:.2e}"
        bug_dist = {}
        for bug in BUGS[name]:
            dist = float(np.max(np.abs(forward(cfg, w, ids, bug=bug) - golden)))
            bug_dist[bug] = dist
            # tanh-approximated and exact GELU differ by at most ~2e-4 per activation, so that swap
            # can only be asked to clear the tolerance by 10x; every other bug by 100x.
            need = (10 if bug == "gelu_erf" else 100) * ATOL
            assert dist > need, f"{name}: bug {bug} moves logits by only {dist:.2e}"

        save_npy(os.path.join(OUT, f"{name}.input_ids.npy"), ids.astype("<i4"))
        save_npy(os.path.join(OUT, f"{name}.logits.npy"), golden.astype("<f4"))
        checks = {
            "seed": spec["seed"] + attempt,
            "input_ids": [int(i) for i in ids],
            "argmax": [int(i) for i in np.argmax(golden, axis=-1)],
            "logit_abs_max": float(np.max(np.abs(golden))),
            "logit_std": float(np.std(golden)),
            "min_top1_margin": margin,
            "positions_predicting_own_token": int(np.sum(np.argmax(golden, axis=-1) == ids)),
            "float32_forward_max_abs_diff": f32_err,
            "deliberate_bug_max_abs_diff": bug_dist,
        }
        with open(os.path.join(OUT, f"{name}.checks.json"), "w") as f:
            json.dump(checks, f, indent=1)
            f.write("\n")
        print(
            f"{name}: |logit| max {checks['logit_abs_max']:.2f} std {checks['logit_std']:.2f}, "
            f"top-1 margin >= {margin:.3f}, f32-vs-f64 {f32_err:.1e}, "
            f"smallest bug effect {min(bug_dist.values()):.2e} ({min(bug_dist, key=bug_dist.get)})"
        )
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"{OUT}: {total} bytes")


if __name__ == "__main__":
    main()
