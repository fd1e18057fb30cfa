#!/usr/bin/env python3
"""Issue 4's Pareto comparison: file size against mean KLD for lowbit's builds and llama.cpp's imatrix builds.

Reads the rows of docs/quality.json (scored by scripts/quality-table.py: every build against the dequantized F32
model, 12 chunks of wiki.test.raw, by `lowbit eval`), where builds named `llama:TYPE+imatrix` are llama-quantize's
files made with llama-imatrix's importance matrix from ../shared/data/groups_merged.txt. For each such llama.cpp
build it finds lowbit's best build of equal or smaller file size and judges it: at Q2_K and Q3_K_M lowbit must have
the lower mean KLD; at Q4_K_M, Q5_K_M and Q6_K at most 5% above. A win by a build of 4 bits or more is marked a grid
effect: both source models already sit on llama.cpp grids (SmolLM2 on Q4_1, Gemma 3 on the Q4_K_M recipe), so
re-creating that grid looks lossless; wins below 4 bits measure the methods. Each verdict also holds lowbit's builds
of the llama.cpp build's own type (TYPE+imatrix, TYPE+gptq, TYPE+gptq-ao, made from the same 8,192 calibration
tokens) and whether the best of them alone meets the bar: the like-for-like comparison of the methods on one grid.

    scripts/pareto.py [--quality docs/quality.json] [--out docs/pareto.json] [--svg-dir docs]
Writes docs/pareto.json and docs/pareto-MODEL.svg (atomically); prints the verdict table.
"""
import argparse, json, math, os, re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BARS = {"Q2_K": "lower", "Q3_K_M": "lower", "Q4_K_M": "within 5%", "Q5_K_M": "within 5%", "Q6_K": "within 5%"}
# Builds at or above the sources' own precision: a win there re-creates the source grid.
GRID_BITS = 4


