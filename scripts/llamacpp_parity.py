#!/usr/bin/env python3
"""Switchyard against llama.cpp on the very same GGUF files, same threads, same token ids.

    llamacpp_parity.py real --switchyard BIN --gguf SmolLM2.gguf [--tokens 32]
    llamacpp_parity.py ours --switchyard BIN --fixtures tests/fixtures --gguf SmolLM2.gguf [--types ...]

`real`: on a GGUF file from the wild, for plain and chat prompts (the chat rendered with the
file's own template), both tokenizers give the same ids and both engines' greedy tokens agree;
`ours`: every file `switchyard quantize` writes (each storage type, every fixture and the real
model) loads in llama.cpp, tokenizes like its source and generates the tokens Switchyard
generates on that file.

Tolerance, derived in the same run and never from Switchyard's numbers: llama.cpp's own
deviation from exact arithmetic on the same weights, T = max |logits(file) - logits(file
dequantized to f32)| at the last prompt position, both by llama.cpp (the 8- or 16-bit rounding of
activations its kernels do); Switchyard rounds no coarser (f32 activations for prompts, 8-bit
blocks of 32 for decode), so the two engines may differ by up to 2·T (plus 1e-4 of the largest
logit for f32 summation order, and 2^-10 of it where llama.cpp's GELU reads f16 tables). Greedy tokens must agree until a step where llama.cpp's own top-2
margin is within that tolerance (either token is then a correct greedy choice); past it the
sequences are different continuations and are not compared.

Needs llama-cpp-python's bindings (PYTHONPATH) over a libllama.so (LLAMA_CPP_LIB_PATH), numpy and
gguf-py: scripts/llamacpp-checks.sh sets them up.
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import gguf
import llama_cpp as lc

THREADS = 2
KV_TYPE = 0  # GGML_TYPE_F32
FLASH_ATTN = 0  # LLAMA_FLASH_ATTN_TYPE_DISABLED
# llama.cpp's log lines, dropped (a module global: the C side keeps the pointer).
QUIET = lc.llama_log_callback(lambda level, text, data: None)


def dequantized_copy(src, dst):
    """`src` with every tensor stored as f32 (same metadata): the exact-arithmetic reference."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, f.contents(), f.types[0], sub_type=f.types[1])
        else:
            w.add_key_value(name, f.contents(), f.types[0])
    for t in r.tensors:
        shape = list(reversed([int(x) for x in t.shape]))
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class LlamaCpp:
    """A GGUF file in llama.cpp, through its C API."""

    def __init__(self, path, n_ctx=512):
        self.model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        p = lc.llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = n_ctx
        p.n_ubatch = n_ctx
        p.n_threads = THREADS
        p.n_threads_batch = THREADS
        # Keys and values in f32 as Switchyard keeps them (llama.cpp's default rounds them to
        # f16), and attention without the fused kernel, which also rounds to f16.
        p.type_k = KV_TYPE
        p.type_v = KV_TYPE
        p.flash_attn_type = FLASH_ATTN
        self.ctx = lc.llama_init_from_model(self.model, p)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")

    def close(self):
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)

    def tokenize(self, text, add_special, parse_special=True):
        b = text.encode()
        buf = (lc.llama_token * (len(b) + 16))()
        n = lc.llama_tokenize(self.vocab, b, len(b), buf, len(buf), add_special, parse_special)
        if n < 0:
            raise RuntimeError(f"llama_tokenize returned {n}")
        return list(buf[:n])

    def _decode(self, ids):
        arr = (lc.llama_token * len(ids))(*ids)
        rc = lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        ptr = lc.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def greedy(self, prompt, n):
        """Last-prompt logits, `n` greedy tokens (end of sequence ignored) and each step's top-2
        margin."""
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        logits = self._decode(prompt)
        first = logits
        out, margins = [], []
        for _ in range(n):
            top2 = np.partition(logits, -2)[-2:]
            margins.append(float(top2[1] - top2[0]))
            tok = int(np.argmax(logits))
            out.append(tok)
            logits = self._decode([tok])
        return first, out, margins


