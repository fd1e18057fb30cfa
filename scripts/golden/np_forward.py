#!/usr/bin/env python3
"""Independent numpy forward pass for GGUF `llama` and `gemma3` models (lowbit golden fixtures).

Written from the architecture as llama.cpp implements it (src/models/llama.cpp, src/models/gemma3.cpp,
ggml rope/rms_norm semantics), NOT from lowbit's Rust code. Weights are dequantized with the PyPI
`gguf` package (gguf.quants.dequantize) and computed in float64 (default) or float32.

Sub-commands
------------
  fixture  --model M --out FILE [--text T]   write a golden JSON fixture (schema below)
  longfixture --model M --out FILE [-n 640]  long-context fixture (sliding window), schema in its docstring
  ppl      --model M [--chunks N] [--ctx 512] llama.cpp-style perplexity on wiki.test.raw
  greedy   --model M --prompt P [-n 32]      greedy continuation (no KV cache, full recompute)
  kldbase  --model M --base FILE [--chunks N] compare with a `llama-perplexity --kl-divergence-base`
                                              logits file (per-token NLL / top-1 / KLD vs llama.cpp)
  M is a path to a .gguf file (architecture read from its metadata).

Token ids come from llama.cpp's `llama-tokenize` (the reference tokenizer) when the binary is found
($LLAMA_BIN or the llama-cpp-peer cache), else from a Python fallback (`tokenizers` byte-level BPE
rebuilt from the GGUF vocab/merges; only for the gpt2/BPE vocab). The fixture records which.

Fixture JSON schema (golden_<name>.json)
----------------------------------------
{
  "schema": "lowbit-golden-v1",
  "model_file": str,  "model_sha256": str,  "arch": "llama" | "gemma3",
  "config": {n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, rms_eps, rope_base,
             rope_base_swa?, sliding_window?, swa_pattern?, rope_type: "norm"|"neox"},
  "text": str,                      # the input text
  "add_bos": bool,                  # whether BOS was prepended (tokenizer's add_bos_token)
  "tokenizer": str,                 # which tokenizer produced input_ids (llama-tokenize ... | python fallback)
  "compute_dtype": "float64"|"float32",
  "input_ids": [int] * T,           # T ~ 20
  "top_k": 10,
  "top_ids":    [[int]*10] * T,     # per position p: the 10 highest-logit token ids (descending logit;
  "top_logits": [[float]*10] * T,   #   ties broken by lower id), logits for predicting token p+1
  "logsumexp":  [float] * T,        # log(sum_v exp(logit_v)) over the full vocab, per position
  "probe_ids":  [int] * 64,         # fixed token ids (distinct input ids + seeded random ids, sorted)
  "probe_logits": [[float]*64] * T, # logits of probe_ids at every position
  "final_hidden_last": [float] * n_embd,   # hidden state of the last position after output_norm
                                            # (the lm_head input), i.e. logits[T-1] = W_out @ this
  "greedy_next": int                # argmax of the last position (== top_ids[-1][0])
}
log-softmax of token v at position p = logit - logsumexp[p].

Architecture notes (what this file implements; see also scripts/golden/README.md)
-------------------------------------------------------------------------------
llama (SmolLM2): x = embd[ids]; per block: x += Wo·attn(rope_norm(Wq·n), rope_norm(Wk·n), Wv·n),
  n = rmsnorm(x)*attn_norm; x += Wdown·(silu(Wgate·m) * Wup·m), m = rmsnorm(x)*ffn_norm;
  out = rmsnorm(x)*output_norm; logits = out @ (output or token_embd).T.
  RoPE "norm" (GGUF llama q/k rows were permuted by the converter): dims (2i, 2i+1) rotate together,
  theta_i = pos * base^(-2i/n_rot). Attention scale 1/sqrt(head_dim). GQA: q head h uses kv head
  h // (n_head / n_head_kv).
gemma3: x = embd[ids] * sqrt(n_embd) (f32 sqrtf(640)); per block:
  n = rmsnorm(x)*attn_norm; q,k,v = W·n; q = rmsnorm_head(q)*q_norm; k = rmsnorm_head(k)*k_norm;
  rope "neox" (dims i and i+head_dim/2), base = rope_base_swa (10000) on sliding layers and
  rope_base (1e6) on global layers; q *= 1/sqrt(head_dim=256); causal softmax attention, sliding
  layers additionally mask keys with pos_q - pos_k >= sliding_window (512);
  x = x + rmsnorm(Wo·attn)*post_attention_norm;
  x = x + rmsnorm(Wdown·(gelu_tanh(Wgate·m) * Wup·m))*post_ffw_norm, m = rmsnorm(x)*ffn_norm;
  out = rmsnorm(x)*output_norm; logits = out @ token_embd.T (tied). Norm weights in the GGUF already
  include Gemma's "+1" (convert_hf_to_gguf adds it), so they are used as plain multipliers.
  Layer il is sliding iff il % 6 < 5 (layers 5, 11, 17 are global) — llama.cpp set_swa_pattern(6).
RMSNorm everywhere: x / sqrt(mean(x^2) + eps) * w (eps from GGUF: 1e-5 SmolLM2, 1e-6 Gemma).

Optional `--ggml-emulate`: mimic two llama.cpp CPU numerics on purpose (default OFF, the fixtures are
exact math): K/V rounded to float16 (llama.cpp's default f16 KV cache) and GELU through ggml's f16
lookup table (x rounded to f16, gelu(x) rounded to f16, |x|>=10 passthrough). Used only to explain
residual differences from llama.cpp.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_CORPUS = os.path.abspath(os.path.join(REPO, "..", "shared", "data", "wiki.test.raw"))
PEER_BIN = os.path.expanduser(
    "~/.cache/llama-cpp-peer/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin")


# ----------------------------------------------------------------------------------------------
# GGUF loading
# ----------------------------------------------------------------------------------------------
def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Model:
    """Config + dequantized float32 weights. Weight matrices are [out_features, in_features]."""

    def __init__(self, path):
        self.path = path
        r = gguf.GGUFReader(path)
        self.reader = r
        a = _field(r, "general.architecture")
        if a not in ("llama", "gemma3"):
            raise SystemExit(f"unsupported architecture {a}")
        self.arch = a
        g = lambda k, d=None: _field(r, f"{a}.{k}", d)
        self.n_layer = int(g("block_count"))
        self.n_embd = int(g("embedding_length"))
        self.n_ff = int(g("feed_forward_length"))
        self.n_head = int(g("attention.head_count"))
        self.n_head_kv = int(g("attention.head_count_kv", self.n_head))
        self.head_dim = int(g("attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(g("rope.dimension_count", self.head_dim))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(g("rope.freq_base", 10000.0))
        self.tensors = {t.name: t for t in r.tensors}
        self.n_vocab = int(self.tensors["token_embd.weight"].shape[1])
        self.add_bos = bool(_field(r, "tokenizer.ggml.add_bos_token", False))
        self.bos = int(_field(r, "tokenizer.ggml.bos_token_id", 1))
        self.eos = int(_field(r, "tokenizer.ggml.eos_token_id", 2))
        if a == "gemma3":
            self.rope_type = "neox"
            self.sliding_window = int(g("attention.sliding_window", 0))
            # llama.cpp: rope_freq_base_train_swa defaults to 10000 when the key is absent
            self.rope_base_swa = float(g("rope.freq_base_swa", 10000.0))
            self.swa_pattern = int(g("attention.sliding_window_pattern", 6))
            self.is_swa = [self.sliding_window > 0 and (il % self.swa_pattern) < self.swa_pattern - 1
                           for il in range(self.n_layer)]
            sc = g("final_logit_softcapping", 0.0)
            self.softcap = float(sc) if sc else 0.0
            self.attn_scale = 1.0 / math.sqrt(self.head_dim)
        else:
            self.rope_type = "norm"
            self.sliding_window = 0
            self.is_swa = [False] * self.n_layer
            self.softcap = 0.0
            self.attn_scale = 1.0 / math.sqrt(self.head_dim)
        self._cache = {}

    def config(self):
        c = dict(n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head, n_head_kv=self.n_head_kv,
                 head_dim=self.head_dim, n_rot=self.n_rot, n_ff=self.n_ff, n_vocab=self.n_vocab,
                 rms_eps=self.eps, rope_base=self.rope_base, rope_type=self.rope_type)
        if self.arch == "gemma3":
            c.update(rope_base_swa=self.rope_base_swa, sliding_window=self.sliding_window,
                     swa_pattern=self.swa_pattern,
                     global_layers=[i for i, s in enumerate(self.is_swa) if not s],
                     attn_scale=self.attn_scale, embd_scale=float(np.sqrt(np.float32(self.n_embd))),
                     final_logit_softcapping=self.softcap)
        return c

    def w(self, name):
        """Dequantized float32 tensor (numpy shape = reversed GGUF ne: [out, in] for matrices)."""
        if name not in self._cache:
            t = self.tensors[name]
            if t.tensor_type in (gguf.GGMLQuantizationType.F32,):
                a = np.asarray(t.data, dtype=np.float32).reshape([int(s) for s in reversed(t.shape)])
            else:
                a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
                a = a.reshape([int(s) for s in reversed(t.shape)])
            self._cache[name] = np.ascontiguousarray(a)
        return self._cache[name]

    def wd(self, name, dtype):
        """w(name) cast to dtype (float64 casts are cached too)."""
        if dtype == np.float32:
            return self.w(name)
        key = (name, np.dtype(dtype).str)
        if key not in self._cache:
            self._cache[key] = self.w(name).astype(dtype)
        return self._cache[key]

    def has(self, name):
        return name in self.tensors

    def lm_head_name(self):
        return "output.weight" if self.has("output.weight") else "token_embd.weight"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Math
# ----------------------------------------------------------------------------------------------
def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * x * (1.0 + 0.044715 * x * x)))


def gelu_ggml_f16_table(x):
    """ggml CPU GELU with GGML_GELU_FP16: table lookup on f16(x), result stored as f16."""
    x32 = x.astype(np.float32)
    xh = x32.astype(np.float16).astype(np.float32)
    y = gelu_tanh(xh).astype(np.float16).astype(np.float32)
    y = np.where(x32 <= -10.0, 0.0, np.where(x32 >= 10.0, x32, y))
    return y.astype(x.dtype)


def rope(x, pos, base, n_rot, kind):
    """x: [T, H, D]. 'norm': pairs (2i, 2i+1); 'neox': pairs (i, i + n_rot/2). theta_i = pos*base^(-2i/n_rot)."""
    T, H, D = x.shape
    half = n_rot // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / n_rot)
    ang = pos.astype(np.float64)[:, None] * inv[None, :]            # [T, half]
    c = np.cos(ang).astype(x.dtype)[:, None, :]
    s = np.sin(ang).astype(x.dtype)[:, None, :]
    out = x.copy()
    if kind == "norm":
        x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * c - x1 * s
        out[..., 1:n_rot:2] = x0 * s + x1 * c
    else:
        x0, x1 = x[..., :half], x[..., half:n_rot]
        out[..., :half] = x0 * c - x1 * s
        out[..., half:n_rot] = x0 * s + x1 * c
    return out


def attention(q, k, v, pos, scale, window, n_head, n_head_kv):
    """q [T,H,D], k/v [T,Hkv,D]; causal (+ sliding window: mask pos_q - pos_k >= window)."""
    T = q.shape[0]
    i, j = pos[:, None], pos[None, :]
    allowed = j <= i
    if window:
        allowed &= (i - j) < window
    g = n_head // n_head_kv
    out = np.empty_like(q)
    for h in range(n_head):
        kv = h // g
        s = (q[:, h] @ k[:, kv].T) * scale
        s = np.where(allowed, s, -np.inf)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(-1, keepdims=True)
        out[:, h] = p @ v[:, kv]
    return out


def forward_hidden(m, ids, dtype=np.float64, emulate=False, verbose=False):
    """Returns the final hidden states after output_norm, [T, n_embd], in `dtype`."""
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    pos = np.arange(T)
    W = lambda n: m.wd(n, dtype)
    x = m.w("token_embd.weight")[ids].astype(dtype)
    if m.arch == "gemma3":
        x = x * dtype(np.sqrt(np.float32(m.n_embd)))               # llama.cpp: ggml_scale(sqrtf(n_embd))
    H, Hkv, D = m.n_head, m.n_head_kv, m.head_dim
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, W(p + "attn_norm.weight"), m.eps)
        q = (h @ W(p + "attn_q.weight").T).reshape(T, H, D)
        k = (h @ W(p + "attn_k.weight").T).reshape(T, Hkv, D)
        v = (h @ W(p + "attn_v.weight").T).reshape(T, Hkv, D)
        if m.arch == "gemma3":
            q = rmsnorm(q, W(p + "attn_q_norm.weight"), m.eps)
            k = rmsnorm(k, W(p + "attn_k_norm.weight"), m.eps)
            base = m.rope_base_swa if m.is_swa[il] else m.rope_base
            window = m.sliding_window if m.is_swa[il] else 0
        else:
            base, window = m.rope_base, 0
        q = rope(q, pos, base, m.n_rot, m.rope_type)
        k = rope(k, pos, base, m.n_rot, m.rope_type)
        if emulate:
            k = k.astype(np.float16).astype(dtype)
            v = v.astype(np.float16).astype(dtype)
        a = attention(q, k, v, pos, m.attn_scale, window, H, Hkv).reshape(T, H * D)
        a = a @ W(p + "attn_output.weight").T
        if m.arch == "gemma3":
            a = rmsnorm(a, W(p + "post_attention_norm.weight"), m.eps)
        x = x + a
        h = rmsnorm(x, W(p + "ffn_norm.weight"), m.eps)
        gate = h @ W(p + "ffn_gate.weight").T
        up = h @ W(p + "ffn_up.weight").T
        if m.arch == "gemma3":
            act = gelu_ggml_f16_table(gate) if emulate else gelu_tanh(gate)
        else:
            act = silu(gate)
        f = (act * up) @ W(p + "ffn_down.weight").T
        if m.arch == "gemma3":
            f = rmsnorm(f, W(p + "post_ffw_norm.weight"), m.eps)
        x = x + f
        if verbose:
            print(f"  layer {il:2d} swa={m.is_swa[il]} |x|={np.abs(x).max():.3f}", file=sys.stderr)
    return rmsnorm(x, W("output_norm.weight"), m.eps)


def logits_from_hidden(m, hs, dtype=np.float64, block=16384):
    """hs [T, d] -> logits [T, n_vocab] (vocab projected in blocks to bound memory)."""
    E = m.wd(m.lm_head_name(), dtype)
    out = np.empty((hs.shape[0], E.shape[0]), dtype=dtype)
    for s in range(0, E.shape[0], block):
        out[:, s:s + block] = hs @ E[s:s + block].T
    if m.softcap:
        out = np.tanh(out / m.softcap) * m.softcap
    return out


def logsumexp(z):
    mx = z.max(-1, keepdims=True)
    return (mx + np.log(np.exp(z - mx).sum(-1, keepdims=True)))[..., 0]


# ----------------------------------------------------------------------------------------------
# Tokenization
# ----------------------------------------------------------------------------------------------
def llama_bin(name):
    for d in (os.environ.get("LLAMA_BIN"), PEER_BIN):
        if d and os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return shutil.which(name)


def tokenize(m, text, add_special=True, parse_special=False):
    """-> (ids, description). add_special follows the model's add_bos_token like llama.cpp."""
    exe = llama_bin("llama-tokenize")
    if exe:
        cmd = [exe, "-m", m.path, "--ids", "--log-disable", "--no-escape", "--stdin"]
        if not add_special:
            cmd.append("--no-bos")
        cmd.append("--parse-special" if parse_special else "--no-parse-special")
        r = subprocess.run(cmd, input=text.encode(), capture_output=True, check=True)
        line = [l for l in r.stdout.decode().splitlines() if l.startswith("[")][-1]
        ids = json.loads(line)
        return ids, "llama-tokenize " + " ".join(os.path.basename(c) if c == exe else c for c in cmd[1:])
    if m.arch == "llama":
        return python_bpe_tokenize(m, text, add_special), "python tokenizers (byte-level BPE from GGUF)"
    raise SystemExit("llama-tokenize not found and no Python fallback for this vocab; set LLAMA_BIN")


