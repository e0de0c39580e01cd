//! A `tokenizer.json` as GGUF vocabulary keys, the way llama.cpp reads them back: byte-level BPE
//! as `gpt2` with the pre-tokenizer named, SentencePiece-style BPE (`▁` for spaces, byte
//! fallback) as `llama` with scores that reproduce the merge order. A tokenizer neither kind can
//! express is an error that says why, rather than a file that tokenizes differently.

use super::{pre, BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED};
use crate::gguf::GgufValue;
use serde_json::Value;
use std::collections::HashMap;

/// Special token ids and flags that go with the vocabulary.
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

/// Tokens by id, each with its GGUF type, from the model's vocabulary and the added tokens.
fn tokens_by_id(tok: &Value) -> Result<(Vec<String>, Vec<i32>), String> {
    let model = tok.get("model").ok_or("no model")?;
    let unk = model.get("unk_token").and_then(Value::as_str);
    let mut by_id: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: usize, s: &str, ty: i32| {
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some((s.to_string(), ty));
    };
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or("the model has no vocabulary map")?;
    for (s, id) in vocab {
        let id = id.as_u64().ok_or("a vocabulary id is not a number")? as usize;
        let ty = if Some(s.as_str()) == unk {
            UNKNOWN
        } else if is_byte_token(s) {
            BYTE
        } else {
            NORMAL
        };
        put(id, s, ty);
    }
    for t in tok
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .ok_or("an added token has no id")?;
        let content = t
            .get("content")
            .and_then(Value::as_str)
            .ok_or("an added token has no content")?;
        let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
        let ty = if Some(content) == unk {
            UNKNOWN
        } else if special {
            CONTROL
        } else {
            USER_DEFINED
        };
        put(id as usize, content, ty);
    }
    let mut tokens = Vec::with_capacity(by_id.len());
    let mut types = Vec::with_capacity(by_id.len());
    for (i, t) in by_id.into_iter().enumerate() {
        let (s, ty) = t.ok_or_else(|| format!("no token has id {i}"))?;
        tokens.push(s);
        types.push(ty);
    }
    Ok((tokens, types))
}

fn is_byte_token(s: &str) -> bool {
    s.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && u8::from_str_radix(&s[3..5], 16).is_ok()
}

fn merges_of(model: &Value) -> Result<Vec<(String, String)>, String> {
    model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("the BPE model has no merges")?
        .iter()
        .map(|m| match m {
            Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            Value::Array(p) => Some((p.first()?.as_str()?.into(), p.get(1)?.as_str()?.into())),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| "a merge is not a pair of tokens".to_string())
}

/// Whether the tokenizer writes spaces as `▁` SentencePiece-style (a Metaspace pre-tokenizer,
/// or a normalizer replacing spaces), and whether it prepends one to the text.
fn sentencepiece_spaces(tok: &Value) -> Option<bool> {
    fn walk(v: &Value, found: &mut bool, prepend: &mut bool) {
        match v.get("type").and_then(Value::as_str) {
            Some("Metaspace") => {
                *found = true;
                let scheme = v.get("prepend_scheme").and_then(Value::as_str);
                let add = v.get("add_prefix_space").and_then(Value::as_bool);
                *prepend |= scheme.map_or(add.unwrap_or(true), |s| s != "never");
            }
            Some("Replace") => {
                let pat = v
                    .get("pattern")
                    .and_then(|p| p.get("String"))
                    .and_then(Value::as_str);
                let content = v.get("content").and_then(Value::as_str);
                if pat == Some(" ") && content == Some("\u{2581}") {
                    *found = true;
                }
            }
            Some("Prepend") if v.get("prepend").and_then(Value::as_str) == Some("\u{2581}") => {
                *prepend = true;
            }
            Some("Sequence") => {
                for key in ["normalizers", "pretokenizers"] {
                    for s in v.get(key).and_then(Value::as_array).into_iter().flatten() {
                        walk(s, found, prepend);
                    }
                }
            }
            _ => {}
        }
    }
    let (mut found, mut prepend) = (false, false);
    for key in ["normalizer", "pre_tokenizer"] {
        if let Some(v) = tok.get(key) {
            walk(v, &mut found, &mut prepend);
        }
    }
    found.then_some(prepend)
}

/// The strings a regular expression made only of escaped literals joined by `|` matches, or
/// `None` for any other pattern.
fn literal_alternatives(regex: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    let mut chars = regex.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out
                .last_mut()?
                .push(chars.next().filter(|n| n.is_ascii_punctuation())?),
            '|' => out.push(String::new()),
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => return None,
            c => out.last_mut()?.push(c),
        }
    }
    (!out.iter().any(String::is_empty)).then_some(out)
}

