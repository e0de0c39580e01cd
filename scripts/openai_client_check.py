"""The official `openai` client against `switchyard serve` (see openai-client-check.sh).

Usage: openai_client_check.py URL API_KEY SLOW_URL EMBED_URL GOLDEN

SLOW_URL serves a slow model (token-id prompts only) for the cancellation check; EMBED_URL serves
an encoder whose sentence-transformers goldens are in GOLDEN (tests/fixtures/bert/golden.json).
"""
import concurrent.futures
import json
import re
import sys
import time
import urllib.error
import urllib.request

import openai

url, key, slow_url, embed_url, golden_file = sys.argv[1:6]
client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
MODEL = "fixture"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def metric(name, base=url):
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    m = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def greedy(prompt, n, **kw):
    return dict(model=MODEL, prompt=prompt, max_tokens=n, temperature=0,
                extra_body={"ignore_eos": True}, **kw)


def streamed_completion(prompt, n):
    text, finish = "", None
    for chunk in client.completions.create(stream=True, **greedy(prompt, n)):
        for c in chunk.choices:
            text += c.text
            finish = c.finish_reason or finish
    return text, finish


# Models.
models = client.models.list()
check([m.id for m in models.data] == [MODEL], f"/v1/models lists {MODEL}")

# Completions, whole and streamed, and usage.
whole = client.completions.create(**greedy("Once upon a time", 16))
check(whole.choices[0].finish_reason == "length", "finish_reason length")
check(whole.usage.completion_tokens == 16, "usage.completion_tokens")
check(whole.usage.total_tokens == whole.usage.prompt_tokens + 16, "usage.total_tokens")
text, finish = streamed_completion("Once upon a time", 16)
check(text == whole.choices[0].text and finish == "length", "streamed completion = whole")
chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True},
                                        **greedy("Once upon a time", 16)))
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16,
      "stream_options.include_usage gives a final usage chunk")

# Token-id prompts: the ids of the text prompt give the same completion.
ids = json.loads(urllib.request.urlopen(urllib.request.Request(
    url + "/v1/completions", method="POST", headers={"Authorization": f"Bearer {key}"},
    data=json.dumps({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1,
                     "temperature": 0, "logprobs": 0}).encode())).read())
check(ids["usage"]["prompt_tokens"] == whole.usage.prompt_tokens, "prompt tokens agree")
by_ids = client.completions.create(**greedy(list(range(1, 9)), 8))
check(by_ids.usage.prompt_tokens == 8, "a token-id prompt is taken as ids")

# Stop strings.
full = whole.choices[0].text
stop = full[6:9]
cut = full.find(stop)
stopped = client.completions.create(stop=[stop], **greedy("Once upon a time", 16))
check(stopped.choices[0].text == full[:cut] and stopped.choices[0].finish_reason == "stop",
      f"stop string {stop!r} ends the text before it")

# Chat, whole and streamed, with usage and logprobs.
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
chat = client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=10,
                                      temperature=0, logprobs=True, top_logprobs=2,
                                      extra_body={"ignore_eos": True})
check(chat.choices[0].message.role == "assistant", "chat role")
check(len(chat.choices[0].logprobs.content) == 10, "one logprob entry per token")
check(all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in chat.choices[0].logprobs.content),
      "top logprobs")
parts, usage = [], None
for chunk in client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=10,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        parts.append(c.delta.content or "")
check("".join(parts) == chat.choices[0].message.content, "streamed chat = whole chat")
check(usage is not None and usage.completion_tokens == 10, "chat stream usage")

# Sampling with a seed repeats.
sampled = dict(model=MODEL, prompt="Hello", max_tokens=12, temperature=0.8, top_p=0.9, seed=5,
               presence_penalty=0.3, frequency_penalty=0.3,
               extra_body={"top_k": 20, "min_p": 0.01, "repetition_penalty": 1.1,
                           "ignore_eos": True})
check(client.completions.create(**sampled).choices[0].text ==
      client.completions.create(**sampled).choices[0].text, "seeded sampling repeats")

# Errors: the client's exception classes, with the field named.
def refused(exc, fn, param=None):
    try:
        fn()
    except exc as e:
        check(param is None or (e.body or {}).get("param") == param, f"{exc.__name__} names {param}")
        return
    raise SystemExit(f"FAILED: expected {exc.__name__}")


