#!/usr/bin/env python3
"""The quality table: every storage format lowbit writes, scored against the dequantized F32 model.

For each model: lowbit writes the F32 reference (`quantize --type F32`, the same bytes llama-quantize
writes), then each build from that file, then `lowbit eval BUILD --reference F32 --chunks 12` (native
runtime: int8 activations where a kernel exists) gives PPL ratio, mean KLD and top-1 agreement. GGUF
builds are also scored by llama.cpp's llama-perplexity when it is available (PPL, and KLD / top-1
against llama.cpp's own logits of the same F32 file, exactly as ../shared/baselines/llama-cpp.md was
made), so the quantizer is compared with llama.cpp's figures on llama.cpp's runtime and lowbit's runtime
with llama.cpp's on the same file.

    scripts/quality-table.py [--models smollm2,gemma3] [--builds Q8_0,Q4_K_M,...] [--chunks 12]
                             [--out docs/quality.json] [--work DIR] [--no-llama] [--llama-rounding] [--table]
Builds: GGUF types and mixes by name (Q8_0, Q4_K_M, ...), native ones as rtn-4-g128[-asym], rtn-8, nf4;
llama:TYPE+imatrix is llama-quantize's TYPE made with llama-imatrix's matrix (groups_merged.txt, 16 chunks of 512);
TYPE+imatrix is lowbit's with its own matrix collected the same way (--save-imatrix, 16 chunks of 512), TYPE+gptq and
TYPE+gptq-ao lowbit's GPTQ into TYPE's blocks (without and with act-order) on 16 windows of 512 tokens of the same
text: both tools calibrate on 8,192 tokens of groups_merged.txt.
Prints a markdown table (the README's); writes JSON atomically.

For GGUF builds scored by llama.cpp, `lowbit eval --runtime native-llama` (activations rounded as llama.cpp
rounds them) gives the PPL to hold against llama-perplexity's (issue 3: within ±0.5%); lowbit's default runtime
rounds k-quant activations more finely, so its PPL is a little lower. `--llama-rounding` measures only that PPL for
rows already in the JSON; `--lowbit-scores` skips llama-perplexity (lowbit eval only, a third of the time);
`--table` only prints the table from the JSON.
"""
import argparse, json, os, re, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOWBIT = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lowbit")
# The shared project folder, beside the repository unless LOWBIT_SHARED names it (a git worktree elsewhere).
SHARED = os.environ.get("LOWBIT_SHARED", os.path.join(ROOT, "..", "shared"))
CORPUS = os.path.join(SHARED, "data", "wiki.test.raw")
CALIB = os.path.join(SHARED, "data", "groups_merged.txt")
MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
DEFAULT_BUILDS = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q4_1,Q5_0,Q3_K_M,Q2_K,TQ2_0,TQ1_0,rtn-8,rtn-4-g128,rtn-4-g32-asym,rtn-3-g64,rtn-2-g32,nf4"