def bits_of(build):
    """Nominal bits per weight of a lowbit build name (Q3_K_M, rtn-4-g128, Q4_K_M+gptq, awq-3-g128, nf4...)."""
    m = re.match(r"(?:\w+:)?[A-Z]*Q(\d)", build) or re.search(r"-(\d)(?:-|$)", build)
    if build.startswith("nf4"):
        return 4
    return int(m.group(1)) if m else None


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def svg(model, points, verdicts):
    """A log-log scatter of (MB, mean KLD): llama.cpp's builds in orange, lowbit's in blue, every point labeled."""
    w, h, ml, mr, mt, mb = 980, 600, 70, 250, 40, 50
    xs = [p["bytes"] / 1e6 for p in points]
    ys = [max(p["mean_kld"], 1e-4) for p in points]
    x0, x1 = math.log10(min(xs) * 0.97), math.log10(max(xs) * 1.03)
    y0, y1 = math.log10(min(ys) * 0.8), math.log10(max(ys) * 1.25)
    X = lambda v: ml + (math.log10(v) - x0) / (x1 - x0) * (w - ml - mr)
    Y = lambda v: h - mb - (math.log10(v) - y0) / (y1 - y0) * (h - mt - mb)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{model}: file size vs mean KLD '
           f'(12 chunks of wiki.test.raw, lower left is better)</text>',
           f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" stroke="black"/>',
           f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" text-anchor="middle">file size (MB, log scale)</text>',
           f'<text x="16" y="{(mt + h - mb) / 2}" transform="rotate(-90 16 {(mt + h - mb) / 2})" '
           f'text-anchor="middle">mean KLD (log scale)</text>']
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if y0 <= math.log10(v) <= y1:
                out.append(f'<line x1="{ml - 4}" y1="{Y(v):.1f}" x2="{w - mr}" y2="{Y(v):.1f}" stroke="#eee"/>')
                out.append(f'<text x="{ml - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    step = 10 ** math.floor(math.log10((10 ** x1 - 10 ** x0) / 4))
    v = math.ceil(10 ** x0 / step) * step
    while v <= 10 ** x1:
        out.append(f'<line x1="{X(v):.1f}" y1="{h - mb}" x2="{X(v):.1f}" y2="{h - mb + 4}" stroke="black"/>')
        out.append(f'<text x="{X(v):.1f}" y="{h - mb + 16}" text-anchor="middle">{v:g}</text>')
        v += step
    placed = []  # label boxes already drawn: every label is placed where it overlaps none of them
    for p, x, y in zip(points, xs, ys):
        llama = p["build"].startswith("llama:")
        color = "#e8710a" if llama else "#1a73e8"
        shape = (f'<rect x="{X(x) - 4:.1f}" y="{Y(y) - 4:.1f}" width="8" height="8" fill="{color}"/>' if llama
                 else f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4" fill="{color}"/>')
        out.append(shape)
        tw = 6.2 * len(p["build"])
        for dx, dy in [(6, -5), (6, 13), (-6 - tw, -5), (-6 - tw, 13), (6, -18), (-6 - tw, -18), (6, 26)]:
            box = (X(x) + dx, Y(y) + dy - 10, X(x) + dx + tw, Y(y) + dy + 2)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
                break
        placed.append(box)
        out.append(f'<text x="{box[0]:.1f}" y="{box[3] - 2:.1f}" fill="{color}">{p["build"]}</text>')
    lx = w - mr + 15
    out.append(f'<rect x="{lx}" y="{mt}" width="8" height="8" fill="#e8710a"/>'
               f'<text x="{lx + 14}" y="{mt + 8}">llama.cpp (llama-quantize --imatrix)</text>')
    out.append(f'<circle cx="{lx + 4}" cy="{mt + 24}" r="4" fill="#1a73e8"/>'
               f'<text x="{lx + 14}" y="{mt + 28}">lowbit</text>')
    for i, v in enumerate(verdicts):
        out.append(f'<text x="{lx}" y="{mt + 60 + 16 * i}">{v["type"]}: {"pass" if v["pass"] else "FAIL"}'
                   f'{" (grid)" if v.get("grid_effect") else ""}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", default=os.path.join(ROOT, "docs", "quality.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "pareto.json"))
    ap.add_argument("--svg-dir", default=os.path.join(ROOT, "docs"))
    a = ap.parse_args()
    rows = json.load(open(a.quality))["rows"]
    result = {"method": __doc__.strip().split("\n\n")[1].replace("\n", " "), "models": {}}
    print("| model | llama.cpp build | MB | mean KLD | lowbit's best at ≤ size | MB | mean KLD | bar | verdict "
          "| lowbit, same type: mean KLD |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model and math.isfinite(r["mean_kld"])]
        ours = [r for r in mine if not r["build"].startswith("llama:")]
        verdicts = []
        for r in sorted((r for r in mine if r["build"].startswith("llama:")), key=lambda r: r["bytes"]):
            t = r["build"][len("llama:"):].split("+")[0]
            if t not in BARS:
                continue
            fits = [o for o in ours if o["bytes"] <= r["bytes"]]
            best = min(fits, key=lambda o: o["mean_kld"], default=None)
            ok = best is not None and (best["mean_kld"] < r["mean_kld"] if BARS[t] == "lower"
                                       else best["mean_kld"] <= 1.05 * r["mean_kld"])
            v = {"type": t, "llama_cpp": {k: r[k] for k in ("build", "bytes", "mean_kld")}, "bar": BARS[t],
                 "pass": ok}
            if best:
                v["lowbit"] = {k: best[k] for k in ("build", "bytes", "mean_kld")}
                v["grid_effect"] = (bits_of(best["build"]) or 0) >= GRID_BITS
            same = [o for o in fits if o["build"].split("+")[0] == t and "+" in o["build"]]
            if same:
                v["same_type"] = {o["build"]: o["mean_kld"] for o in sorted(same, key=lambda o: o["build"])}
                top = min(same, key=lambda o: o["mean_kld"])
                v["same_type_pass"] = (top["mean_kld"] < r["mean_kld"] if BARS[t] == "lower"
                                       else top["mean_kld"] <= 1.05 * r["mean_kld"])
            verdicts.append(v)
            b = best or {"build": "-", "bytes": float("nan"), "mean_kld": float("nan")}
            st = ", ".join(f"{k.split('+', 1)[1]} {x:.4g}" for k, x in v.get("same_type", {}).items()) or "-"
            st += {True: " (pass)", False: " (fail)"}.get(v.get("same_type_pass"), "")
            print(f"| {model} | {r['build']} | {r['bytes'] / 1e6:.1f} | {r['mean_kld']:.4g} | {b['build']} | "
                  f"{b['bytes'] / 1e6:.1f} | {b['mean_kld']:.4g} | {BARS[t]} | "
                  f"{'pass' if ok else 'FAIL'}{' (grid effect)' if v.get('grid_effect') else ''} | {st} |")
        points = [{k: r[k] for k in ("build", "bytes", "mean_kld")} for r in mine if r["mean_kld"] < 2]
        result["models"][model] = {"points": points, "verdicts": verdicts}
        write_atomic(os.path.join(a.svg_dir, f"pareto-{model}.svg"), svg(model, points, verdicts))
    write_atomic(a.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
