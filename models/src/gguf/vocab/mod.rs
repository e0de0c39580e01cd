//! The tokenizer a GGUF file embeds (`tokenizer.ggml.*`), as a `tokenizers` tokenizer, and the
//! reverse for export: a `tokenizers` byte-level BPE written as GGUF vocabulary keys.
//!
//! Two vocabulary kinds are read: `gpt2` (byte-level BPE: tokens and merges) and `llama`
//! (SentencePiece: tokens with scores and types, merged by score with byte fallback, the way the
//! Hugging Face conversion of SentencePiece models does it).

use super::{GgufFile, GgufValue};
use crate::error::{ModelError, Result};
use serde_json::{json, Value};
use std::collections::HashMap;

/// GGUF token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<&'a [String]> {
    match f.get(key) {
        Some(GgufValue::StrArray(v)) => Ok(v),
        Some(other) => Err(f.key_error(
            key,
            format!("expected an array of strings, found {}", other.type_name()),
        )),
        None => Err(f.key_error(key, "missing".into())),
    }
}

fn token_types(f: &GgufFile, n: usize) -> Result<Vec<i32>> {
    let key = "tokenizer.ggml.token_type";
    match f.get(key) {
        None => Ok(vec![NORMAL; n]),
        Some(GgufValue::I32Array(v)) if v.len() == n => Ok(v.clone()),
        Some(GgufValue::I32Array(v)) => {
            Err(f.key_error(key, format!("{} entries for {n} tokens", v.len())))
        }
        Some(other) => Err(f.key_error(
            key,
            format!("expected an array of int32, found {}", other.type_name()),
        )),
    }
}

fn token_id(f: &GgufFile, key: &str, n: usize) -> Result<Option<u32>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < n => Ok(Some(id as u32)),
            _ => Err(f.key_error(
                key,
                format!("{v:?} is not a token id below the vocabulary size {n}"),
            )),
        },
    }
}

fn added_tokens(tokens: &[String], types: &[i32]) -> Vec<Value> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &t))| t == CONTROL || t == USER_DEFINED || t == UNKNOWN)
        .map(|(id, (content, &t))| {
            json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": t != USER_DEFINED,
            })
        })
        .collect()
}

/// A post-processor that puts the BOS token first.
fn bos_template(bos: &str, id: u32) -> Value {
    json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}
        ],
        "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}},
    })
}