def python_bpe_tokenize(m, text, add_special):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
    r = m.reader
    toks = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
            for i in r.fields["tokenizer.ggml.tokens"].data]
    merges = [bytes(r.fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
              for i in r.fields["tokenizer.ggml.merges"].data]
    ttype = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in r.fields["tokenizer.ggml.token_type"].data]
    vocab = {t: i for i, t in enumerate(toks)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(x.split(" ", 1)) for x in merges]))
    # SmolLM2 (llama.cpp pre "smollm"): individual digits, then GPT-2 byte-level regex
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(toks, ttype) if ty == 3])
    ids = tk.encode(text, add_special_tokens=False).ids
    if add_special and m.add_bos:
        ids = [m.bos] + ids
    return ids


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
FIXTURE_TEXT = "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published four papers"


def cmd_fixture(a):
    m = Model(a.model)
    dtype = np.float64 if a.dtype == "float64" else np.float32
    ids, how = tokenize(m, a.text, add_special=True)
    if a.ids:
        ids, how = [int(t) for t in a.ids.split(",")], "given on the command line"
    T = len(ids)
    print(f"{T} tokens ({how}): {ids}", file=sys.stderr)
    hs = forward_hidden(m, ids, dtype, emulate=a.ggml_emulate)
    lg = logits_from_hidden(m, hs, dtype)
    lse = logsumexp(lg)
    K = 10
    top_ids, top_logits = [], []
    for p in range(T):
        order = np.lexsort((np.arange(lg.shape[1]), -lg[p]))[:K]   # by logit desc, then id asc
        top_ids.append([int(i) for i in order])
        top_logits.append([round(float(lg[p, i]), 6) for i in order])
    rng = np.random.default_rng(20240601)
    probe = list(dict.fromkeys(int(i) for i in ids))[:32]
    while len(probe) < 64:
        c = int(rng.integers(0, m.n_vocab))
        if c not in probe:
            probe.append(c)
    probe = sorted(probe)
    out = {
        "schema": "lowbit-golden-v1",
        "model_file": os.path.basename(m.path),
        "model_sha256": sha256(m.path),
        "arch": m.arch,
        "config": m.config(),
        "text": a.text,
        "add_bos": bool(m.add_bos),
        "tokenizer": how,
        "compute_dtype": a.dtype,
        "ggml_emulate": bool(a.ggml_emulate),
        "input_ids": [int(i) for i in ids],
        "top_k": K,
        "top_ids": top_ids,
        "top_logits": top_logits,
        "logsumexp": [round(float(v), 6) for v in lse],
        "probe_ids": probe,
        "probe_logits": [[round(float(lg[p, i]), 6) for i in probe] for p in range(T)],
        "final_hidden_last": [round(float(v), 7) for v in hs[-1]],
        "greedy_next": int(top_ids[-1][0]),
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes); greedy next = {out['greedy_next']}", file=sys.stderr)


