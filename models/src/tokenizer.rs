//! `tokenizer.json` through the `tokenizers` crate, and streaming detokenization.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: PathBuf,
    /// Whether its decoder turns `<0xXX>` pieces into bytes (SentencePiece byte fallback).
    byte_fallback: bool,
    /// Ids of special added tokens.
    special: std::collections::HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({})", self.file.display())
    }
}

/// Checks what the `tokenizers` crate takes on trust from a file and panics on later: every
/// special token a template names is among its `special_tokens`, with as many ids as tokens.
fn check_post_processor(p: &serde_json::Value, at: &str) -> std::result::Result<(), String> {
    use serde_json::Value;
    match p.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            let specials = p.get("special_tokens").and_then(Value::as_object);
            for (name, t) in specials.into_iter().flatten() {
                let len = |k: &str| t.get(k).and_then(Value::as_array).map(Vec::len);
                if len("ids") != len("tokens") {
                    return Err(format!(
                        "{at}.special_tokens.{name}: 'ids' and 'tokens' differ in length"
                    ));
                }
            }
            for key in ["single", "pair"] {
                let named: Vec<String> = match p.get(key) {
                    Some(Value::Array(pieces)) => pieces
                        .iter()
                        .filter_map(|piece| piece.get("SpecialToken")?.get("id")?.as_str())
                        .map(str::to_string)
                        .collect(),
                    // The string form: `[CLS] $A [SEP]`, special tokens as words (`:n` a type id).
                    Some(Value::String(t)) => t
                        .split_whitespace()
                        .filter(|w| !w.starts_with('$'))
                        .map(|w| w.split(':').next().unwrap_or(w).to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                if let Some(missing) = named
                    .iter()
                    .find(|n| !specials.is_some_and(|m| m.contains_key(n.as_str())))
                {
                    return Err(format!(
                        "{at}.{key}: special token '{missing}' is not in {at}.special_tokens"
                    ));
                }
            }
            Ok(())
        }
        Some("Sequence") => {
            let list = p.get("processors").and_then(Value::as_array);
            for (i, q) in list.into_iter().flatten().enumerate() {
                check_post_processor(q, &format!("{at}.processors[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let err = |message: String| ModelError::Tokenizer {
            file: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        // Parsed as JSON first, then built from the parsed value: the tokenizers crate panics on
        // some malformed text inside nested objects (a syntax error or an invalid escape in the
        // decoder) instead of returning an error; from a parsed value those cannot occur.
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        if let Some(p) = json.get("post_processor") {
            check_post_processor(p, "post_processor").map_err(err)?;
        }
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(json).map_err(|e| err(e.to_string()))?;
        Ok(Tokenizer::from_inner(inner, path))
    }

    /// Wraps an already built tokenizer; `file` is where it came from, for messages.
    pub(crate) fn from_inner(mut inner: tokenizers::Tokenizer, file: &Path) -> Tokenizer {
        // A file's `padding` and `truncation` are the batch settings of whatever saved it, not a
        // property of the vocabulary: kept, they would append pad tokens to every prompt or cut it
        // silently, and absurd values (a length near 2⁶⁴, a `max_length` below the template's
        // special tokens) make the tokenizers crate panic. transformers drops both unless a call
        // asks for them, and so does Switchyard; encoders truncate through `truncating`.
        let _ = inner.with_truncation(None);
        inner.with_padding(None);
        let byte_fallback = serde_json::to_value(inner.get_decoder())
            .map(|d| d.to_string().contains("\"ByteFallback\""))
            .unwrap_or(true);
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        Tokenizer {
            inner,
            file: file.to_path_buf(),
            byte_fallback,
            special,
        }
    }

    /// The tokenizer as `tokenizer.json` would hold it.
    pub(crate) fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.inner.to_string(false).ok()?).ok()
    }

    /// The string of token `id`.
    pub fn token_string(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    fn err(&self, e: impl ToString) -> ModelError {
        ModelError::Tokenizer {
            file: self.file.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's template (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.err(e))?
            .get_ids()
            .to_vec())
    }

    /// Token ids of `text` as llama.cpp's tokenizer takes them: `add_special_tokens` as in
    /// [`Tokenizer::encode`]; `parse_special`: special tokens written in the text become those
    /// tokens (else they are tokenized as plain text).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        if parse_special {
            return self.encode(text, add_special_tokens);
        }
        let mut plain = self.inner.clone();
        plain.set_encode_special_tokens(true);
        Ok(plain
            .encode(text, add_special_tokens)
            .map_err(|e| self.err(e))?
            .get_ids()
            .to_vec())
    }

    /// The same tokenizer cutting every encoding to `max_length` tokens (special tokens
    /// included, as the model sees them): what an encoder's inputs go through.
    pub fn truncating(&self, max_length: usize) -> Result<Tokenizer> {
        use tokenizers::PostProcessor;
        // The crate subtracts the template's special tokens from `max_length` unchecked.
        let added = self
            .inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_length <= added {
            return Err(self.err(format!(
                "cannot truncate to {max_length} tokens: the post_processor adds {added} special \
                 tokens to every input"
            )));
        }
        let mut inner = self.inner.clone();
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| self.err(e))?;
        Ok(Tokenizer {
            inner,
            file: self.file.clone(),
            byte_fallback: self.byte_fallback,
            special: self.special.clone(),
        })
    }

    /// Token ids of `text` with special tokens, and whether truncation (see
    /// [`Tokenizer::truncating`]) cut any off.
    pub fn encode_truncated(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let enc = self.inner.encode(text, true).map_err(|e| self.err(e))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.err(e))
    }

    /// Whether `id` is a special added token (skipped when decoding with
    /// `skip_special_tokens`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming decoder: feed ids one at a time, get text as soon as it is complete. Bytes
    /// of a character split across tokens (byte-fallback pieces, byte-level BPE) are held back
    /// until the character is complete; bytes that can never form one come out as U+FFFD, as
    /// [`Tokenizer::decode`] of the whole sequence gives them. Never fails on any id sequence
    /// the tokenizer can decode.
    pub fn stream(&self, skip_special_tokens: bool) -> TextStream<'_> {
        TextStream {
            tokenizer: self,
            skip_special_tokens,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }
}