def run(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def llama_imatrix(llama_bin, src, work, threads):
    """llama-imatrix's importance matrix of `src` from the calibration text, made as the baselines' was."""
    out = os.path.join(work, "llama-imatrix.gguf")
    if not os.path.exists(out):
        run([os.path.join(llama_bin, "llama-imatrix"), "-m", src, "-f", CALIB, "-c", "512", "--chunks", "16", "-t",
             threads, "-o", out + ".tmp.gguf"], stderr=subprocess.DEVNULL)
        os.replace(out + ".tmp.gguf", out)
    return out


def build(src, work, name, threads, llama_bin):
    """Writes build `name` of `src` under `work`; returns its path."""
    m = re.fullmatch(r"rtn-(\d)(?:-g(\d+))?(-asym)?", name)
    llama = re.fullmatch(r"llama:(\w+)\+imatrix", name)
    calibrated = re.fullmatch(r"(\w+)\+(imatrix|gptq|gptq-ao)", name)
    if llama:
        if not llama_bin:
            raise SystemExit(f"{name} needs llama.cpp (drop --no-llama)")
        out = os.path.join(work, name.replace(":", "-") + ".gguf")
        cmd = [os.path.join(llama_bin, "llama-quantize"), "--allow-requantize", "--imatrix",
               llama_imatrix(llama_bin, src, work, threads), src, out, llama.group(1), threads]
    elif calibrated:
        out = os.path.join(work, name + ".gguf")
        cmd = [LOWBIT, "-t", threads, "quantize", src, "-o", out, "--type", calibrated.group(1), "--calib", CALIB,
               "--samples", "16", "--seq-len", "512"]
        cmd += {"imatrix": ["--save-imatrix", out + ".imatrix.gguf"], "gptq": ["--method", "gptq"],
                "gptq-ao": ["--method", "gptq", "--act-order"]}[calibrated.group(2)]
    elif m:
        out = os.path.join(work, name)
        cmd = [LOWBIT, "-t", threads, "quantize", src, "-o", out, "--method", "rtn", "--bits", m.group(1)]
        if m.group(2):
            cmd += ["--group", m.group(2)]
        cmd += ["--asym"] if m.group(3) else (["--sym"] if m.group(2) else [])
    elif name == "nf4":
        out = os.path.join(work, name)
        cmd = [LOWBIT, "-t", threads, "quantize", src, "-o", out, "--method", "nf4"]
    else:
        out = os.path.join(work, name + ".gguf")
        cmd = [LOWBIT, "-t", threads, "quantize", src, "-o", out, "--type", name]
    if not os.path.exists(out):
        run(cmd)
    return out


def llama_score(llama_bin, path, chunks, threads, base=None):
    """llama-perplexity on `path`: {"ppl"} and, given `base` logits, {"mean_kld", "same_top1"}."""
    cmd = [os.path.join(llama_bin, "llama-perplexity"), "-m", path, "-f", CORPUS, "-c", "512", "--chunks",
           str(chunks), "-t", threads]
    if base:
        cmd += ["--kl-divergence-base", base, "--kl-divergence"]
    out = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    ppl = re.search(r"Final estimate: PPL = ([0-9.]+)", out) or re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", out)
    if not ppl:
        raise SystemExit(f"llama-perplexity gave no estimate for {path}:\n{out[-2000:]}")
    score = {"ppl": float(ppl.group(1))}
    if base:
        kld = re.search(r"Mean\s+KLD:\s*([-0-9.]+)", out)
        top1 = re.search(r"Same top p:\s*([0-9.]+)", out)
        score.update(mean_kld=float(kld.group(1)), same_top1=float(top1.group(1)) / 100)
    return score


def llama_base_logits(llama_bin, ref, chunks, threads):
    """llama.cpp's logits of the F32 reference (written once per model and chunk count)."""
    base = f"{os.path.splitext(ref)[0]}.c{chunks}.kld"
    if not os.path.exists(base):
        cmd = [os.path.join(llama_bin, "llama-perplexity"), "-m", ref, "-f", CORPUS, "-c", "512", "--chunks",
               str(chunks), "-t", threads, "--kl-divergence-base", base + ".tmp"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(base + ".tmp", base)
    return base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--builds", default=DEFAULT_BUILDS)
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "quality.json"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/lowbit/quality"))
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--llama-rounding", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--lowbit-scores", action="store_true")
    a = ap.parse_args()
    if a.table:
        return print_table(json.load(open(a.out)))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "lowbit"], cwd=ROOT, check=True)
    models_dir = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-models.sh")], check=True, text=True,
                                stdout=subprocess.PIPE).stdout.strip()
    llama_bin = None
    if not a.no_llama and not a.llama_rounding:
        llama_bin = run(["bash", os.path.join(SHARED, "tools", "llama-cpp-peer.sh")]).strip()
    results = json.load(open(a.out)) if os.path.exists(a.out) else {"rows": []}
    rows = {(r["model"], r["build"]): r for r in results["rows"]}
    for model in a.models.split(","):
        work = os.path.join(a.work, model)
        os.makedirs(work, exist_ok=True)
        ref = os.path.join(work, "F32.gguf")
        if not os.path.exists(ref):
            run([LOWBIT, "quantize", os.path.join(models_dir, MODELS[model]), "-o", ref, "--type", "F32"])
        scored = llama_bin and not a.llama_rounding and not a.lowbit_scores
        base = llama_base_logits(llama_bin, ref, a.chunks, a.threads) if scored else None
        for name in a.builds.split(","):
            path = build(ref, work, name, a.threads, llama_bin)
            if a.llama_rounding:
                row = rows.get((model, name))
                if row is None or row.get("llama_cpp_ppl") is None:
                    continue
                row.update(llama_rounding_ppl=llama_rounding_ppl(path, a.chunks, a.threads))
                row.update(llama_rounding_vs_llama_cpp_ppl=row["llama_rounding_ppl"] / row["llama_cpp_ppl"])
                save(results, rows, a.out)
                continue
            t0 = time.time()
            ev = json.loads(run([LOWBIT, "-t", a.threads, "eval", path, "--corpus", CORPUS, "--chunks",
                                 str(a.chunks), "--reference", ref, "--json"]))
            c = ev["reference"]
            row = {"model": model, "build": name, "bytes": size(path), "ppl": ev["ppl"],
                   "reference_ppl": c["reference_ppl"], "ppl_ratio": c["ppl_ratio"], "mean_kld": c["mean_kld"],
                   "p99_kld": c["p99_kld"], "same_top1": c["same_top1"], "chunks": ev["chunks"],
                   "eval_seconds": round(time.time() - t0, 1)}
            if llama_bin and path.endswith(".gguf") and not a.lowbit_scores:
                lc = llama_score(llama_bin, path, a.chunks, a.threads, base)
                row.update(llama_cpp_ppl=lc["ppl"], lowbit_vs_llama_cpp_ppl=ev["ppl"] / lc["ppl"],
                           llama_cpp_mean_kld=lc["mean_kld"], llama_cpp_same_top1=lc["same_top1"])
                row.update(llama_rounding_ppl=llama_rounding_ppl(path, a.chunks, a.threads))
                row.update(llama_rounding_vs_llama_cpp_ppl=row["llama_rounding_ppl"] / lc["ppl"])
            rows[(model, name)] = row
            save(results, rows, a.out)
    print_table(results)