def cmd_longfixture(a):
    """Long-context fixture (exercises Gemma 3's 512-token sliding window): the first n tokens of the
    corpus (llama-perplexity tokenization, BOS first if the model adds one); per position the argmax,
    its logit, the full-vocab logsumexp and the logit of the actual next token."""
    m = Model(a.model)
    dtype = np.float64 if a.dtype == "float64" else np.float32
    ids, how = corpus_tokens(m, a.corpus, a.n)
    if m.add_bos:
        ids[0] = m.bos
    T = len(ids)
    hs = forward_hidden(m, ids, dtype)
    top1, top1_logit, lse, nxt_logit = [], [], [], []
    for s in range(0, T, 128):
        lg = logits_from_hidden(m, hs[s:s + 128], dtype)
        l = logsumexp(lg)
        for r in range(lg.shape[0]):
            p = s + r
            i = int(np.argmax(lg[r]))
            top1.append(i)
            top1_logit.append(round(float(lg[r, i]), 6))
            lse.append(round(float(l[r]), 6))
            if p + 1 < T:
                nxt_logit.append(round(float(lg[r, ids[p + 1]]), 6))
    nll = np.array(lse[:-1]) - np.array(nxt_logit)
    out = {
        "schema": "lowbit-golden-long-v1",
        "model_file": os.path.basename(m.path), "model_sha256": sha256(m.path), "arch": m.arch,
        "config": m.config(), "source": f"first {T} tokens of wiki.test.raw", "tokenizer": how,
        "compute_dtype": a.dtype, "input_ids": [int(i) for i in ids],
        "top1_ids": top1, "top1_logits": top1_logit, "logsumexp": lse,
        "next_token_logits": nxt_logit,
        "mean_nll_all": round(float(nll.mean()), 6),
        "mean_nll_from_512": round(float(nll[512:].mean()), 6) if T > 513 else None,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes); mean nll {out['mean_nll_all']}, "
          f"positions>=512: {out['mean_nll_from_512']}", file=sys.stderr)


