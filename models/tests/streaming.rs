//! Streaming detokenization never fails and always adds up to the full decode: on every kind of
//! tokenizer this crate loads (a byte-level BPE `tokenizer.json`, and GGUF vocabularies of both
//! kinds, one with byte-fallback pieces), for token sequences that split characters across
//! tokens, that can never form a character, and for random sequences. Bytes of an incomplete
//! character are held back; what never completes comes out as U+FFFD, as the full decode has it.

use std::path::{Path, PathBuf};
use switchyard_models::gguf::{GgufValue, GgufWriter};
use switchyard_models::{Model, Tokenizer};

fn fixture_tokenizer() -> Tokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama");
    Model::load_tokenizer(dir.to_str().unwrap()).unwrap()
}

/// A SentencePiece-kind GGUF vocabulary: control tokens, the 256 byte tokens, and a few pieces.
fn spm_gguf(dir: &Path) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in ["\u{2581}", "a", "b", "\u{2581}a", "ab", "\u{2581}ab", "世"] {
        tokens.push(p.into());
        types.push(1);
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let mut w = GgufWriter::new();
    w.meta("general.architecture", GgufValue::Str("llama".into()))
        .meta("tokenizer.ggml.model", GgufValue::Str("llama".into()))
        .meta("tokenizer.ggml.tokens", GgufValue::StrArray(tokens))
        .meta("tokenizer.ggml.scores", GgufValue::F32Array(scores))
        .meta("tokenizer.ggml.token_type", GgufValue::I32Array(types))
        .meta("tokenizer.ggml.bos_token_id", GgufValue::U32(1))
        .meta("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
    let path = dir.join("spm.gguf");
    w.write(&path).unwrap();
    Model::load_tokenizer(path.to_str().unwrap()).unwrap()
}

/// A byte-level BPE GGUF vocabulary (`gpt2`): the 256 byte characters, a merge or two.
fn bpe_gguf(dir: &Path) -> Tokenizer {
    // GPT-2's byte-to-character map: printable bytes as themselves, the rest from U+0100 on.
    let mut chars = Vec::new();
    let mut next = 256u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        chars.push(if printable {
            char::from_u32(b).unwrap()
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap()
        });
    }
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    tokens.push("<|end|>".into());
    tokens.push("\u{120}a".into());
    let mut types = vec![1; 256];
    types.extend([3, 1]);
    let mut w = GgufWriter::new();
    w.meta("general.architecture", GgufValue::Str("llama".into()))
        .meta("tokenizer.ggml.model", GgufValue::Str("gpt2".into()))
        .meta("tokenizer.ggml.pre", GgufValue::Str("gpt-2".into()))
        .meta("tokenizer.ggml.tokens", GgufValue::StrArray(tokens))
        .meta("tokenizer.ggml.token_type", GgufValue::I32Array(types))
        .meta(
            "tokenizer.ggml.merges",
            GgufValue::StrArray(vec!["\u{120} a".into()]),
        );
    let path = dir.join("bpe.gguf");
    w.write(&path).unwrap();
    Model::load_tokenizer(path.to_str().unwrap()).unwrap()
}

/// Streams `ids` one by one; the pieces must add up to the full decode.
fn stream_equals_decode(tok: &Tokenizer, ids: &[u32], what: &str) {
    let mut s = tok.stream(true);
    let mut text = String::new();
    for &id in ids {
        if let Some(piece) = s
            .push(id)
            .unwrap_or_else(|e| panic!("{what}: {ids:?}: {e}"))
        {
            text.push_str(&piece);
        }
    }
    text.push_str(&s.finish().unwrap().unwrap_or_default());
    assert_eq!(text, tok.decode(ids, true).unwrap(), "{what}: {ids:?}");
}

