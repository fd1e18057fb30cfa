"""Concurrent streaming clients against `lowbit serve`, with OpenAI's Python client: each asks for a completion of
`--tokens` tokens (temperature 0.8, a seed per client) and streams it. Prints errors, time to first token (p50,
p99), aggregate tokens/s (generated tokens over the time from the first request to the last answer), and aggregate
decode tokens/s (tokens after each client's first, over the time from the first first token to the last answer).

  python scripts/serve_load.py http://127.0.0.1:8080 --clients 32 --tokens 64 --model smollm2 [--json]
"""

import argparse
import json
import statistics
import threading
import time

from openai import OpenAI


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def run(base, model, clients, tokens):
    client = OpenAI(base_url=base + "/v1", api_key="not-checked", max_retries=0, timeout=600)
    results = [None] * clients
    start = time.perf_counter()

    def one(i):
        t0 = time.perf_counter()
        first, generated = None, 0
        try:
            stream = client.completions.create(
                model=model,
                prompt=f"Story number {i}: once upon a time",
                max_tokens=tokens,
                temperature=0.8,
                seed=i,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].text and first is None:
                    first = time.perf_counter() - t0
                if chunk.usage:
                    generated = chunk.usage.completion_tokens
            results[i] = {
                "ttft": first,
                "first_at": t0 - start + first if first is not None else None,
                "tokens": generated,
                "end": time.perf_counter() - start,
                "error": None,
            }
        except Exception as e:  # every failure is counted, whatever its kind
            results[i] = {"ttft": None, "first_at": None, "tokens": 0, "end": time.perf_counter() - start, "error": repr(e)}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(r["end"] for r in results)
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    total = sum(r["tokens"] for r in results)
    firsts = [r["first_at"] for r in results if r["first_at"] is not None]
    decoded = sum(max(r["tokens"] - 1, 0) for r in results)
    return {
        "clients": clients,
        "tokens_per_client": tokens,
        "errors": [r["error"] for r in results if r["error"]],
        "generated_tokens": total,
        "wall_seconds": wall,
        "aggregate_tokens_per_second": total / wall,
        "decode_tokens_per_second": decoded / (wall - min(firsts)) if firsts else None,
        "ttft_p50": statistics.median(ttfts) if ttfts else None,
        "ttft_p99": percentile(ttfts, 99),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run(a.base, a.model, a.clients, a.tokens)
    if a.json:
        print(json.dumps(r))
    else:
        print(
            f"{r['clients']} clients x {r['tokens_per_client']} tokens: {len(r['errors'])} errors, "
            f"{r['generated_tokens']} tokens in {r['wall_seconds']:.2f} s = {r['aggregate_tokens_per_second']:.1f} tok/s "
            f"(decode {r['decode_tokens_per_second']:.1f} tok/s), "
            f"TTFT p50 {r['ttft_p50']:.3f} s, p99 {r['ttft_p99']:.3f} s"
        )
        for e in r["errors"][:5]:
            print("error:", e)