def corpus_tokens(m, path, n_needed):
    """Tokens of the corpus like llama-perplexity: common_tokenize(text, add_special=true).
    Tokenizes a prefix (cut at a line boundary) large enough for n_needed tokens."""
    text = open(path, encoding="utf-8").read()
    nchar = max(20000, n_needed * 6)
    while True:
        cut = text.find("\n", nchar)
        cut = len(text) if cut < 0 or nchar >= len(text) else cut + 1
        ids, how = tokenize(m, text[:cut], add_special=True)
        if len(ids) >= n_needed + 64 or cut == len(text):
            return ids[:n_needed], how
        nchar *= 2


def cmd_ppl(a):
    m = Model(a.model)
    dtype = np.float64 if a.dtype == "float64" else np.float32
    n_ctx = a.ctx
    toks, how = corpus_tokens(m, a.corpus, n_ctx * a.chunks)
    print(f"tokenizer: {how}", file=sys.stderr)
    first = n_ctx // 2
    nll, cnt = 0.0, 0
    for c in range(a.chunks):
        chunk = list(toks[c * n_ctx:(c + 1) * n_ctx])
        inp = list(chunk)
        if m.add_bos:
            inp[0] = m.bos                                # llama.cpp: BOS replaces the first token
        hs = forward_hidden(m, inp, dtype, emulate=a.ggml_emulate)
        lg = logits_from_hidden(m, hs[first:n_ctx - 1], dtype)
        lse = logsumexp(lg.astype(np.float64))
        tgt = np.array(chunk[first + 1:n_ctx])
        nl = lse - lg[np.arange(len(tgt)), tgt]
        nll += float(nl.sum())
        cnt += len(tgt)
        print(f"[{c + 1}] chunk ppl {math.exp(nl.mean()):.4f}  running ppl {math.exp(nll / cnt):.4f}", flush=True)
    print(f"Final estimate: PPL = {math.exp(nll / cnt):.4f} over {cnt} tokens ({a.chunks} chunks, ctx {n_ctx})")


