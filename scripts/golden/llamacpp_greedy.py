#!/usr/bin/env python3
"""Greedy generations from llama.cpp (the peer) with exact token ids -> crates/model/tests/data/llamacpp_greedy.json

For each model (F32 GGUF, same weights as the quantized package files) this starts `llama-server`
(-t 2, -c 512, -np 1) and, per prompt:
  1. prompt ids = `llama-tokenize --ids` (model's add_bos; --parse-special only for the chat prompt),
  2. POST /completion with the prompt given AS TOKEN IDS, n_predict 32, temperature 0, top_k 1,
     return_tokens true, cache_prompt false  -> the generated ids exactly as sampled.
     temperature 0 makes llama.cpp's temp sampler keep only the argmax (pure greedy).
     Generation stops early only if an end-of-generation token is produced (then that token is the last id).
  3. cross-check: `llama-simple` (examples/simple, a hard-wired greedy sampler, different code path:
     no server, no sampler chain) must print the same text for the plain prompts.
  4. cross-check: scripts/golden/np_forward.py greedy (numpy, float64, full recompute) must produce the
     same ids; the per-step margin (top1 - top2 logit in numpy) is stored so tests know which steps
     are near-ties.
Chat prompt (SmolLM2): [{"role":"user","content":"What is the capital of France?"}] rendered with the
GGUF's chat template + generation prompt by the server's /apply-template and, independently, by
Python jinja2; both must agree.

Usage: python3 scripts/golden/llamacpp_greedy.py [--out crates/model/tests/data/llamacpp_greedy.json]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import np_forward as F  # noqa: E402

MODELS = {
    "smollm2": dict(f32="/work/models/smollm2-f32.gguf", q="/work/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3": dict(f32="/work/models/gemma3-f32.gguf", q="/work/models/gemma-3-270m-q4_k_m.gguf"),
}
PLAIN = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
N_PREDICT = 32
PORT = 18671


def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def start_server(model):
    exe = F.llama_bin("llama-server")
    cmd = [exe, "-m", model, "-t", "2", "-c", "512", "-np", "1", "--port", str(PORT), "--host", "127.0.0.1",
           "--jinja"]
    log = open(f"/tmp/llama-server-{PORT}.log", "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return p, cmd
        except Exception:
            if p.poll() is not None:
                raise SystemExit(f"llama-server exited, see /tmp/llama-server-{PORT}.log")
    raise SystemExit("llama-server did not become healthy")


def llama_simple(model, prompt):
    exe = F.llama_bin("llama-simple")
    cmd = [exe, "-m", model, "-n", str(N_PREDICT), prompt]
    r = subprocess.run(cmd, capture_output=True, check=True)
    return r.stdout.decode("utf-8", "replace"), cmd


def simple_agrees(out, prompt, content):
    """llama-simple prints every prompt piece (incl. a BOS piece such as '<bos>') then the generation."""
    out = out.rstrip("\n")
    for bos in ("<bos>", "<|im_start|>", ""):
        if out.startswith(bos) and out[len(bos):] == prompt + content:
            return True
    return False


def numpy_greedy(m, ids, n, eog):
    gen, margins = [], []
    for _ in range(n):
        hs = F.forward_hidden(m, ids + gen, np.float64)
        lg = F.logits_from_hidden(m, hs[-1:], np.float64)[0]
        o = np.argsort(-lg)[:2]
        gen.append(int(o[0]))
        margins.append(round(float(lg[o[0]] - lg[o[1]]), 5))
        if int(o[0]) in eog:
            break
    return gen, margins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(F.REPO, "crates/model/tests/data/llamacpp_greedy.json"))
    ap.add_argument("--no-numpy", action="store_true")
    a = ap.parse_args()
    result = {
        "schema": "lowbit-llamacpp-greedy-v1",
        "llama_cpp": "vendored in llama-cpp-python 0.3.36 (PyPI sdist), built by shared/tools/llama-cpp-peer.sh",
        "how": ("llama-server /completion with the prompt as token ids, n_predict 32, temperature 0, top_k 1, "
                "return_tokens; prompt ids from llama-tokenize; weights: the F32 GGUFs (bit-identical to the "
                "dequantized package files)"),
        "n_predict": N_PREDICT,
        "models": {},
    }
    for name, paths in MODELS.items():
        m = F.Model(paths["q"])
        eog = {m.eos}
        if name == "smollm2":
            eog |= {0, 2, 4}        # llama.cpp EOG set: <|endoftext|>, <|im_end|>, <reponame>
        else:
            eog |= {1, 106, 212}    # llama.cpp EOG set: <eos>, <end_of_turn>, </s>
        server, scmd = start_server(paths["f32"])
        entries = []
        try:
            prompts = [("plain", p) for p in PLAIN]
            if name == "smollm2":
                tmpl = post("/apply-template", {"messages": CHAT})["prompt"]
                import jinja2
                jt = jinja2.Environment().from_string(F._field(m.reader, "tokenizer.chat_template"))
                local = jt.render(messages=CHAT, add_generation_prompt=True)
                assert tmpl == local, (tmpl, local)
                prompts.append(("chat", tmpl))
            for kind, text in prompts:
                srv = post("/tokenize", {"content": text, "add_special": True, "parse_special": kind == "chat"})
                srv_ids = [int(t) for t in srv["tokens"]]
                if kind == "chat":
                    # llama-tokenize of this version cannot parse special tokens (--parse-special is
                    # imatrix-only), so the chat prompt is tokenized by the server (tokenize_mixed,
                    # add_special=true, parse_special=true: the same call /completion makes for text)
                    ids = srv_ids
                    tok_how = "llama-server POST /tokenize {add_special:true, parse_special:true}"
                else:
                    ids, tok_how = F.tokenize(m, text, add_special=True)
                    assert ids == srv_ids, (ids, srv_ids)
                body = {"prompt": ids, "n_predict": N_PREDICT, "temperature": 0.0, "top_k": 1,
                        "return_tokens": True, "cache_prompt": False, "seed": 0}
                r = post("/completion", body)
                gen = [int(t) for t in r["tokens"]]
                e = {"kind": kind, "prompt": text, "prompt_ids": ids, "generated_ids": gen,
                     "generated_text": r["content"], "stop_type": r.get("stop_type"),
                     "stopped_on_eog": bool(r.get("stop_type") == "eos"),
                     "tokenize_cmd": tok_how,
                     "request": {k: v for k, v in body.items() if k != "prompt"}}
                if kind == "chat":
                    e["messages"] = CHAT
                    e["template_render"] = "llama-server /apply-template (--jinja) == python jinja2 render, add_generation_prompt=true"
                if kind == "plain":
                    out, ccmd = llama_simple(paths["f32"], text)
                    e["llama_simple_cmd"] = " ".join(["llama-simple"] + ccmd[1:])
                    e["llama_simple_text"] = out
                    e["llama_simple_agrees"] = simple_agrees(out, text, r["content"])
                if not a.no_numpy:
                    ng, margins = numpy_greedy(m, ids, len(gen) if gen else N_PREDICT, eog)
                    e["numpy_generated_ids"] = ng
                    e["numpy_agrees"] = ng == gen
                    e["numpy_top1_margin"] = margins
                print(json.dumps({k: e[k] for k in e if k in ("kind", "prompt", "generated_ids", "generated_text",
                                                              "numpy_agrees", "llama_simple_agrees")}),
                      flush=True)
                entries.append(e)
        finally:
            server.terminate()
            server.wait()
        result["models"][name] = {"file": os.path.basename(paths["f32"]),
                                  "same_weights_as": os.path.basename(paths["q"]),
                                  "server_cmd": " ".join(["llama-server"] + scmd[1:]),
                                  "add_bos": m.add_bos, "results": entries}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
