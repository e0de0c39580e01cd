//! The models crate's error type: every variant names the file, key, tensor or option at fault.

use std::path::PathBuf;

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What can go wrong loading a model or generating with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON (or not the expected shape).
    #[error("{file}: invalid JSON: {message}")]
    Json {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A configuration key is missing or has an unusable value.
    #[error("{file}: key '{key}': {message}")]
    Config {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        message: String,
    },
    /// The config names an architecture this build does not support.
    #[error("{file}: unsupported model_type '{model_type}': supported are {}", supported.join(", "))]
    UnsupportedArchitecture {
        /// The config file.
        file: PathBuf,
        /// The `model_type` found.
        model_type: String,
        /// The supported ones.
        supported: Vec<&'static str>,
    },
    /// A weights file is unreadable or corrupt.
    #[error("{file}: {message}")]
    Checkpoint {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor '{name}' is missing from the checkpoint ({files})")]
    MissingTensor {
        /// The tensor's name.
        name: String,
        /// The files searched.
        files: String,
    },
    /// A tensor's shape disagrees with the config.
    #[error("tensor '{name}' in {file} has shape {got:?}, but the config implies {expected:?}")]
    TensorShape {
        /// The tensor.
        name: String,
        /// Its file.
        file: PathBuf,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor is stored in a dtype this loader does not read.
    #[error("tensor '{name}' in {file} has unsupported dtype {dtype}")]
    TensorDType {
        /// The tensor.
        name: String,
        /// Its file.
        file: PathBuf,
        /// The dtype found.
        dtype: String,
    },
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer ({file}): {message}")]
    Tokenizer {
        /// The tokenizer file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The chat template could not be rendered.
    #[error("chat template ({file}): {message}")]
    ChatTemplate {
        /// The file holding the template.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A model id could not be resolved to files.
    #[error("model '{model}': {message}")]
    Resolve {
        /// The model argument.
        model: String,
        /// Why it could not be found.
        message: String,
    },
    /// The prompt does not fit the context.
    #[error("the prompt has {tokens} tokens but the context holds {max_context}")]
    PromptTooLong {
        /// Prompt length.
        tokens: usize,
        /// Context length.
        max_context: usize,
    },
    /// An encoder input is longer than the model takes and truncation is off.
    #[error("input {index} has {tokens} tokens but the model takes at most {max_tokens} (truncation is off)")]
    InputTooLong {
        /// Which input (0-based).
        index: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The model's limit.
        max_tokens: usize,
    },
    /// A generation or load option has a nonsensical value.
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The option (as the command line spells it).
        option: &'static str,
        /// What is allowed.
        message: String,
    },
    /// Every slot of a batch holds a sequence.
    #[error("all {slots} slots of the batch hold a sequence: finish or cancel one first")]
    NoFreeSlot {
        /// Slots in the batch.
        slots: usize,
    },
    /// The runtime or the device failed.
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
}

impl ModelError {
    pub(crate) fn config(file: &std::path::Path, key: &str, message: impl Into<String>) -> Self {
        ModelError::Config {
            file: file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a JSON file, naming it in the error.
pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Json {
        file: path.to_path_buf(),
        message: e.to_string(),
    })
}
