//! `tokenizer.json` through the `tokenizers` crate, and streaming detokenization.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({})", self.file.display())
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
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(json).map_err(|e| err(e.to_string()))?;
        Ok(Tokenizer {
            inner,
            file: path.to_path_buf(),
        })
    }

    /// Wraps an already built tokenizer; `file` is where it came from, for messages.
    pub(crate) fn from_inner(inner: tokenizers::Tokenizer, file: &Path) -> Tokenizer {
        Tokenizer {
            inner,
            file: file.to_path_buf(),
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

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.err(e))
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming decoder: feed ids one at a time, get text as soon as it is complete (a
    /// multi-byte character split across tokens is held back until its last byte arrives).
    pub fn stream(&self, skip_special_tokens: bool) -> TextStream<'_> {
        TextStream {
            inner: self.inner.decode_stream(skip_special_tokens),
            file: &self.file,
        }
    }
}

type Inner<'a> = tokenizers::DecodeStream<
    'a,
    tokenizers::ModelWrapper,
    tokenizers::NormalizerWrapper,
    tokenizers::PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// Incremental detokenization (see [`Tokenizer::stream`]), backed by the `tokenizers` crate's
/// stream decoder.
pub struct TextStream<'a> {
    inner: Inner<'a>,
    file: &'a Path,
}

impl TextStream<'_> {
    /// Adds a token; returns newly complete text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.inner.step(id).map_err(|e| ModelError::Tokenizer {
            file: self.file.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

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