def switchyard_greedy(bin_, model, prompt, n):
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS), CANDLE_NUM_THREADS=str(THREADS))
    cmd = [bin_, "generate", "--model", model, "--prompt-ids", ",".join(map(str, prompt)),
           "--max-new-tokens", str(n), "--temperature", "0", "--ignore-eos", "--format", "json",
           "--logits"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    j = json.loads(out.stdout)
    return np.array(j["last_prompt_logits"], dtype=np.float32), j["generated_ids"]


def switchyard_tokenize(bin_, model, text, bos=True):
    cmd = [bin_, "tokenize", "--model", model, "--text", text, "--ids"]
    if not bos:
        cmd.append("--no-bos")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def tolerance(path, prompt, tmp):
    """T for `path`: llama.cpp's logits on the file against the same weights in f32."""
    ref_path = os.path.join(tmp, "dequantized.gguf")
    dequantized_copy(path, ref_path)
    a, b = LlamaCpp(path), LlamaCpp(ref_path)
    la, _, _ = a.greedy(prompt, 0)
    lb, _, _ = b.greedy(prompt, 0)
    a.close()
    b.close()
    os.remove(ref_path)
    return float(np.max(np.abs(la - lb)))


def self_variation(path, prompt):
    """How far llama.cpp moves from itself when only its attention arithmetic changes (its fused
    flash-attention kernel on instead of off): 8-bit activation rounding turns ulp-level
    differences into step-sized ones, so two correct implementations differ by about this."""
    global FLASH_ATTN
    FLASH_ATTN = 1
    try:
        llama = LlamaCpp(path)
        fused, _, _ = llama.greedy(prompt, 0)
        llama.close()
    finally:
        FLASH_ATTN = 0
    llama = LlamaCpp(path)
    plain, _, _ = llama.greedy(prompt, 0)
    llama.close()
    return float(np.max(np.abs(fused - plain)))


def compare(label, bin_, path, prompt, n, tmp, calibrate=False):
    """One file, one prompt: returns (ok, line, llama.cpp's tokens, Switchyard's)."""
    t = tolerance(path, prompt, tmp)
    llama = LlamaCpp(path)
    l_logits, l_toks, margins = llama.greedy(prompt, n)
    llama.close()
    s_logits, s_toks = switchyard_greedy(bin_, path, prompt, n)
    scale = float(np.max(np.abs(l_logits)))
    arch = gguf.GGUFReader(path).fields["general.architecture"].contents()
    # llama.cpp's GELU reads a table of f16 values (2^-11 relative rounding per activation):
    # 2^-10 of the largest logit more for the GELU architectures.
    floor = 1e-4 + (2.0**-10 if arch in ("gemma", "gemma2", "gemma3", "gpt2") else 0.0)
    tol = 2 * t + floor * scale
    err = float(np.max(np.abs(l_logits - s_logits)))
    agree = 0
    while agree < n and l_toks[agree] == s_toks[agree]:
        agree += 1
    justified = agree == n or margins[agree] <= tol
    ok = err <= tol and justified
    part = "" if agree == n else f", then llama.cpp's margin {margins[agree]:.4f} ({'within' if justified else 'OUTSIDE'} the tolerance)"
    line = (f"{'ok  ' if ok else 'FAIL'} {label}: logits max |diff| {err:.4f} (tolerance 2·{t:.4f} + "
            f"{floor:.1e}·{scale:.1f} = {tol:.4f}); greedy tokens equal for {agree}/{n}{part}")
    if calibrate:
        line += f"\n     llama.cpp against itself, fused attention on vs off: {self_variation(path, prompt):.4f}"
    return ok, line, l_toks, s_toks


def real(a):
    with tempfile.TemporaryDirectory() as tmp:
        llama = LlamaCpp(a.gguf)
        r = gguf.GGUFReader(a.gguf)
        template = r.fields["tokenizer.chat_template"].contents()
        import jinja2
        env = jinja2.Environment()

        def chat(msg):
            return env.from_string(template).render(
                messages=[{"role": "user", "content": msg}], add_generation_prompt=True,
                bos_token="", eos_token="")
        prompts = [
            ("plain", "The capital of France is"),
            ("plain", "def fibonacci(n):"),
            ("plain", "Once upon a time, in a small village by the sea,"),
            ("chat", chat("What is the capital of France?")),
            ("chat", chat("Give me three tips for staying healthy.")),
        ]
        failures = 0
        for kind, text in prompts:
            ids = llama.tokenize(text, add_special=True, parse_special=(kind == "chat"))
            ours = switchyard_tokenize(a.switchyard, a.gguf, text)
            same_ids = ours == ids
            print(f"{'ok  ' if same_ids else 'FAIL'} tokenizer: {kind} prompt of {len(ids)} tokens, "
                  f"{'identical ids' if same_ids else f'llama.cpp {ids} vs switchyard {ours}'}")
            failures += not same_ids
            ok, line, l_toks, s_toks = compare(f"{kind} {text[:40]!r}", a.switchyard, a.gguf, ids,
                                               a.tokens, tmp, calibrate=True)
            print(line)
            print(f"     llama.cpp:  {decode(llama, l_toks)!r}")
            print(f"     switchyard: {decode(llama, s_toks)!r}")
            failures += not ok
        llama.close()
    return failures


def decode(llama, toks):
    out = b""
    for t in toks:
        buf = ctypes.create_string_buffer(256)
        n = lc.llama_token_to_piece(llama.vocab, t, buf, len(buf), 0, False)
        out += buf.raw[:max(n, 0)]
    return out.decode(errors="replace")


ENCODERS = {"bert", "roberta", "xlm-roberta"}
TEXTS = ["Hello world! The quick brown fox jumps over the lazy dog.",
         "héllo wörld 世界\nnew line\ttab  two spaces",
         "Numbers like 12345 and 3.14159 appear in text too."]


def ours(a):
    failures = 0
    # Text generators only: the encoder fixtures are checked against sentence-transformers and
    # llama.cpp's converter in tests/embeddings.rs (`switchyard quantize` writes decoders).
    def generator(d):
        path = os.path.join(a.fixtures, d, "config.json")
        return os.path.isfile(path) and json.load(open(path)).get("model_type") not in ENCODERS

    sources = [(os.path.join(a.fixtures, d), d) for d in sorted(os.listdir(a.fixtures)) if generator(d)]
    if a.gguf:
        sources.append((a.gguf, "smollm2-135m (real)"))
    with tempfile.TemporaryDirectory() as tmp:
        for src, label in sources:
            for ty in a.types.split(","):
                out = os.path.join(tmp, f"{os.path.basename(label)}-{ty}.gguf")
                q = subprocess.run([a.switchyard, "quantize", "--model", src, "--to", ty, "--out", out],
                                   capture_output=True, text=True)
                if q.returncode != 0:
                    print(f"FAIL {label} {ty}: switchyard quantize: {q.stderr.strip()}")
                    failures += 1
                    continue
                try:
                    llama = LlamaCpp(out)
                except RuntimeError as e:
                    print(f"FAIL {label} {ty}: {e}")
                    failures += 1
                    continue
                # The vocabulary survives: llama.cpp on the written file tokenizes like the source.
                bad = []
                for text in TEXTS:
                    want = switchyard_tokenize(a.switchyard, src, text, bos=True)
                    got = llama.tokenize(text, add_special=True, parse_special=False)
                    if got != want:
                        bad.append(f"{text!r}: llama.cpp {got} vs source {want}")
                prompt = llama.tokenize(TEXTS[0], add_special=True, parse_special=False)
                llama.close()
                if bad:
                    print(f"FAIL {label} {ty}: tokenization differs: " + "; ".join(bad))
                    failures += 1
                ok, line, _, _ = compare(f"{label} {ty}", a.switchyard, out, prompt, a.tokens, tmp)
                print(line)
                failures += not ok
                os.remove(out)
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["real", "ours"])
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--fixtures")
    ap.add_argument("--types", default="f32,f16,bf16,q8_0,q4_0,q4_1,q5_0,q5_1,q2_k,q3_k,q4_k,q5_k,q6_k")
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    lc.llama_backend_init()
    lc.llama_log_set(QUIET, ctypes.c_void_p(0))
    failures = real(a) if a.mode == "real" else ours(a)
    print(f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