def llama_rounding_ppl(path, chunks, threads):
    """lowbit's PPL of `path` with activations rounded as llama.cpp rounds them."""
    ev = json.loads(run([LOWBIT, "-t", threads, "eval", path, "--runtime", "native-llama", "--corpus", CORPUS,
                         "--chunks", str(chunks), "--json"]))
    return ev["ppl"]


def save(results, rows, out):
    results["rows"] = sorted(rows.values(), key=lambda r: (r["model"], -r["bytes"]))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(out + ".tmp", out)


def print_table(results):
    print("| model | build | MB | PPL ratio | mean KLD | same top-1 | llama.cpp mean KLD | llama.cpp top-1 "
          "| PPL llama.cpp | PPL lowbit (llama.cpp rounding) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        lc = "- | - | - | - | -"
        if r.get("llama_cpp_mean_kld") is not None:
            ours = r.get("llama_rounding_ppl")
            ratio = f"{r['llama_rounding_vs_llama_cpp_ppl']:.4f}" if ours else "-"
            lc = (f"{r['llama_cpp_mean_kld']:.5f} | {100 * r['llama_cpp_same_top1']:.1f}% | {r['llama_cpp_ppl']:.4g} | "
                  f"{ours:.4g} | {ratio}" if ours else f"{r['llama_cpp_mean_kld']:.5f} | "
                  f"{100 * r['llama_cpp_same_top1']:.1f}% | {r['llama_cpp_ppl']:.4g} | - | -")
        print(f"| {r['model']} | {r['build']} | {r['bytes'] / 1e6:.1f} | {r['ppl_ratio']:.4g} | "
              f"{r['mean_kld']:.4g} | {100 * r['same_top1']:.1f}% | {lc} |")


if __name__ == "__main__":
    main()
