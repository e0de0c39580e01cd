#!/usr/bin/env python3
"""Times llama.cpp (through llama-cpp-python's low-level API) the way `switchyard bench` times
Switchyard: `pp N` processes N random tokens from an empty context in one call, `tg N` decodes N
tokens one at a time from an empty context; warm-up runs are discarded; each measured run's
tokens/s is reported, with mean, stdev and median.

Usage: llamacpp_bench.py MODEL.gguf --threads 2 -p 128,512 -n 128 -r 5 --warmup 1
Prints one JSON object on stdout.
"""

import argparse
import ctypes
import json
import random
import statistics
import sys
import time

import llama_cpp as lc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-p", default="512")
    ap.add_argument("-n", default="128")
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    pp = [int(x) for x in a.p.split(",") if x]
    tg = [int(x) for x in a.n.split(",") if x]

    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(a.model.encode(), mparams)
    if not model:
        sys.exit(f"llama.cpp could not load {a.model}")
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = max(pp + tg) + 16
    cparams.n_batch = max(pp + [1])
    cparams.n_ubatch = max(pp + [1])
    cparams.n_threads = a.threads
    cparams.n_threads_batch = a.threads
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("llama.cpp could not create a context")
    mem = lc.llama_get_memory(ctx)
    rng = random.Random(a.seed)

    def decode(tokens):
        arr = (lc.llama_token * len(tokens))(*tokens)
        batch = lc.llama_batch_get_one(arr, len(tokens))
        rc = lc.llama_decode(ctx, batch)
        if rc != 0:
            sys.exit(f"llama_decode returned {rc}")

    results = []
    for kind, sizes in (("pp", pp), ("tg", tg)):
        for n in sizes:
            samples = []
            for rep in range(a.warmup + a.r):
                lc.llama_memory_clear(mem, True)
                if kind == "pp":
                    tokens = [rng.randrange(n_vocab) for _ in range(n)]
                    lc.llama_synchronize(ctx)
                    t = time.perf_counter()
                    decode(tokens)
                    lc.llama_synchronize(ctx)
                    secs = time.perf_counter() - t
                else:
                    tok = rng.randrange(n_vocab)
                    lc.llama_synchronize(ctx)
                    t = time.perf_counter()
                    for _ in range(n):
                        decode([tok])
                        lc.llama_synchronize(ctx)
                    secs = time.perf_counter() - t
                if rep >= a.warmup:
                    samples.append(n / secs)
            results.append({
                "test": f"{kind}{n}",
                "tokens_per_s": samples,
                "mean": statistics.mean(samples),
                "stdev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
                "median": statistics.median(samples),
            })
    print(json.dumps({"engine": f"llama.cpp via llama-cpp-python {lc.__version__}", "threads": a.threads, "model": a.model, "results": results}))
    lc.llama_free(ctx)
    lc.llama_model_free(model)


if __name__ == "__main__":
    main()
