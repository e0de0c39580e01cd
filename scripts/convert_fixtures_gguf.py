#!/usr/bin/env python3
"""Converts tests/fixtures/<arch> checkpoints to GGUF with llama.cpp's own converter
(`convert_hf_to_gguf.py` from the llama.cpp source PyPI's llama-cpp-python sdist vendors), so
Switchyard's GGUF loader is checked against files a peer wrote (tests/gguf_peer.rs).

The fixtures' tokenizers are freshly trained byte-level BPEs with GPT-2's pre-tokenizer. The
converter recognizes a byte-level tokenizer's pre-tokenizer only by hashing how known hub models
tokenize a probe text, which no freshly trained vocabulary can match; this wrapper checks that
the fixture's tokenizer.json is exactly GPT-2's byte-level pre-tokenizer and then tells the
converter so ('gpt-2'). Everything else -- tensor names, layouts, permutations, metadata -- is
the converter's own.

Run outside CI (the converter needs torch; PyPI's torch is the 6 GB CUDA build):
    python3 -m venv ~/.cache/switchyard/torch-venv
    ~/.cache/switchyard/torch-venv/bin/pip install torch transformers safetensors sentencepiece
    ~/.cache/switchyard/torch-venv/bin/python scripts/convert_fixtures_gguf.py \\
        --llamacpp "$(scripts/llamacpp-tools.sh --source)" [--out tests/fixtures] [ARCH ...]

Writes tests/fixtures/<arch>/peer-f32.gguf and peer-q8_0.gguf (the bert encoder: peer-f32.gguf).
"""

import argparse
import json
import os
import sys
from pathlib import Path

GPT2_PRE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamacpp", required=True, help="the llama.cpp source directory")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures"))
    ap.add_argument("arch", nargs="*")
    a = ap.parse_args()
    src = Path(a.llamacpp)
    sys.path.insert(0, str(src / "gguf-py"))
    sys.path.insert(0, str(src))
    import convert_hf_to_gguf as conv  # noqa: E402
    from conversion import base  # noqa: E402

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            tj = json.loads((Path(self.dir_model) / "tokenizer.json").read_text())
            if tj.get("pre_tokenizer") == GPT2_PRE and tj["model"]["type"] == "BPE":
                return "gpt-2"
            # A WordPiece vocabulary: llama.cpp's WordPiece tokenizer has one pre-tokenizer.
            if tj["model"]["type"] == "WordPiece" and (tj.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer":
                return "default"
            raise

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    fixtures = Path(a.out)
    # xlm-roberta is not converted: the converter reads its vocabulary from a SentencePiece model
    # file, which the fixture (a tokenizer.json trained by `tokenizers`) does not have.
    archs = a.arch or sorted(p.name for p in fixtures.iterdir()
                             if (p / "config.json").is_file() and p.name != "xlm-roberta")
    for arch in archs:
        # Encoders are checked in f32 only (tests/embeddings.rs).
        for outtype in ["f32"] if arch == "bert" else ["f32", "q8_0"]:
            out = fixtures / arch / f"peer-{outtype}.gguf"
            sys.argv = ["convert_hf_to_gguf.py", str(fixtures / arch), "--outfile", str(out),
                        "--outtype", outtype]
            print(f"== {arch} {outtype}", flush=True)
            conv.main()


if __name__ == "__main__":
    main()
