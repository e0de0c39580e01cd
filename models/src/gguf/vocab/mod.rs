//! The tokenizer a GGUF file embeds (`tokenizer.ggml.*`), as a `tokenizers` tokenizer, and the
//! reverse for export ([`export`]).
//!
//! Three vocabulary kinds are read, as llama.cpp reads them:
//! - `gpt2`: byte-level BPE (tokens and merges), text first split by the regular expressions of
//!   the pre-tokenizer `tokenizer.ggml.pre` names ([`pre`]);
//! - `llama`: SentencePiece BPE (tokens with scores and types): spaces as `▁`, a leading space
//!   unless `tokenizer.ggml.add_space_prefix` is false, pieces merged highest score first, bytes
//!   of unknown characters as `<0xXX>` tokens;
//! - `bert`: WordPiece ([`wordpiece`]), for encoders.
//!
//! Other kinds (`t5`, `rwkv`, ...) are refused by name before any weight is read.

pub(crate) mod export;
pub(crate) mod pre;
pub(crate) mod wordpiece;

use super::{GgufFile, GgufValue};
use crate::error::{ModelError, Result};
use serde_json::{json, Value};
use std::collections::HashMap;

/// GGUF token types.
pub(crate) const NORMAL: i32 = 1;
pub(crate) const UNKNOWN: i32 = 2;
pub(crate) const CONTROL: i32 = 3;
pub(crate) const USER_DEFINED: i32 = 4;
pub(crate) const UNUSED: i32 = 5;
pub(crate) const BYTE: i32 = 6;

/// Vocabulary kinds read.
pub const VOCABULARY_KINDS: [&str; 3] = ["gpt2", "llama", "bert"];

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

fn flag(f: &GgufFile, key: &str) -> Option<bool> {
    f.get(key).and_then(GgufValue::as_bool)
}

/// A post-processor that puts `bos` first and/or `eos` last.
fn template(tokens: &[String], bos: Option<u32>, eos: Option<u32>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let special = |id: u32| json!({"SpecialToken": {"id": tokens[id as usize], "type_id": 0}});
    let mut single = Vec::new();
    let mut specials = serde_json::Map::new();
    for id in [bos, eos].into_iter().flatten() {
        let t = &tokens[id as usize];
        specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    single.extend(bos.map(special));
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    single.extend(eos.map(special));
    let mut pair = single.clone();
    pair.extend(bos.map(special));
    pair.push(json!({"Sequence": {"id": "B", "type_id": 0}}));
    pair.extend(eos.map(special));
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
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

/// The vocabulary kind of `f`, or `None` when the file has none; an error for a kind this
/// crate cannot tokenize.
pub(crate) fn kind(f: &GgufFile) -> Result<Option<&str>> {
    let Some(kind) = f.get("tokenizer.ggml.model") else {
        return Ok(None);
    };
    let kind = kind
        .as_str()
        .ok_or_else(|| f.key_error("tokenizer.ggml.model", "expected a string".into()))?;
    match kind {
        "none" | "no_vocab" => Ok(None),
        k if VOCABULARY_KINDS.contains(&k) => Ok(Some(k)),
        other => Err(f.key_error(
            "tokenizer.ggml.model",
            format!(
                "vocabulary kind '{other}' is not supported (supported: {})",
                VOCABULARY_KINDS.join(", ")
            ),
        )),
    }
}

/// The BPE model of a vocabulary, built directly (a vocabulary of 50k tokens and merges as JSON
/// values would cost tens of megabytes on the way).
struct BpeModel<'a> {
    tokens: &'a [String],
    types: Vec<i32>,
    merges: Vec<(String, String)>,
    unk: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
}

/// The tokenizer of `f`, or `None` when the file has no vocabulary.
pub(crate) fn tokenizer(f: &GgufFile) -> Result<Option<tokenizers::Tokenizer>> {
    if kind(f)? == Some("bert") {
        return wordpiece::tokenizer(f).map(Some);
    }
    let Some((json, model)) = tokenizer_parts(f)? else {
        return Ok(None);
    };
    let bad = |e: String| ModelError::Tokenizer {
        file: f.path().to_path_buf(),
        message: format!("the embedded vocabulary does not make a tokenizer: {e}"),
    };
    let mut tok: tokenizers::Tokenizer =
        serde_json::from_value(json).map_err(|e| bad(e.to_string()))?;
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (i, t) in model.tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let mut b = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(vocab, model.merges)
        .fuse_unk(model.fuse_unk)
        .byte_fallback(model.byte_fallback)
        .ignore_merges(model.ignore_merges);
    if let Some(u) = model.unk {
        b = b.unk_token(u);
    }
    tok.with_model(b.build().map_err(|e| bad(e.to_string()))?);
    // Added tokens go in once the model holds the vocabulary, so each keeps its own id.
    let added: Vec<tokenizers::AddedToken> = model
        .tokens
        .iter()
        .zip(&model.types)
        .filter(|(_, &t)| t == CONTROL || t == USER_DEFINED || t == UNKNOWN)
        .map(|(content, &t)| {
            tokenizers::AddedToken::from(content.clone(), t != USER_DEFINED).normalized(false)
        })
        .collect();
    let (special, plain): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.special);
    tok.add_special_tokens(special)
        .map_err(|e| bad(e.to_string()))?;
    tok.add_tokens(plain).map_err(|e| bad(e.to_string()))?;
    Ok(Some(tok))
}