/// Tokens a pre-tokenizer keeps whole by splitting them out as literals: how `transformers`
/// writes SentencePiece user-defined symbols (they stay in the vocabulary, not added tokens).
fn isolated_literals(pre: Option<&Value>) -> Vec<String> {
    let Some(pre) = pre else { return Vec::new() };
    match pre.get("type").and_then(Value::as_str) {
        Some("Split") => pre
            .get("pattern")
            .and_then(|p| p.get("Regex"))
            .and_then(Value::as_str)
            .and_then(literal_alternatives)
            .unwrap_or_default(),
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|p| isolated_literals(Some(p)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The GGUF vocabulary keys of `tok` (a `tokenizer.json` value).
pub(crate) fn vocab_keys(
    tok: &Value,
    ids: &SpecialIds,
) -> Result<Vec<(String, GgufValue)>, String> {
    let model = tok.get("model").ok_or("no model")?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("?");
    if kind != "BPE" {
        return Err(format!(
            "a {kind} tokenizer has no GGUF vocabulary kind here (BPE tokenizers do)"
        ));
    }
    let (tokens, mut types) = tokens_by_id(tok)?;
    let merges = merges_of(model)?;
    let byte_level = tok.get("pre_tokenizer").and_then(pre::detect);
    let mut keys: Vec<(String, GgufValue)> = Vec::new();
    let mut key = |k: &str, v: GgufValue| keys.push((k.to_string(), v));
    if let Some(name) = byte_level {
        key("tokenizer.ggml.model", GgufValue::Str("gpt2".into()));
        key("tokenizer.ggml.pre", GgufValue::Str(name.into()));
        let merges: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
        key("tokenizer.ggml.merges", GgufValue::StrArray(merges));
    } else if let Some(prefix) = sentencepiece_spaces(tok) {
        // llama.cpp merges the adjacent pair whose merged token scores highest: score each
        // token by how early a merge makes it.
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (i, (a, b)) in merges.iter().enumerate() {
            rank.entry(format!("{a}{b}")).or_insert(i);
        }
        let scores: Vec<f32> = tokens
            .iter()
            .map(|t| rank.get(t).map_or(0.0, |&r| -(r as f32) - 1.0))
            .collect();
        for lit in isolated_literals(tok.get("pre_tokenizer")) {
            if let Some(i) = tokens.iter().position(|t| *t == lit) {
                if types[i] == NORMAL {
                    types[i] = USER_DEFINED;
                }
            }
        }
        key("tokenizer.ggml.model", GgufValue::Str("llama".into()));
        key("tokenizer.ggml.scores", GgufValue::F32Array(scores));
        key("tokenizer.ggml.add_space_prefix", GgufValue::Bool(prefix));
    } else {
        let what = tok
            .get("pre_tokenizer")
            .map(|p| p.to_string())
            .unwrap_or_else(|| "none".into());
        return Err(format!(
            "its pre-tokenizer ({what}) is neither a byte-level one llama.cpp implements \
             (known: {}) nor SentencePiece-style",
            pre::supported_names()
        ));
    }
    let unk = types.iter().position(|&t| t == UNKNOWN);
    key("tokenizer.ggml.tokens", GgufValue::StrArray(tokens));
    key("tokenizer.ggml.token_type", GgufValue::I32Array(types));
    key("tokenizer.ggml.add_bos_token", GgufValue::Bool(ids.add_bos));
    key("tokenizer.ggml.add_eos_token", GgufValue::Bool(ids.add_eos));
    if let Some(b) = ids.bos {
        key("tokenizer.ggml.bos_token_id", GgufValue::U32(b));
    }
    if let Some(e) = ids.eos {
        key("tokenizer.ggml.eos_token_id", GgufValue::U32(e));
    }
    if let Some(u) = unk {
        key("tokenizer.ggml.unknown_token_id", GgufValue::U32(u as u32));
    }
    Ok(keys)
}

/// Pads the token list (and types, and scores) of `keys` to `n` with unused tokens: llama.cpp
/// takes the vocabulary size from the token list, and models often have more embedding rows
/// than tokens.
pub(crate) fn pad_to(keys: &mut [(String, GgufValue)], n: usize) {
    for (k, v) in keys.iter_mut() {
        match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::StrArray(t)) => {
                let have = t.len();
                t.extend((have..n).map(|i| format!("<unused{i}>")));
            }
            ("tokenizer.ggml.token_type", GgufValue::I32Array(t)) if t.len() < n => {
                t.resize(n, super::UNUSED);
            }
            ("tokenizer.ggml.scores", GgufValue::F32Array(t)) if t.len() < n => {
                t.resize(n, 0.0);
            }
            _ => {}
        }
    }
}

/// Drops the tokens of `keys` from id `n` on, when every one of them is an added (control or
/// user-defined) token; an error naming the first that is not.
pub(crate) fn truncate_to(keys: &mut [(String, GgufValue)], n: usize) -> Result<(), String> {
    let types = keys.iter().find_map(|(k, v)| match (k.as_str(), v) {
        ("tokenizer.ggml.token_type", GgufValue::I32Array(t)) => Some(t.clone()),
        _ => None,
    });
    if let Some(i) = types
        .iter()
        .flatten()
        .enumerate()
        .skip(n)
        .find(|(_, &t)| t != CONTROL && t != USER_DEFINED)
        .map(|(i, _)| i)
    {
        return Err(format!(
            "token {i} is a vocabulary token, but the model has only {n} embedding rows"
        ));
    }
    for (k, v) in keys.iter_mut() {
        match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::StrArray(t)) => t.truncate(n),
            ("tokenizer.ggml.token_type", GgufValue::I32Array(t)) => t.truncate(n),
            ("tokenizer.ggml.scores", GgufValue::F32Array(t)) => t.truncate(n),
            _ => {}
        }
    }
    Ok(())
}