def cmd_greedy(a):
    m = Model(a.model)
    dtype = np.float64 if a.dtype == "float64" else np.float32
    if a.ids:
        ids, how = [int(t) for t in a.ids.split(",")], "given"
    else:
        ids, how = tokenize(m, a.prompt, add_special=True, parse_special=a.parse_special)
    print(f"prompt ids ({how}): {ids}", file=sys.stderr)
    gen = []
    for _ in range(a.n):
        hs = forward_hidden(m, ids + gen, dtype, emulate=a.ggml_emulate)
        lg = logits_from_hidden(m, hs[-1:], dtype)[0]
        t = int(np.argmax(lg))
        gen.append(t)
        if t == m.eos and a.stop_eos:
            break
    print(json.dumps({"prompt_ids": ids, "generated_ids": gen}))


def cmd_kldbase(a):
    """Compare with llama-perplexity's --kl-divergence-base file: header '_logits_', n_ctx, n_vocab,
    n_chunk (int32), tokens int32[n_chunk*n_ctx], then per chunk (n_ctx-1-n_ctx/2) rows of
    uint16[nv], nv = 2*((n_vocab+1)/2)+4: row = {float scale, float min_log_prob, uint16 q[n_vocab]},
    log_prob = min_log_prob + scale*q."""
    m = Model(a.model)
    dtype = np.float64 if a.dtype == "float64" else np.float32
    with open(a.base, "rb") as f:
        assert f.read(8) == b"_logits_"
        n_ctx, n_vocab, n_chunk = np.frombuffer(f.read(12), dtype=np.int32)
        toks = np.frombuffer(f.read(4 * n_chunk * n_ctx), dtype=np.int32)
        nv = 2 * ((n_vocab + 1) // 2) + 4
        first = n_ctx // 2
        n_tok = n_ctx - 1 - first
        print(f"base: n_ctx={n_ctx} n_vocab={n_vocab} n_chunk={n_chunk}", file=sys.stderr)
        if a.check_tokens:
            mine, how = corpus_tokens(m, a.corpus, int(n_chunk * n_ctx))
            same = np.array_equal(np.array(mine), toks)
            print(f"tokens from {how} identical to llama-perplexity's: {same}")
        tot = dict(nll=0.0, kld=0.0, same=0, n=0, maxabs=0.0)
        for c in range(min(int(n_chunk), a.chunks)):
            raw = np.frombuffer(f.read(2 * nv * n_tok), dtype=np.uint16).reshape(n_tok, nv)
            hdr = raw[:, :4].copy().view(np.float32)               # [n_tok, 2]: scale, min_log_prob
            lp_b = hdr[:, 1:2].astype(np.float64) + hdr[:, 0:1].astype(np.float64) * raw[:, 4:4 + n_vocab]
            chunk = [int(t) for t in toks[c * n_ctx:(c + 1) * n_ctx]]
            inp = list(chunk)
            if m.add_bos:
                inp[0] = m.bos
            hs = forward_hidden(m, inp, dtype, emulate=a.ggml_emulate)
            lg = logits_from_hidden(m, hs[first:n_ctx - 1], dtype).astype(np.float64)
            lp = lg - logsumexp(lg)[:, None]
            tgt = np.array(chunk[first + 1:n_ctx])
            r = np.arange(n_tok)
            nll, nll_b = -lp[r, tgt], -lp_b[r, tgt]     # nll_b exact only where the target is unclamped
            # llama.cpp's KLD: sum over tokens with base log-prob > -16 (the file clamps the rest)
            keep = lp_b > -16.0
            kld = np.where(keep, np.exp(lp_b) * (lp_b - lp), 0.0).sum(-1)
            same = int((lp.argmax(-1) == lp_b.argmax(-1)).sum())
            # the base file stores only [max-16, max]; targets below that are clamped -> skip them
            ok = raw[r, 4 + tgt] > 0
            d = np.abs(nll - nll_b)[ok]
            tot["nll"] += nll.sum(); tot["kld"] += kld.sum()
            tot["same"] += same; tot["n"] += n_tok; tot["maxabs"] = max(tot["maxabs"], float(d.max()))
            tot["dsum"] = tot.get("dsum", 0.0) + d.sum(); tot["nd"] = tot.get("nd", 0) + len(d)
            print(f"[chunk {c + 1}] ppl numpy {math.exp(nll.mean()):.4f} (running {math.exp(tot['nll'] / tot['n']):.4f})"
                  f"  mean|dNLL| {d.mean():.2e} max {d.max():.2e} ({len(d)} unclamped targets)"
                  f"  KLD mean {kld.mean():.2e} max {kld.max():.2e}  same top1 {same}/{n_tok}", flush=True)
        n = tot["n"]
        print(f"TOTAL {n} tokens: ppl numpy {math.exp(tot['nll'] / n):.4f} (compare llama-perplexity's printed value)"
              f"  mean KLD {tot['kld'] / n:.3e}  same top1 {tot['same'] / n:.4f}"
              f"  mean|dNLL| {tot['dsum'] / tot['nd']:.3e} max|dNLL| {tot['maxabs']:.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)

    def common(p, dflt_dtype):
        p.add_argument("--model", required=True)
        p.add_argument("--dtype", choices=["float64", "float32"], default=dflt_dtype)
        p.add_argument("--ggml-emulate", action="store_true",
                       help="round K/V to f16 and use ggml's f16 GELU table (llama.cpp CPU numerics)")

    p = sp.add_parser("fixture"); common(p, "float64")
    p.add_argument("--out", required=True)
    p.add_argument("--text", default=FIXTURE_TEXT)
    p.add_argument("--ids", help="comma-separated token ids (skip tokenization)")
    p.set_defaults(f=cmd_fixture)

    p = sp.add_parser("longfixture"); common(p, "float64")
    p.add_argument("--out", required=True)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("-n", type=int, default=640)
    p.set_defaults(f=cmd_longfixture)

    p = sp.add_parser("ppl"); common(p, "float32")
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=2)
    p.set_defaults(f=cmd_ppl)

    p = sp.add_parser("greedy"); common(p, "float32")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--ids")
    p.add_argument("--parse-special", action="store_true")
    p.add_argument("--stop-eos", action="store_true")
    p.add_argument("-n", type=int, default=32)
    p.set_defaults(f=cmd_greedy)

    p = sp.add_parser("kldbase"); common(p, "float32")
    p.add_argument("--base", required=True)
    p.add_argument("--corpus", default=DEFAULT_CORPUS)
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--check-tokens", action="store_true")
    p.set_defaults(f=cmd_kldbase)

    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