/// Incremental detokenization (see [`Tokenizer::stream`]).
///
/// Text is the difference between two decodes that start at the same token: of the ids since
/// `prefix` up to `read` (what was already emitted of them) and of all ids since `prefix`.
/// Starting both at the same token keeps decoders that treat the first token specially
/// (SentencePiece's leading-space strip) from changing the difference. New text ending in
/// U+FFFD is held: the last character may still be incomplete; so is a run of byte-fallback
/// pieces, until a token of another kind ends it (the decoder judges a run as a whole).
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// End of what has been emitted.
    read: usize,
}

impl TextStream<'_> {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, self.skip_special_tokens)
    }

    /// The text `ids[prefix..end]` adds after `ids[prefix..read]`.
    fn new_text(&self, end: usize) -> Result<String> {
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let now = self.decode(&self.ids[self.prefix..end])?;
        Ok(match now.strip_prefix(before.as_str()) {
            Some(rest) => rest.to_string(),
            // A decoder that rewrote earlier text: emit from where the two stop agreeing.
            None => {
                let common = before
                    .char_indices()
                    .zip(now.chars())
                    .find(|((_, a), b)| a != b)
                    .map_or(before.len().min(now.len()), |((i, _), _)| i);
                now[common..].to_string()
            }
        })
    }

    /// Whether `id` is a byte-fallback piece (`<0xXX>`): a run of them decodes together, and
    /// when the run's bytes are not valid UTF-8 every one of them becomes U+FFFD (an ASCII byte
    /// included), so a run is held until a token of another kind ends it.
    fn is_byte_piece(&self, id: u32) -> bool {
        self.tokenizer.byte_fallback
            && self
                .tokenizer
                .token_string(id)
                .is_some_and(|s| s.len() == 6 && s.starts_with("<0x") && s.ends_with('>'))
    }

    /// Adds a token; returns newly complete text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        // A skipped special token leaves the run of byte pieces open, as the decoder sees it.
        let skipped = self.skip_special_tokens && self.tokenizer.is_special(id);
        if self.is_byte_piece(id) || skipped {
            return Ok(None);
        }
        let text = self.new_text(self.ids.len())?;
        if text.is_empty() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(text))
    }

    /// Whatever is still held back, at the end of generation: an incomplete character as
    /// U+FFFD, as the full decode shows it.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let text = self.new_text(self.ids.len())?;
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok((!text.is_empty()).then_some(text))
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// After CI's fuzz/run.sh crashed in tokenizer_files (its input lost with CI's clone), cases
    /// crafted from the fixtures found these: a file's own `padding` (a fixed length near 2⁶⁴ or of 10¹¹ tokens) or
    /// `truncation` (`max_length` below the template's special tokens, `stride` not below the
    /// length left) made encoding panic or abort inside the tokenizers crate. Both settings are
    /// dropped at load, as transformers drops them, so encoding gives the plain file's ids; a
    /// truncation Switchyard asks for that leaves no room for the text is an error.
    #[test]
    fn a_files_padding_and_truncation_are_ignored() {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/bert/tokenizer.json"
        );
        let plain = Tokenizer::from_file(Path::new(fixture)).unwrap();
        let text = "Hello, world! Ünïcödé 🚂";
        let want = plain.encode(text, true).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let pad = |strategy: serde_json::Value, multiple: serde_json::Value| {
            serde_json::json!({"strategy": strategy, "direction": "Right",
                "pad_to_multiple_of": multiple, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"})
        };
        let trunc = |max_length: u64, stride: u64| {
            serde_json::json!({"direction": "Right", "max_length": max_length,
                "strategy": "LongestFirst", "stride": stride})
        };
        for (key, value) in [
            (
                "padding",
                pad(
                    serde_json::json!({"Fixed": 100_000_000_000u64}),
                    serde_json::Value::Null,
                ),
            ),
            (
                "padding",
                pad(
                    serde_json::json!("BatchLongest"),
                    serde_json::json!(u64::MAX),
                ),
            ),
            ("truncation", trunc(1, 0)),
            ("truncation", trunc(4, 3)),
        ] {
            let mut j = json.clone();
            j[key] = value;
            std::fs::write(&path, j.to_string()).unwrap();
            let t = Tokenizer::from_file(&path).unwrap();
            assert_eq!(t.encode(text, true).unwrap(), want, "{key}: {}", j[key]);
        }
        // [CLS] and [SEP] take two of the tokens: two leave none for the text.
        let e = plain.truncating(2).unwrap_err().to_string();
        assert!(e.contains("2 special tokens"), "{e}");
        let (ids, cut) = plain.truncating(3).unwrap().encode_truncated(text).unwrap();
        assert_eq!((ids.len(), cut), (3, true));
        assert_eq!((ids[0], ids[2]), (want[0], *want.last().unwrap()));
    }

    /// Found by fuzz/run.sh (tokenizer_files, from the BERT fixture's tokenizer): a template
    /// naming a special token its `special_tokens` lacks loaded, and encoding panicked inside
    /// the tokenizers crate. Such files are refused at load, naming the field.
    #[test]
    fn a_template_naming_an_unknown_special_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let specials = r#"{"[CLS]":{"id":"[CLS]","ids":[0],"tokens":["[CLS]"]}}"#;
        for (single, specials, field) in [
            (
                r#"[{"SpecialToken":{"id":"[SEP]","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]"#,
                specials,
                "post_processor.single",
            ),
            (r#""[CLS] $A [SEP]""#, specials, "post_processor.single"),
            (
                r#""[CLS] $A""#,
                r#"{"[CLS]":{"id":"[CLS]","ids":[0,1],"tokens":["[CLS]"]}}"#,
                "post_processor.special_tokens.[CLS]",
            ),
        ] {
            std::fs::write(
                &path,
                format!(
                    r###"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":{{"type":"TemplateProcessing","single":{single},"pair":"$A $B","special_tokens":{specials}}},"decoder":null,"model":{{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{{"[CLS]":0,"[UNK]":1,"a":2}}}}}}"###
                ),
            )
            .unwrap();
            let e = Tokenizer::from_file(&path)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("tokenizer.json") && e.contains(field),
                "{single}: {e}"
            );
        }
    }

    /// Found by fuzz/run.sh (tokenizer_files): a syntax error, or an escape that is not a
    /// Unicode code point, inside the `decoder` object made the tokenizers crate panic
    /// ("Helper") instead of returning an error.
    #[test]
    fn malformed_text_inside_the_decoder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        for decoder in [r#"{"type":"ByteLevel" "x":1}"#, r#"{"type":"\ud800"}"#] {
            std::fs::write(
                &path,
                format!(
                    r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":{decoder},"model":{{"type":"BPE","vocab":{{}},"merges":[]}}}}"#
                ),
            )
            .unwrap();
            let e = Tokenizer::from_file(&path)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("tokenizer.json") && e.contains("JSON"),
                "{decoder}: {e}"
            );
        }
    }
}
