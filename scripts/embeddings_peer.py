#!/usr/bin/env python3
"""The peer side of scripts/compare-embeddings.sh.

    embeddings_peer.py make DIR
        Writes a BERT of all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, intermediate
        1536, vocabulary 30522, 512 positions) with random weights as a sentence-transformers
        directory (mean pooling, normalized), with a WordPiece vocabulary of made-up words
        (`w5` ... `w30521`, one token each) that llama.cpp's converter and tokenizer accept.

    embeddings_peer.py bench DIR --batch B --tokens T --threads N --reps R --warmup W
        Times sentence-transformers (PyTorch on the CPU, N threads) embedding B texts of exactly
        T tokens each, tokenization included as `SentenceTransformer.encode` does it. Prints one
        JSON object: the seconds of every measured call.

    embeddings_peer.py text T
        Prints one text that tokenizes to exactly T tokens ([CLS] + T-2 words + [SEP]).
"""

import json
import os
import sys
import tempfile
import time

VOCAB = 30522
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def text(tokens):
    return " ".join(f"w{5 + i % (VOCAB - 5)}" for i in range(tokens - 2))


def make(out):
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
    )
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    with tempfile.TemporaryDirectory() as hf:
        with open(os.path.join(hf, "vocab.txt"), "w") as f:
            f.write("\n".join(SPECIAL + [f"w{i}" for i in range(5, VOCAB)]) + "\n")
        tok = transformers.BertTokenizerFast(
            vocab_file=os.path.join(hf, "vocab.txt"), do_lower_case=True, model_max_length=512
        )
        model.save_pretrained(hf, safe_serialization=True)
        tok.save_pretrained(hf)
        word = st_models.Transformer(hf, max_seq_length=256)
        pool = st_models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu")
        st.save(out)
    # llama.cpp's converter reads the WordPiece vocabulary from vocab.txt.
    if not os.path.exists(os.path.join(out, "vocab.txt")):
        raise SystemExit(f"{out}: no vocab.txt written")
    print(out)


def bench(model_dir, batch, tokens, threads, reps, warmup):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(model_dir, device="cpu")
    texts = [text(tokens)] * batch
    n = len(st.tokenize(texts[:1])["input_ids"][0])
    if n != tokens:
        raise SystemExit(f"the text tokenizes to {n} tokens, not {tokens}")
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + reps):
            start = time.perf_counter()
            st.encode(texts, batch_size=batch, convert_to_numpy=True)
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    print(json.dumps({"torch": torch.__version__, "threads": threads, "seconds": seconds}))


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "text":
        print(text(int(sys.argv[2])))
    elif cmd == "bench":
        args = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        bench(
            sys.argv[2],
            int(args["--batch"]),
            int(args["--tokens"]),
            int(args["--threads"]),
            int(args["--reps"]),
            int(args["--warmup"]),
        )
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
