#!/usr/bin/env python3
"""Memory of `kura serve` over many grounded answers: flat, or bounded by what?

Usage: benches/soak.py [--kura target/release/kura] [--model NAME] [--asks 100]
                       [--max-tokens 48] [--data-dir DIR]

Starts `kura serve` over a data folder holding the sample manuals (ingested first
with `kura ingest` when the folder is new), sends `--asks` `/api/ask` requests in
turn (a fixed cycle of Japanese and English questions, each a different retrieval
and prompt), and reads the server's `/proc/PID/status` before the first ask, after
the first 10, and at the end: VmRSS split into RssAnon (heap: KV caches, buffers)
and RssFile (mapped files: the model weights, the dictionary), and VmHWM (the peak), every 10 asks.
A leak shows as RssAnon still climbing between the 10th and the last ask. Kura asks
glibc to keep freed memory for reuse (`src/alloc.rs`), so RssAnon also counts memory
that is free but kept; with `gdb` on PATH, the soak ends by calling `malloc_trim(0)`
in the server and reads RssAnon once more ("trimmed"): what remains is memory in use.
Standard library only; a benchmark, not a test.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUESTIONS = [
    "年次有給休暇は何日前までに申請しますか?",
    "経費精算の締め日はいつですか?",
    "KR-200 の電源を入れる手順は?",
    "How do I start the KR-200?",
    "What is the daily allowance on a business trip?",
    "What is the expense deadline?",
    "情報セキュリティの規程でUSBメモリは使えますか?",
    "不良品が見つかったときの処置は?",
]


def status_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def ask(port, question, max_tokens):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    body = json.dumps({"question": question, "max_tokens": max_tokens})
    conn.request("POST", "/api/ask", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read().decode()}")
    events = resp.read().decode()
    if "event: error" in events:
        raise SystemExit(f"error event: {events[-500:]}")
    conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kura", default=os.path.join(ROOT, "target/release/kura"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--asks", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--data-dir")
    a = p.parse_args()
    data = a.data_dir or tempfile.mkdtemp(prefix="kura-soak-")
    if not os.path.exists(os.path.join(data, "catalog.sqlite")):
        subprocess.run(
            [a.kura, "--data-dir", data, "ingest", os.path.join(ROOT, "assets/manuals"),
             "--collection", "manuals"],
            check=True, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(
        [a.kura, "--data-dir", data, "serve", "--port", "0", "--model", a.model],
        stdout=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stdout:
            if line.startswith("kura serve: listening on http://"):
                port = int(line.strip().rsplit(":", 1)[1])
                break
        if port is None:
            raise SystemExit("kura serve did not start")
        marks = {"start": status_kb(server.pid)}
        t0 = time.time()
        for i in range(a.asks):
            ask(port, QUESTIONS[i % len(QUESTIONS)], a.max_tokens)
            if (i + 1) % 10 == 0 or i + 1 == a.asks:
                marks[f"after {i + 1}"] = status_kb(server.pid)
        seconds = time.time() - t0
        if shutil.which("gdb"):
            subprocess.run(["gdb", "-p", str(server.pid), "-batch", "-ex",
                            "call (int) malloc_trim(0)"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            marks["trimmed"] = status_kb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"kura serve --model {a.model}: {a.asks} asks (max_tokens {a.max_tokens}) in {seconds:.0f} s")
    print(f"{'':>10} {'VmRSS':>9} {'RssAnon':>9} {'RssFile':>9} {'VmHWM':>9}  (MB)")
    for name, m in marks.items():
        print(f"{name:>10} " + " ".join(f"{m.get(k, 0) / 1024:9.0f}" for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")))
    first, last = marks[f"after {min(10, a.asks)}"], marks[f"after {a.asks}"]
    growth = (last["RssAnon"] - first["RssAnon"]) / 1024
    print(f"heap growth from the 10th to the last ask: {growth:+.0f} MB")
    if "trimmed" in marks:
        kept = (last["RssAnon"] - marks["trimmed"]["RssAnon"]) / 1024
        print(f"of the heap after the last ask, {kept:.0f} MB was free memory kept for reuse")
    json.dump({"model": a.model, "asks": a.asks, "marks": marks, "anon_growth_mb": growth},
              sys.stderr)
    sys.stderr.write("\n")


if __name__ == "__main__":
    main()
