//! A `bert` vocabulary (WordPiece, as llama.cpp's converter writes it) as a `tokenizers`
//! tokenizer: word-initial pieces carry a leading `▁` in the file and continuations none, so
//! `▁word` is `word` and `ing` is `##ing` again; control tokens stay as they are. Text is
//! normalized as BERT's tokenizer does (lower-cased, with accents stripped, when
//! `tokenizer.ggml.normalizer.lowercase` is true or absent) and framed `[CLS] … [SEP]` by the
//! file's BOS and EOS (or separator) ids.

use super::{flag, strings, template, token_id, token_types, CONTROL, UNKNOWN};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use serde_json::json;

/// The WordPiece tokenizer of `f` (whose `tokenizer.ggml.model` is `bert`).
pub(crate) fn tokenizer(f: &GgufFile) -> Result<tokenizers::Tokenizer> {
    let raw = strings(f, "tokenizer.ggml.tokens")?;
    let n = raw.len();
    let types = token_types(f, n)?;
    let tokens: Vec<String> = raw
        .iter()
        .zip(&types)
        .map(|(t, &ty)| {
            if ty == CONTROL {
                t.clone()
            } else if let Some(word) = t.strip_prefix('\u{2581}') {
                word.to_string()
            } else {
                format!("##{t}")
            }
        })
        .collect();
    let unk = token_id(f, "tokenizer.ggml.unknown_token_id", n)?
        .or_else(|| types.iter().position(|&t| t == UNKNOWN).map(|i| i as u32))
        .ok_or_else(|| {
            f.key_error(
                "tokenizer.ggml.unknown_token_id",
                "missing, and no token is of the unknown type".into(),
            )
        })?;
    let cls = token_id(f, "tokenizer.ggml.bos_token_id", n)?
        .or(token_id(f, "tokenizer.ggml.cls_token_id", n)?)
        .filter(|_| flag(f, "tokenizer.ggml.add_bos_token").unwrap_or(true));
    let sep = token_id(f, "tokenizer.ggml.eos_token_id", n)?
        .or(token_id(f, "tokenizer.ggml.seperator_token_id", n)?)
        .filter(|_| flag(f, "tokenizer.ggml.add_eos_token").unwrap_or(true));
    let lowercase = flag(f, "tokenizer.ggml.normalizer.lowercase").unwrap_or(true);
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == CONTROL || ty == UNKNOWN)
        .map(|(i, (t, _))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null,
                       "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": template(&tokens, cls, sep),
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": tokens[unk as usize],
                  "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "vocab": vocab},
    });
    serde_json::from_value(json).map_err(|e| ModelError::Tokenizer {
        file: f.path().to_path_buf(),
        message: format!("the embedded WordPiece vocabulary does not make a tokenizer: {e}"),
    })
}