/// The tokenizer of `f` as `tokenizer.json` would hold it but with an empty model, and the model
/// apart; `None` when the file has no vocabulary.
fn tokenizer_parts(f: &GgufFile) -> Result<Option<(Value, BpeModel<'_>)>> {
    let Some(kind) = kind(f)? else {
        return Ok(None);
    };
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types = token_types(f, n)?;
    let distinct: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    if distinct.len() != n {
        return Err(f.key_error(
            "tokenizer.ggml.tokens",
            "the same token appears twice".into(),
        ));
    }
    drop(distinct);
    let bos = token_id(f, "tokenizer.ggml.bos_token_id", n)?;
    let eos = token_id(f, "tokenizer.ggml.eos_token_id", n)?;
    // llama.cpp's defaults: SentencePiece vocabularies add the BOS, byte-level BPE ones do not
    // (unless the pre-tokenizer's model family does).
    let added = |default_bos: bool| {
        let add_bos = flag(f, "tokenizer.ggml.add_bos_token").unwrap_or(default_bos);
        let add_eos = flag(f, "tokenizer.ggml.add_eos_token").unwrap_or(false);
        template(tokens, bos.filter(|_| add_bos), eos.filter(|_| add_eos))
    };
    let tok = match kind {
        "gpt2" => {
            let name = match f.get("tokenizer.ggml.pre") {
                None => "default",
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| f.key_error("tokenizer.ggml.pre", "expected a string".into()))?,
            };
            let p = pre::lookup(name).ok_or_else(|| {
                f.key_error(
                    "tokenizer.ggml.pre",
                    format!(
                        "pre-tokenizer '{name}' is not supported (supported: {})",
                        pre::supported_names()
                    ),
                )
            })?;
            let merges: Vec<(String, String)> = strings(f, "tokenizer.ggml.merges")?
                .iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| {
                            f.key_error(
                                "tokenizer.ggml.merges",
                                format!("merge '{m}' is not two tokens"),
                            )
                        })
                })
                .collect::<Result<_>>()?;
            let default_bos = p.names[0] == "llama-bpe";
            let model = BpeModel {
                tokens,
                types: types.clone(),
                merges,
                unk: None,
                fuse_unk: false,
                byte_fallback: false,
                ignore_merges: p.ignore_merges,
            };
            (
                json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": [],
                    "normalizer": null,
                    "pre_tokenizer": pre::to_json(p),
                    "post_processor": added(default_bos),
                    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                    "model": {"type": "BPE", "vocab": {}, "merges": []},
                }),
                model,
            )
        }
        _ => {
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
            let merges = merges_from_scores(tokens, &scores, &types);
            let prefix = flag(f, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
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
            let model = BpeModel {
                tokens,
                types: types.clone(),
                merges,
                unk: unk.map(|i| tokens[i as usize].clone()),
                fuse_unk: true,
                byte_fallback: types.contains(&BYTE),
                ignore_merges: false,
            };
            (
                json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": [],
                    "normalizer": {"type": "Sequence", "normalizers": normalizers},
                    "pre_tokenizer": null,
                    "post_processor": added(true),
                    "decoder": {"type": "Sequence", "decoders": decoders},
                    "model": {"type": "BPE", "vocab": {}, "merges": []},
                }),
                model,
            )
        }
    };
    Ok(Some(tok))
}
