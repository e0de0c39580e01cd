#!/usr/bin/env python3
"""Creates the tiny test checkpoints under tests/fixtures/ and their goldens, using Hugging Face
`transformers` on CPU as the reference implementation.

For every supported architecture this writes a random-weight model a few hundred KB large
(config.json, model safetensors, tokenizer.json, tokenizer_config.json with a chat template,
generation_config.json), the same config in the other layout found in the wild
(config.classic.json: `rope_theta`/`rope_scaling`/`torch_dtype` at the top level, where
transformers 5 writes `rope_parameters`/`dtype`), and golden.json: the prompt's token ids, the
logits at the last prompt position and a 20-token greedy continuation.

Weights are scaled up after initialization so that attention is far from uniform and features
such as rope scaling, sliding windows and soft-capping visibly change the logits.

Tokenizers are trained on a small corpus: a byte-level BPE (GPT-2's pre-tokenizer) for llama,
mistral, qwen2 and gpt2, and a SentencePiece BPE with byte fallback (tokenizer.model, as the real
models ship, plus the tokenizer.json transformers converts it to) for phi3 and the Gemmas.

Run (outside CI, in a venv with torch, transformers, tokenizers, safetensors, sentencepiece):
    python scripts/make_fixtures.py [--out tests/fixtures] [ARCH ...]
"""

import argparse
import io
import json
import os
import shutil

import sentencepiece as spm

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

PROMPT = "Hello world! The quick brown fox jumps over the lazy dog."
GREEDY_STEPS = 20
VOCAB = 512
SPECIAL = ["<|endoftext|>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
BOS, EOS, END = 1, 2, 6
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] | trim + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Switchyard runs the same transformer on every accelerator and measures tokens per second.",
    "A portable runtime compiles a graph once and executes it many times.",
    "Language models predict the next token from the tokens before it.",
    "Prices per million tokens differ between devices; memory bandwidth bounds decoding.",
    "The cache holds keys and values for every position seen so far.",
    "Caf\u00e9, na\u00efve, \u00fcber, \u65e5\u672c\u8a9e, emoji \U0001F680 and other multi-byte text.",
    "Numbers like 12345 and 3.14159 appear in text too.",
] * 20


# Fixtures whose real models ship SentencePiece tokenizers: (dummy prefix, transformers class).
SENTENCEPIECE = {
    "phi3": (True, "LlamaTokenizer"),
    "gemma": (False, "GemmaTokenizer"),
    "gemma2": (False, "GemmaTokenizer"),
    "gemma3": (False, "GemmaTokenizer"),
}


def train_tokenizer(add_bos: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    return tok


def train_sentencepiece(d: str, dummy_prefix: bool, tokenizer_class: str):
    """A SentencePiece BPE model with byte fallback (tokenizer.model) and the tokenizer.json
    transformers makes of it; checks both tokenize the corpus the same way."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=VOCAB, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=BOS, eos_id=EOS, pad_id=-1,
        user_defined_symbols=[t for t in SPECIAL if t not in ("<s>", "</s>")],
        character_coverage=1.0, split_digits=True, add_dummy_prefix=dummy_prefix,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        hard_vocab_limit=False, minloglevel=2)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": tokenizer_class, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True}, f)
    tok = transformers.AutoTokenizer.from_pretrained(d)
    tok.save_pretrained(d)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    for text in CORPUS[:8] + [PROMPT]:
        assert tok(text)["input_ids"] == [BOS] + sp.encode(text), text
    return tok


def scale_weights(model: torch.nn.Module, arch: str) -> None:
    """Makes the random model 'interesting': O(1) activations, peaked attention, non-trivial norms."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name or ".ln_" in name or name.endswith("ln_f.weight"):
                # Gemma's RMSNorm multiplies by (1 + w); the others by w.
                base = 0.0 if arch.startswith("gemma") else 1.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed" in name or "wte" in name or "wpe" in name:
                # Gemma multiplies embeddings by sqrt(hidden): undo that so the residual stream
                # is not dominated by the token's own embedding.
                scale = p.shape[1] ** -0.5 if arch.startswith("gemma") else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=g))
            elif any(k in name for k in ("q_proj", "k_proj", "qkv_proj", "c_attn")):
                fan_in = p.shape[0] if arch == "gpt2" else p.shape[1]
                p.copy_(2.5 * torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif p.dim() == 2:
                fan_in = p.shape[0] if arch == "gpt2" else p.shape[1]
                p.copy_(1.5 * torch.randn(p.shape, generator=g) / fan_in**0.5)


def fixtures():
    """(name, config class kwargs, storage dtype, shard size or None, tied) per architecture."""
    common = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, max_position_embeddings=512)
    return [
        ("llama", transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 32},
            **common), torch.float32, None),
        ("mistral", transformers.MistralConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, sliding_window=4, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common),
            torch.bfloat16, "150KB"),
        ("qwen2", transformers.Qwen2Config(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common),
            torch.float16, None),
        ("phi3", transformers.Phi3Config(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, sliding_window=6, tie_word_embeddings=False, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "partial_rotary_factor": 0.5}, **common),
            torch.float32, None),
        ("gemma", transformers.GemmaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, head_dim=32, hidden_activation="gelu_pytorch_tanh",
            pad_token_id=0, **common), torch.float32, None),
        ("gemma2", transformers.Gemma2Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
            attn_logit_softcapping=4.0, final_logit_softcapping=8.0,
            hidden_activation="gelu_pytorch_tanh", pad_token_id=0, **common),
            torch.float32, None),
        ("gemma3", transformers.Gemma3TextConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
            final_logit_softcapping=None, attn_logit_softcapping=None,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            hidden_activation="gelu_pytorch_tanh", pad_token_id=0, tie_word_embeddings=True,
            **common), torch.float32, None),
        ("gpt2", transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, n_positions=512, vocab_size=VOCAB,
            bos_token_id=0, eos_token_id=0, activation_function="gelu_new"),
            torch.float32, None),
    ]


