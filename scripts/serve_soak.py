"""A steady load on a running `switchyard serve` for a while: concurrent streamed completions of
varied lengths through the official `openai` client, the server's resident memory sampled as it
goes, and the client's counts compared with /metrics at the end. For the release notes, not CI.

Usage: serve_soak.py URL MODEL_NAME SERVER_PID [SECONDS=600] [CONCURRENCY=8]
(run it with the venv scripts/openai-client-check.sh installs)
"""
import concurrent.futures
import random
import re
import sys
import threading
import time
import urllib.request

import openai

url, model, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 600
concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 8
client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
end = time.time() + seconds
lock = threading.Lock()
counts = {"requests": 0, "tokens": 0, "errors": 0}
errors = []


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def metrics():
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(switchyard:\S+) (\S+)$", text, re.M)}


def worker(seed):
    rng = random.Random(seed)
    while time.time() < end:
        n = rng.randint(8, 96)
        prompt = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"])
                          for _ in range(rng.randint(1, 48)))
        try:
            usage = None
            for chunk in client.completions.create(
                    model=model, prompt=prompt, max_tokens=n, temperature=0.7, seed=seed,
                    stream=True, stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True}):
                usage = chunk.usage or usage
            with lock:
                counts["requests"] += 1
                counts["tokens"] += usage.completion_tokens
        except Exception as e:  # counted and reported, the soak goes on
            with lock:
                counts["errors"] += 1
                errors.append(repr(e))


before = metrics()
samples = [(0.0, rss_mib())]
start = time.time()
with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    futures = [pool.submit(worker, i) for i in range(concurrency)]
    while not all(f.done() for f in futures):
        time.sleep(min(30, max(0.1, end - time.time())))
        samples.append((time.time() - start, rss_mib()))
after = metrics()
elapsed = time.time() - start
served = after['switchyard:requests_total{outcome="length"}'] - before.get('switchyard:requests_total{outcome="length"}', 0)
generated = after["switchyard:generation_tokens_total"] - before.get("switchyard:generation_tokens_total", 0)
print(f"{elapsed:.0f} s, {concurrency} concurrent streams: {counts['requests']} requests, "
      f"{counts['tokens']} tokens ({counts['tokens'] / elapsed:.1f} tokens/s), {counts['errors']} errors")
print(f"server metrics over the same time: {served:.0f} requests ended by length, {generated:.0f} tokens generated")
print("resident memory (MiB) at t(s): " + ", ".join(f"{t:.0f}:{m:.1f}" for t, m in samples))
first = samples[1][1] if len(samples) > 1 else samples[0][1]
print(f"memory after the first sample {first:.1f} MiB, at the end {samples[-1][1]:.1f} MiB, "
      f"largest {max(m for _, m in samples):.1f} MiB")
for e in errors[:5]:
    print("error:", e)
ok = counts["errors"] == 0 and served == counts["requests"] and generated == counts["tokens"]
print("consistent" if ok else "INCONSISTENT")
sys.exit(0 if ok else 1)
