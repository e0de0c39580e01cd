#!/usr/bin/env python3
"""Creates the tiny encoder fixtures under tests/fixtures/ (BERT and XLM-RoBERTa as
sentence-transformers directories) and their goldens, using `transformers` and
`sentence-transformers` on CPU as the reference implementation.

Each fixture is a random-weight model a few hundred KB large with a tokenizer trained on a small
corpus (WordPiece for BERT, Unigram for XLM-RoBERTa), saved by sentence-transformers itself
(modules.json, sentence_bert_config.json, 1_Pooling/config.json, and 2_Normalize where used), and
golden.json with, for every text: its token ids (truncated at max_seq_length), and its embedding
under every pooling mode (mean, cls, max, lasttoken), unnormalized, plus the embedding the saved
pipeline gives (the fixture's own pooling, normalized where it says so). Every embedding is
computed one text at a time; the script also checks that a batch of all texts gives the same
vectors, so "a text's embedding does not depend on its batch" holds for the reference too.

Weights are scaled up after initialization (including the layer norms' weights and biases, which
start as 1 and 0) so that attention is far from uniform and every parameter changes the output.

Run (outside CI, in a venv with torch, transformers and sentence-transformers):
    python scripts/make_encoder_fixtures.py [--out tests/fixtures]
"""

import argparse
import json
import os
import shutil
import tempfile

import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

MAX_SEQ_LENGTH = 24
POOLINGS = ["mean", "cls", "max", "lasttoken"]
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Switchyard runs the same transformer on every accelerator and measures tokens per second.",
    "Search engines embed queries and documents into the same vector space.",
    "A sentence embedding is pooled from the encoder's last hidden states.",
    "Retrieval ranks passages by the cosine similarity of their embeddings.",
    "Caf\u00e9, na\u00efve, \u00fcber and other accented words appear in text too.",
    "Numbers like 12345 and 3.14159 appear in text too.",
] * 20
TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "embeddings",
    "Retrieval ranks passages by the cosine similarity of their embeddings, and search engines "
    "embed queries and documents into the same vector space, so this text is longer than the "
    "model's limit and is truncated.",
    "Caf\u00e9 na\u00efve 12345",
    "A sentence embedding is pooled from the encoder's last hidden states.",
]


def bert_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    return transformers.BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=MAX_SEQ_LENGTH,
    )


def xlmr_tokenizer():
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        CORPUS, trainers.UnigramTrainer(vocab_size=400, special_tokens=special, unk_token="<unk>")
    )
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return transformers.XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=MAX_SEQ_LENGTH,
    )


def scale_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def make(out, name, tokenizer, config, model_cls, pooling, normalize, seed):
    torch.manual_seed(seed)
    model = model_cls(config, add_pooling_layer=False).eval()
    scale_weights(model, seed)
    with tempfile.TemporaryDirectory() as hf:
        model.save_pretrained(hf, safe_serialization=True)
        tokenizer.save_pretrained(hf)
        word = st_models.Transformer(hf, max_seq_length=MAX_SEQ_LENGTH)
        dim = word.get_word_embedding_dimension()

        def pipeline(mode, norm):
            mods = [word, st_models.Pooling(dim, pooling_mode=mode)]
            if norm:
                mods.append(st_models.Normalize())
            return SentenceTransformer(modules=mods, device="cpu")

        def encode(st):
            alone = [st.encode([t], batch_size=1, convert_to_tensor=True)[0] for t in TEXTS]
            batched = st.encode(TEXTS, batch_size=len(TEXTS), convert_to_tensor=True)
            for a, b in zip(alone, batched):
                err = (a - b).abs().max().item()
                assert err < 1e-5, f"{name}: the reference's batch changes an embedding by {err}"
            return [a.tolist() for a in alone]

        saved = pipeline(pooling, normalize)
        dest = os.path.join(out, name)
        shutil.rmtree(dest, ignore_errors=True)
        saved.save(dest)
        golden = {
            "texts": TEXTS,
            "max_seq_length": MAX_SEQ_LENGTH,
            "ids": [tokenizer(t, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"] for t in TEXTS],
            "pooling": pooling,
            "normalize": normalize,
            "embeddings": encode(saved),
            "by_pooling": {mode: encode(pipeline(mode, False)) for mode in POOLINGS},
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "sentence_transformers": __import__("sentence_transformers").__version__,
            },
        }
    # Files sentence-transformers writes that Switchyard does not read and git cannot hold.
    for extra in ["README.md", "2_Normalize"]:
        path = os.path.join(dest, extra)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
        elif os.path.isfile(path):
            os.remove(path)
    with open(os.path.join(dest, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print(f"wrote {dest}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    bt = bert_tokenizer()
    make(
        args.out,
        "bert",
        bt,
        transformers.BertConfig(
            vocab_size=len(bt),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            type_vocab_size=2,
            hidden_act="gelu",
            layer_norm_eps=1e-12,
            pad_token_id=bt.pad_token_id,
        ),
        transformers.BertModel,
        "mean",
        True,
        seed=11,
    )
    xt = xlmr_tokenizer()
    make(
        args.out,
        "xlm-roberta",
        xt,
        transformers.XLMRobertaConfig(
            vocab_size=len(xt),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=MAX_SEQ_LENGTH + 2,
            type_vocab_size=1,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        transformers.XLMRobertaModel,
        "cls",
        False,
        seed=12,
    )


if __name__ == "__main__":
    main()