refused(openai.NotFoundError, lambda: client.completions.create(model="nope", prompt="x"), "model")
refused(openai.BadRequestError, lambda: client.completions.create(**greedy("x", 100000)), "max_tokens")
refused(openai.BadRequestError, lambda: client.completions.create(**greedy(list(range(1, 600)), 4)), "prompt")
refused(openai.BadRequestError, lambda: client.completions.create(model=MODEL, prompt="x", temperature=-1), "temperature")
refused(openai.BadRequestError, lambda: client.completions.create(model=MODEL, prompt="x", top_p=1.5), "top_p")
refused(openai.BadRequestError, lambda: client.completions.create(model=MODEL, prompt="x", n=2), "n")
refused(openai.BadRequestError, lambda: client.chat.completions.create(model=MODEL, messages=[]), "messages")
refused(openai.AuthenticationError,
        lambda: openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list())
try:
    urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", data=b"{oops",
                           headers={"Authorization": f"Bearer {key}"}))
    raise SystemExit("FAILED: malformed JSON accepted")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    check(e.code == 400 and "error" in body, "malformed JSON is a 400 with an error body")

# 32 concurrent greedy streams of different lengths on 8 slots: each gets its tokens alone.
prompts = [(" ".join(["word"] * (1 + i % 7)) + f" {i}", 4 + (i * 5) % 37) for i in range(32)]
alone = [streamed_completion(p, n) for p, n in prompts]
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    together = list(pool.map(lambda pn: streamed_completion(*pn), prompts))
mismatch = [i for i in range(32) if alone[i] != together[i]]
check(not mismatch, f"concurrent streams equal alone (mismatched: {mismatch})")

# Cancellation: a client that goes away mid-stream frees its slot; another is unaffected. On the
# slow server (no tokenizer: its tokens are compared through their logprob entries).
slow = openai.OpenAI(base_url=slow_url + "/v1", api_key=key, max_retries=0)


def slow_tokens(prompt, n):
    tokens = []
    for chunk in slow.completions.create(model=MODEL, prompt=prompt, max_tokens=n, temperature=0,
                                         logprobs=0, stream=True, extra_body={"ignore_eos": True}):
        for c in chunk.choices:
            if c.logprobs:
                tokens += c.logprobs.tokens
    return tokens


reference = slow_tokens([1, 2, 3, 4], 24)
check(len(reference) == 24, "the slow server streams one entry per token")
with concurrent.futures.ThreadPoolExecutor(1) as pool:
    other = pool.submit(slow_tokens, [1, 2, 3, 4], 24)
    stream = slow.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=200, temperature=0,
                                     logprobs=0, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.response.close()
    check(other.result() == reference, "a cancelled neighbour leaves the other stream unchanged")
cancelled = 'switchyard:requests_total{outcome="cancelled"}'
deadline = time.time() + 60
while metric(cancelled, slow_url) < 1:
    if time.time() > deadline:
        raise SystemExit("FAILED: the disconnected request was never cancelled")
    time.sleep(0.05)
check(metric('switchyard:requests_total{outcome="length"}', slow_url) == 2,
      "the cancelled request did not run to its length")
check(metric("switchyard:kv_slots_used", slow_url) == 0, "every slot free after the cancellation")
check(metric("switchyard:num_requests_running", slow_url) == 0, "nothing running")
check(metric("switchyard:kv_slots_used") == 0, "every slot of the fixture server free")

# Embeddings: the client sends base64 unless told otherwise; both match sentence-transformers
# within the 1e-4 max abs error tests/embeddings.rs derives.
golden = json.load(open(golden_file))
embed = openai.OpenAI(base_url=embed_url + "/v1", api_key=key, max_retries=0)


def close(got, want):
    return len(got) == len(want) and max(abs(a - b) for a, b in zip(got, want)) <= 1e-4


for fmt in [openai.NOT_GIVEN, "float"]:
    r = embed.embeddings.create(model=MODEL, input=golden["texts"], encoding_format=fmt)
    check([d.index for d in r.data] == list(range(len(golden["texts"]))), "embeddings in input order")
    check(all(close(d.embedding, w) for d, w in zip(r.data, golden["embeddings"])),
          f"embeddings ({fmt or 'base64'}) match sentence-transformers")
    tokens = sum(len(i) for i in golden["ids"])
    check(r.usage.prompt_tokens == tokens and r.usage.total_tokens == tokens, "embedding usage")
r = embed.embeddings.create(model=MODEL, input=golden["ids"][1])
check(close(r.data[0].embedding, golden["embeddings"][1]), "token-id input embeds as its text")
refused(openai.BadRequestError,
        lambda: embed.embeddings.create(model=MODEL, input="x", dimensions=8), "dimensions")
refused(openai.BadRequestError,
        lambda: client.embeddings.create(model=MODEL, input="x"), "model")
refused(openai.BadRequestError,
        lambda: embed.completions.create(model=MODEL, prompt="x", max_tokens=1), "model")
print(f"openai {openai.__version__}: {checks} checks passed")