def classic_layout(cfg: dict) -> dict:
    """The pre-transformers-5 layout: rope_theta/rope_scaling/partial_rotary_factor/torch_dtype."""
    out = dict(cfg)
    rope = out.pop("rope_parameters", None)
    if rope and "full_attention" in rope:
        # Gemma 3: global and local layers' rotary bases.
        out["rope_theta"] = rope["full_attention"]["rope_theta"]
        out["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        kind = rope["full_attention"].get("rope_type", "default")
        out["rope_scaling"] = None if kind == "default" else {**rope["full_attention"], "type": kind}
        rope = None
    if rope:
        rope = dict(rope)
        out["rope_theta"] = rope.pop("rope_theta")
        if "partial_rotary_factor" in rope:
            out["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
        kind = rope.get("rope_type", "default")
        out["rope_scaling"] = None if kind == "default" else {**rope, "type": kind}
    if "dtype" in out:
        out["torch_dtype"] = out.pop("dtype")
    out.pop("transformers_version", None)
    return out


@torch.no_grad()
def greedy(model, ids, steps):
    """The greedy continuation and, per step, the margin between the two largest logits (how
    far apart a second implementation's logits must be to pick another token there)."""
    out = list(ids)
    margins = []
    for _ in range(steps):
        logits = model(torch.tensor([out])).logits[0, -1]
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        out.append(int(torch.argmax(logits)))
    return out[len(ids):], margins


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    ap.add_argument("arch", nargs="*", help="only these fixtures (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    for name, config, dtype, shard in fixtures():
        if args.arch and name not in args.arch:
            continue
        d = os.path.join(args.out, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        config._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        scale_weights(model, name)
        model = model.to(dtype)
        model.save_pretrained(d, max_shard_size=shard or "50MB")
        is_gpt2 = name == "gpt2"
        if name in SENTENCEPIECE:
            dummy_prefix, cls = SENTENCEPIECE[name]
            hf_tok = train_sentencepiece(d, dummy_prefix, cls)
            encode = lambda text: hf_tok(text)["input_ids"]  # noqa: E731
            decode = lambda ids: hf_tok.decode(ids, skip_special_tokens=False)  # noqa: E731
            with open(os.path.join(d, "tokenizer_config.json")) as f:
                tc = json.load(f)
            tc["chat_template"] = CHAT_TEMPLATE
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(tc, f, indent=2)
        else:
            tok = train_tokenizer(add_bos=not is_gpt2)
            tok.save(os.path.join(d, "tokenizer.json"))
            encode = lambda text: tok.encode(text).ids  # noqa: E731
            decode = lambda ids: tok.decode(ids, skip_special_tokens=False)  # noqa: E731
            bos = "<|endoftext|>" if is_gpt2 else "<s>"
            eos = "<|endoftext|>" if is_gpt2 else "</s>"
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump({"bos_token": bos, "eos_token": eos, "chat_template": CHAT_TEMPLATE,
                           "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
        gen = {"bos_token_id": config.bos_token_id,
               "eos_token_id": [config.eos_token_id, END] if name == "llama" else config.eos_token_id}
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        if is_gpt2:
            # Real GPT-2 configs carry n_ctx (llama.cpp's converter reads it); transformers 5
            # no longer writes it.
            cfg["n_ctx"] = cfg["n_positions"]
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
        with open(os.path.join(d, "config.classic.json"), "w") as f:
            json.dump(classic_layout(cfg), f, indent=2)

        # Goldens from the saved files, computed in f32.
        ref = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        ref.eval()
        ids = encode(PROMPT)
        with torch.no_grad():
            logits = ref(torch.tensor([ids])).logits[0, -1].tolist()
        cont, margins = greedy(ref, ids, GREEDY_STEPS)
        golden = {
            "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, f32, eager attention",
            "prompt": PROMPT,
            "prompt_ids": ids,
            "last_prompt_logits": logits,
            "greedy_ids": cont,
            "greedy_margins": margins,
            "greedy_text": decode(cont),
        }
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(golden, f)
        size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d))
        print(f"{name}: {size / 1024:.0f} KB, prompt {len(ids)} tokens, greedy {cont[:8]}...")


if __name__ == "__main__":
    main()
