#!/usr/bin/env python3
"""The PyTorch baseline for `switchyard bench`'s `tg` test: Hugging Face transformers greedy
`generate` (eager, batch 1) on a Llama model with the shapes of one of Switchyard's built-in
models and random weights, plus the device's measured copy bandwidth (the practical roofline).

    torch_decode_bench.py --model tinyllama-1.1b --device cuda --dtype bf16 -n 128 -r 5

Prints one JSON object: tokens/s median and spread over the repetitions (after warm-up), the
copy bandwidth, and the versions used. The shapes are those of models/src/builtin.rs.
"""

import argparse
import json
import statistics
import time

import torch
import transformers

# The built-in shapes (models/src/builtin.rs).
SHAPES = {
    "smollm2-135m": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
        rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),
    "tinyllama-1.1b": dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str, gib: float = 1.0, reps: int = 20) -> float:
    """Bytes moved per second (read + write) by a device-to-device copy."""
    n = int(gib * 2**30) // 2
    x = torch.empty(n, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    sync(device)
    return 2 * x.numel() * x.element_size() * reps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(SHAPES), default="tinyllama-1.1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("-n", "--new-tokens", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    config = transformers.LlamaConfig(**SHAPES[a.model])
    with torch.device(a.device):
        model = transformers.LlamaForCausalLM(config).to(DTYPES[a.dtype]).eval()
    gen = model.generation_config
    gen.eos_token_id = None
    gen.pad_token_id = 0
    samples = []
    for rep in range(a.warmup + a.repetitions):
        ids = torch.randint(0, config.vocab_size, (1, 1), device=a.device)
        sync(a.device)
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False
            )
        sync(a.device)
        dt = time.perf_counter() - t
        assert out.shape[1] == 1 + a.new_tokens, out.shape
        if rep >= a.warmup:
            samples.append(a.new_tokens / dt)
    result = {
        "engine": "transformers generate (eager)",
        "model": a.model,
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "dtype": a.dtype,
        "test": f"tg{a.new_tokens}",
        "tokens_per_s_median": statistics.median(samples),
        "tokens_per_s_min": min(samples),
        "tokens_per_s_max": max(samples),
        "tokens_per_s_samples": samples,
        "copy_bandwidth_bytes_per_s": copy_bandwidth(a.device) if a.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