/// SentencePiece merges from scores: every split of a token into two tokens is a merge, ranked
/// by the score of the merged token (highest first), ties by the pieces' ids.
fn merges_from_scores(tokens: &[String], scores: &[f32], types: &[i32]) -> Vec<(String, String)> {
    let id: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut ranked: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] != NORMAL && types[i] != USER_DEFINED {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&li), Some(&ri)) = (id.get(l), id.get(r)) {
                ranked.push((scores[i], li, ri, l, r));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// The tokenizer of `f`, or `None` when the file has no vocabulary.
pub(crate) fn tokenizer_json(f: &GgufFile) -> Result<Option<Value>> {
    let Some(kind) = f.get("tokenizer.ggml.model") else {
        return Ok(None);
    };
    let kind = kind
        .as_str()
        .ok_or_else(|| f.key_error("tokenizer.ggml.model", "expected a string".into()))?;
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types = token_types(f, n)?;
    let bos = token_id(f, "tokenizer.ggml.bos_token_id", n)?;
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(GgufValue::as_bool);
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    if vocab.len() != n {
        return Err(f.key_error(
            "tokenizer.ggml.tokens",
            "the same token appears twice".into(),
        ));
    }
    let post = |default_add: bool| match (bos, add_bos.unwrap_or(default_add)) {
        (Some(id), true) => bos_template(&tokens[id as usize], id),
        _ => Value::Null,
    };
    let tok = match kind {
        "gpt2" => {
            let merges: Vec<Value> = strings(f, "tokenizer.ggml.merges")?
                .iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| json!([a, b]))
                        .ok_or_else(|| {
                            f.key_error(
                                "tokenizer.ggml.merges",
                                format!("merge '{m}' is not two tokens"),
                            )
                        })
                })
                .collect::<Result<_>>()?;
            json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added_tokens(tokens, &types),
                "normalizer": null,
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
                "post_processor": post(false),
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                    "ignore_merges": false, "vocab": vocab, "merges": merges,
                },
            })
        }
        "llama" => {
            let scores = match f.get("tokenizer.ggml.scores") {
                Some(GgufValue::F32Array(s)) if s.len() == n => s.clone(),
                Some(GgufValue::F32Array(s)) => {
                    return Err(f.key_error(
                        "tokenizer.ggml.scores",
                        format!("{} scores for {n} tokens", s.len()),
                    ))
                }
                Some(other) => {
                    return Err(f.key_error(
                        "tokenizer.ggml.scores",
                        format!("expected an array of float32, found {}", other.type_name()),
                    ))
                }
                None => return Err(f.key_error("tokenizer.ggml.scores", "missing".into())),
            };
            let unk = token_id(f, "tokenizer.ggml.unknown_token_id", n)?
                .or_else(|| types.iter().position(|&t| t == UNKNOWN).map(|i| i as u32));
            let merges: Vec<Value> = merges_from_scores(tokens, &scores, &types)
                .into_iter()
                .map(|(a, b)| json!([a, b]))
                .collect();
            let prefix = f
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(GgufValue::as_bool)
                .unwrap_or(true);
            let mut normalizers = Vec::new();
            if prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let has_bytes = types.contains(&BYTE);
            json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added_tokens(tokens, &types),
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null,
                "post_processor": post(true),
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {
                    "type": "BPE", "dropout": null,
                    "unk_token": unk.map(|i| tokens[i as usize].clone()),
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": true, "byte_fallback": has_bytes, "ignore_merges": false,
                    "vocab": vocab, "merges": merges,
                },
            })
        }
        other => {
            return Err(f.key_error(
                "tokenizer.ggml.model",
                format!("vocabulary kind '{other}' is not supported (gpt2 and llama are)"),
            ))
        }
    };
    Ok(Some(tok))
}

/// GGUF vocabulary keys for a byte-level BPE `tokenizer.json` (as `serde_json`), with `bos`
/// and `eos` ids and whether the tokenizer adds the BOS itself; `None` when it is another kind.
pub(crate) fn gpt2_vocab_keys(
    tokenizer: &Value,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
) -> Option<Vec<(String, GgufValue)>> {
    let model = tokenizer.get("model")?;
    if model.get("type")?.as_str()? != "BPE"
        || tokenizer.get("pre_tokenizer")?.get("type")?.as_str()? != "ByteLevel"
    {
        return None;
    }
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: usize, s: &str, ty: i32| {
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some((s.to_string(), ty));
    };
    for (s, id) in model.get("vocab")?.as_object()? {
        put(id.as_u64()? as usize, s, NORMAL);
    }
    for t in tokenizer.get("added_tokens")?.as_array()? {
        let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
        put(
            t.get("id")?.as_u64()? as usize,
            t.get("content")?.as_str()?,
            if special { CONTROL } else { USER_DEFINED },
        );
    }
    let (tokens, types): (Vec<String>, Vec<i32>) = by_id
        .into_iter()
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .unzip();
    let merges: Vec<String> = model
        .get("merges")?
        .as_array()?
        .iter()
        .map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut keys = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::Str("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            GgufValue::Str("gpt-2".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::StrArray(tokens),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::I32Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::StrArray(merges),
        ),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            GgufValue::Bool(add_bos),
        ),
    ];
    if let Some(b) = bos {
        keys.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(b)));
    }
    if let Some(e) = eos {
        keys.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(e)));
    }
    Some(keys)
}

/// Parses the JSON `tokenizer_json` built into a tokenizer, naming `f` in errors.
pub(crate) fn build(f: &GgufFile, json: &Value) -> Result<tokenizers::Tokenizer> {
    json.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| ModelError::Tokenizer {
            file: f.path().to_path_buf(),
            message: format!("the embedded vocabulary does not make a tokenizer: {e}"),
        })
}
