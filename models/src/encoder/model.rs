//! An encoder read from disk: a sentence-transformers directory or a plain Hugging Face encoder
//! directory (`config.json`, safetensors, `tokenizer.json`).

use super::config::EncoderConfig;
use super::pooling::SentenceConfig;
use crate::checkpoint::Checkpoint;
use crate::error::{read_json, ModelError, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use std::path::PathBuf;

/// Everything read from an encoder directory. Weights stay memory-mapped until an
/// [`Embedder`](super::Embedder) uploads them.
pub struct EncoderModel {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Hyper-parameters.
    pub config: EncoderConfig,
    /// The weights.
    pub weights: Box<dyn WeightSource>,
    /// The tokenizer, when the directory has `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    /// The sentence-transformers pipeline, when the directory has `modules.json`.
    pub sentence: Option<SentenceConfig>,
    /// `tokenizer_config.json`'s `model_max_length`, when it is a real limit (tokenizers
    /// without one write a huge sentinel).
    pub tokenizer_max_length: Option<usize>,
}

impl std::fmt::Debug for EncoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EncoderModel({}, {})",
            self.dir.display(),
            self.config.arch
        )
    }
}

impl EncoderModel {
    /// Whether `model` (a directory or a hub id in the local cache) holds an encoder Switchyard
    /// builds, judged by its `config.json`'s `model_type`; or is a `bert` GGUF file.
    pub fn is_encoder(model: &str) -> bool {
        let path = std::path::Path::new(model);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return super::gguf::is_bert(path);
        }
        let cache = crate::hub::hub_cache_dir();
        crate::hub::resolve_model_with(model, cache.as_deref(), true)
            .is_ok_and(|dir| dir.is_dir() && EncoderConfig::is_encoder(&dir.join("config.json")))
    }

    /// Loads an encoder directory (or a hub id already in the local cache), or a `bert` GGUF
    /// file as llama.cpp writes it.
    ///
    /// ```no_run
    /// let model = switchyard_models::EncoderModel::load("tests/fixtures/bert").unwrap();
    /// println!("{} dimensions", model.config.hidden_size);
    /// ```
    pub fn load(model: &str) -> Result<EncoderModel> {
        let path = std::path::Path::new(model);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return super::gguf::load(path);
        }
        let dir = crate::hub::resolve_model(model)?;
        let config = EncoderConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(&dir)?;
        let tokenizer_file = dir.join("tokenizer.json");
        let tokenizer = tokenizer_file
            .is_file()
            .then(|| Tokenizer::from_file(&tokenizer_file))
            .transpose()?;
        let sentence = SentenceConfig::from_dir(&dir)?;
        let tokenizer_config = dir.join("tokenizer_config.json");
        let tokenizer_max_length = if tokenizer_config.is_file() {
            read_json(&tokenizer_config)?
                .get("model_max_length")
                .and_then(|v| v.as_u64())
                .filter(|&n| n > 0 && n <= 1 << 20)
                .map(|n| n as usize)
        } else {
            None
        };
        Ok(EncoderModel {
            tokenizer_max_length,
            weights: Box::new(Prefixed {
                inner: checkpoint,
                prefix: config.arch.checkpoint_prefix(),
            }),
            dir,
            config,
            tokenizer,
            sentence,
        })
    }

    /// The longest input the model takes: `max_seq_length` of a sentence-transformers directory,
    /// else the tokenizer's `model_max_length`, else the position table's limit (and never more
    /// than that).
    pub fn max_tokens(&self) -> usize {
        let limit = self.config.max_tokens();
        self.sentence
            .as_ref()
            .and_then(|s| s.max_seq_length)
            .or(self.tokenizer_max_length)
            .map_or(limit, |m| m.min(limit))
    }

    /// The tokenizer, or an error naming the directory.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| ModelError::Resolve {
            model: self.dir.display().to_string(),
            message: "has no tokenizer.json: give token ids instead of text".into(),
        })
    }
}

/// A checkpoint whose names may carry a task model's prefix (`bert.`, `roberta.`): a graph
/// weight is looked up as it is, then with the prefix.
struct Prefixed {
    inner: Checkpoint,
    prefix: &'static str,
}

impl Prefixed {
    fn name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        if self.inner.contains(name) {
            return name.into();
        }
        let prefixed = format!("{}{name}", self.prefix);
        if self.inner.contains(&prefixed) {
            prefixed.into()
        } else {
            name.into()
        }
    }
}

impl WeightSource for Prefixed {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(&self.name(name))
    }

    fn tensor(&self, name: &str) -> Result<switchyard_runtime::HostTensor> {
        self.inner.tensor(&self.name(name))
    }

    fn origin(&self, name: &str) -> String {
        WeightSource::origin(&self.inner, &self.name(name))
    }

    fn stored_dtype(&self, name: &str) -> Option<switchyard_runtime::DType> {
        self.inner.info(&self.name(name)).map(|(d, _)| d)
    }
}