fn byte_ids(tok: &Tokenizer, bytes: &[u8]) -> Vec<u32> {
    bytes
        .iter()
        .map(|b| tok.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect()
}

#[test]
fn byte_fallback_pieces_that_split_characters() {
    let dir = tempfile::tempdir().unwrap();
    let tok = spm_gguf(dir.path());
    let a = tok.token_id("a").unwrap();
    let world = "世".as_bytes(); // E4 B8 96, also a whole token
    let llama = "🦙".as_bytes(); // four bytes
    let mut cases: Vec<(&str, Vec<u32>)> = vec![
        (
            "a character in three byte pieces",
            [vec![a], byte_ids(&tok, world), vec![a]].concat(),
        ),
        (
            "an emoji in four",
            [byte_ids(&tok, llama), vec![a]].concat(),
        ),
        (
            "a lead byte then a letter",
            [byte_ids(&tok, &world[..1]), vec![a]].concat(),
        ),
        (
            "a stray continuation byte",
            [vec![a], byte_ids(&tok, &[0x80]), vec![a]].concat(),
        ),
        (
            "an incomplete character at the end",
            [vec![a], byte_ids(&tok, &world[..2])].concat(),
        ),
        (
            "only bytes that never complete",
            byte_ids(&tok, &[0xF0, 0x9F, 0x41]),
        ),
    ];
    cases.push((
        "the whole-character token",
        vec![tok.token_id("世").unwrap(), a],
    ));
    for (what, ids) in &cases {
        stream_equals_decode(&tok, ids, what);
    }
    // A run of byte pieces is held (the decoder judges the run as a whole), then released
    // whole with the token that ends it.
    let mut s = tok.stream(true);
    for &id in &byte_ids(&tok, llama) {
        assert_eq!(s.push(id).unwrap(), None);
    }
    assert_eq!(s.push(a).unwrap().as_deref(), Some("🦙a"));
    // What never completes ends as U+FFFD, like the full decode.
    let mut s = tok.stream(true);
    assert_eq!(s.push(byte_ids(&tok, &[0xE4])[0]).unwrap(), None);
    assert_eq!(s.finish().unwrap().as_deref(), Some("\u{FFFD}"));
}

#[test]
fn byte_level_bpe_characters_split_across_tokens() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, tok) in [
        ("tokenizer.json", fixture_tokenizer()),
        ("gpt2 GGUF", bpe_gguf(dir.path())),
    ] {
        // Byte-level vocabularies hold every byte as a token: the bytes of multi-byte
        // characters, one token each.
        let bytes_of = |s: &[u8]| -> Vec<u32> {
            s.iter()
                .map(|&b| {
                    let ids = tok
                        .encode_with(&String::from_utf8_lossy(&[b]), false, false)
                        .unwrap();
                    // A lone non-ASCII byte is not valid UTF-8 text: find its token by decoding.
                    if b < 128 {
                        ids[0]
                    } else {
                        (0..tok.vocab_size() as u32)
                            .find(|&i| {
                                tok.decode(&[i], false).is_ok() && byte_piece(&tok, i) == Some(b)
                            })
                            .unwrap()
                    }
                })
                .collect()
        };
        for text in ["世界", "🦙 ok", "é"] {
            stream_equals_decode(&tok, &bytes_of(text.as_bytes()), &format!("{kind}: {text}"));
        }
        stream_equals_decode(
            &tok,
            &bytes_of(&[0xE4, b'a']),
            &format!("{kind}: lead byte"),
        );
        stream_equals_decode(
            &tok,
            &bytes_of(&[b'a', 0xE4, 0xB8]),
            &format!("{kind}: cut"),
        );
    }
}

/// The single byte a byte-level token stands for, if it is one.
fn byte_piece(tok: &Tokenizer, id: u32) -> Option<u8> {
    let s = tok.token_string(id)?;
    let mut chars = s.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    let cp = c as u32;
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if printable(cp) {
        return Some(cp as u8);
    }
    // Non-printable bytes map in order to U+0100 onwards.
    let mut next = 256u32;
    for b in 0..=255u32 {
        if !printable(b) {
            if next == cp {
                return Some(b as u8);
            }
            next += 1;
        }
    }
    None
}

#[test]
fn random_sequences_stream_to_the_full_decode() {
    let dir = tempfile::tempdir().unwrap();
    let toks = [
        ("tokenizer.json", fixture_tokenizer()),
        ("llama GGUF", spm_gguf(dir.path())),
        ("gpt2 GGUF", bpe_gguf(dir.path())),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for (kind, tok) in &toks {
        let n = tok.vocab_size() as u64;
        for round in 0..200 {
            let len = 1 + (round % 17);
            let ids: Vec<u32> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % n) as u32
                })
                .collect();
            stream_equals_decode(tok, &ids, kind);
        }
    }
}
