//! An encoder's `config.json`: BERT, RoBERTa and XLM-RoBERTa.

use crate::config::Keys;
use crate::error::{read_json, ModelError, Result};
use std::path::Path;

/// The encoder architectures Switchyard builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderArch {
    /// BERT: positions `0..t`, token types, post-layer-norm.
    Bert,
    /// RoBERTa: BERT's layers with positions counted from `pad_token_id + 1`.
    Roberta,
    /// XLM-RoBERTa: RoBERTa's graph with a multilingual vocabulary.
    XlmRoberta,
}

impl EncoderArch {
    /// Every supported `model_type`.
    pub const MODEL_TYPES: &'static [&'static str] = &["bert", "roberta", "xlm-roberta"];

    /// The architecture of a `config.json` `model_type`.
    pub fn from_model_type(s: &str) -> Option<EncoderArch> {
        match s {
            "bert" => Some(EncoderArch::Bert),
            "roberta" => Some(EncoderArch::Roberta),
            "xlm-roberta" => Some(EncoderArch::XlmRoberta),
            _ => None,
        }
    }

    /// The `model_type` string.
    pub fn name(self) -> &'static str {
        match self {
            EncoderArch::Bert => "bert",
            EncoderArch::Roberta => "roberta",
            EncoderArch::XlmRoberta => "xlm-roberta",
        }
    }

    /// The prefix checkpoints saved from a task model put before every weight name
    /// (`bert.embeddings...` from `BertForMaskedLM`).
    pub(crate) fn checkpoint_prefix(self) -> &'static str {
        match self {
            EncoderArch::Bert => "bert.",
            EncoderArch::Roberta | EncoderArch::XlmRoberta => "roberta.",
        }
    }
}

impl std::fmt::Display for EncoderArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The feed-forward activation of an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderActivation {
    /// `gelu` (exact, with erf).
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast` (the tanh approximation).
    GeluTanh,
    /// `relu`.
    Relu,
}

/// Hyper-parameters of an encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// The architecture.
    pub arch: EncoderArch,
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Hidden size (the embedding width).
    pub hidden_size: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Rows of the position table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (inputs here are single texts: type 0).
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f32,
    /// Feed-forward activation.
    pub activation: EncoderActivation,
    /// The padding token.
    pub pad_token_id: u32,
    /// Position of a sequence's first token: 0 for BERT, `pad_token_id + 1` for RoBERTa.
    pub position_offset: usize,
}

impl EncoderConfig {
    /// Whether the `config.json` at `path` describes an encoder Switchyard builds.
    pub fn is_encoder(path: &Path) -> bool {
        read_json(path)
            .ok()
            .and_then(|j| j.get("model_type")?.as_str().map(str::to_owned))
            .is_some_and(|t| EncoderArch::from_model_type(&t).is_some())
    }

    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<EncoderConfig> {
        let json = read_json(path)?;
        let map = json.as_object().ok_or_else(|| ModelError::Json {
            file: path.to_path_buf(),
            message: "expected a JSON object".into(),
        })?;
        let k = Keys { file: path, map };
        let model_type = k.opt_str("model_type")?.unwrap_or("");
        let arch = EncoderArch::from_model_type(model_type).ok_or_else(|| {
            ModelError::UnsupportedArchitecture {
                file: path.to_path_buf(),
                model_type: model_type.to_string(),
                supported: EncoderArch::MODEL_TYPES.to_vec(),
            }
        })?;
        let hidden_size = k.usize_any(&["hidden_size"])?;
        let num_heads = k.usize_any(&["num_attention_heads"])?;
        if num_heads == 0 || hidden_size % num_heads != 0 {
            return Err(ModelError::config(
                path,
                "num_attention_heads",
                format!("{num_heads} heads do not divide hidden_size {hidden_size}"),
            ));
        }
        let activation = match k.opt_str("hidden_act")?.unwrap_or("gelu") {
            "gelu" => EncoderActivation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => EncoderActivation::GeluTanh,
            "relu" => EncoderActivation::Relu,
            other => {
                return Err(ModelError::config(
                    path,
                    "hidden_act",
                    format!("unsupported activation '{other}': expected gelu, gelu_new, gelu_pytorch_tanh, gelu_fast or relu"),
                ))
            }
        };
        if let Some(p) = k.opt_str("position_embedding_type")? {
            if p != "absolute" {
                return Err(ModelError::config(
                    path,
                    "position_embedding_type",
                    format!("'{p}' is not supported: only absolute positions"),
                ));
            }
        }
        let pad_token_id = k.opt_usize("pad_token_id")?.unwrap_or(0) as u32;
        let position_offset = match arch {
            EncoderArch::Bert => 0,
            EncoderArch::Roberta | EncoderArch::XlmRoberta => pad_token_id as usize + 1,
        };
        let max_position_embeddings = k.usize_any(&["max_position_embeddings"])?;
        if max_position_embeddings <= position_offset {
            return Err(ModelError::config(
                path,
                "max_position_embeddings",
                format!("{max_position_embeddings} leaves no position after the offset {position_offset}"),
            ));
        }
        Ok(EncoderConfig {
            arch,
            vocab_size: k.usize_any(&["vocab_size"])?,
            hidden_size,
            num_layers: k.usize_any(&["num_hidden_layers"])?,
            num_heads,
            head_dim: hidden_size / num_heads,
            intermediate_size: k.usize_any(&["intermediate_size"])?,
            max_position_embeddings,
            type_vocab_size: k.opt_usize("type_vocab_size")?.unwrap_or(2).max(1),
            layer_norm_eps: k.opt_f32("layer_norm_eps")?.unwrap_or(1e-12),
            activation,
            pad_token_id,
            position_offset,
        })
    }

    /// The longest input the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset
    }
}
