"""llama.cpp's side of `kura bench generate` (run by Kura as a child process).

Reads a job file (JSON: model, tokens, decode_tokens, threads), runs the same work as
Kura's side through llama-cpp-python's low-level API — load; evaluate the prompt's
token ids (in batches of 512, logits of the last position only); greedy decode
`decode_tokens` single-token steps — and prints one JSON line with the timings, the
greedy tokens and the process's peak RSS (VmHWM). Installed by installer/bench-tools.
"""
import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    tokens = job["tokens"]
    threads = int(job["threads"])
    n_ctx = len(tokens) + int(job["decode_tokens"]) + 16

    t = time.perf_counter()
    llm = Llama(
        model_path=job["model"],
        n_ctx=n_ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        verbose=False,
    )
    load_s = time.perf_counter() - t
    n_vocab = llm.n_vocab()

    def next_token():
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        return int(np.argmax(logits))

    t = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - t
    tok = next_token()
    ttft_s = time.perf_counter() - t

    out = [tok]
    t = time.perf_counter()
    for _ in range(int(job["decode_tokens"])):
        llm.eval([tok])
        tok = next_token()
        out.append(tok)
    decode_s = time.perf_counter() - t

    print(json.dumps({
        "engine": "llama.cpp",
        "load_s": load_s,
        "prompt_tokens": len(tokens),
        "prefill_s": prefill_s,
        "ttft_s": ttft_s,
        "decode_steps": int(job["decode_tokens"]),
        "decode_s": decode_s,
        "peak_rss_mb": peak_rss_mb(),
        "tokens": out,
    }))


if __name__ == "__main__":
    main()
