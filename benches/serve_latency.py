#!/usr/bin/env python3
"""Time to first token and decode speed of `kura serve`, measured as a client sees them.

Usage: benches/serve_latency.py [--url http://127.0.0.1:8080] [--model NAME]
                                [--prompt-words N] [--max-tokens N] [--runs N]

Streams chat completions (temperature 0, ignore_eos so every run decodes the same
number of tokens) and prints, per run and as medians: time to first token (request
sent → first content chunk), client-side decode tok/s (tokens after the first / time
from first to last chunk) and the server's own prefill/decode timings. Standard
library only; a benchmark, not a test.
"""

import argparse
import http.client
import json
import statistics
import time
import urllib.parse


def run(url, model, prompt, max_tokens):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read().decode()}")
    first = last = None
    usage = timings = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise SystemExit(f"error event: {chunk}")
        if chunk.get("usage"):
            usage = chunk["usage"]
        if chunk.get("timings"):
            timings = chunk["timings"]
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
    conn.close()
    n = usage["completion_tokens"]
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": n,
        "ttft_ms": (first - t0) * 1e3,
        "client_decode_tok_s": (n - 1) / (last - first) if last > first else float("nan"),
        "server_prefill_ms": timings["prompt_ms"],
        "server_decode_tok_s": timings["predicted_per_second"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-words", type=int, default=0,
                    help="pad the prompt with this many words (longer prefill)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    prompt = "Write a story about a lighthouse keeper."
    if a.prompt_words:
        prompt = " ".join(["word"] * a.prompt_words) + "\n" + prompt
    run(a.url, a.model, "Hi", 4)  # warm-up
    rows = [run(a.url, a.model, prompt, a.max_tokens) for _ in range(a.runs)]
    for r in rows:
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}))
    med = {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}
    print("median", json.dumps(med))


if __name__ == "__main__":
    main()
