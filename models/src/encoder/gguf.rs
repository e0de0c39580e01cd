//! A `bert` GGUF file (as llama.cpp's `convert_hf_to_gguf.py` writes it) as an
//! [`EncoderModel`]: hyper-parameters from `bert.*` metadata, the pooling from
//! `bert.pooling_type`, the WordPiece vocabulary, and the weights read in place from the memory
//! map under the Hugging Face names the encoder graph uses.

use super::config::{EncoderActivation, EncoderArch, EncoderConfig};
use super::model::EncoderModel;
use super::pooling::{Pooling, SentenceConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use std::path::Path;
use switchyard_runtime::{DType, HostTensor};

/// Whether `path` is a GGUF file of a `bert` model (only its header is read).
pub(crate) fn is_bert(path: &Path) -> bool {
    GgufFile::open(path)
        .is_ok_and(|f| f.get("general.architecture").and_then(|v| v.as_str()) == Some("bert"))
}

/// The GGUF name of an encoder graph weight (`None` for names the graph does not use).
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "embeddings.word_embeddings.weight" => Some("token_embd.weight"),
        "embeddings.position_embeddings.weight" => Some("position_embd.weight"),
        "embeddings.token_type_embeddings.weight" => Some("token_types.weight"),
        "embeddings.LayerNorm.weight" => Some("token_embd_norm.weight"),
        "embeddings.LayerNorm.bias" => Some("token_embd_norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("encoder.layer.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let tensor = match module {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{tensor}.{param}"))
}

struct GgufEncoderWeights {
    file: GgufFile,
}

impl GgufEncoderWeights {
    fn name(&self, hf: &str) -> Option<String> {
        gguf_name(hf).filter(|g| self.file.info(g).is_some())
    }
}

impl WeightSource for GgufEncoderWeights {
    fn contains(&self, name: &str) -> bool {
        self.name(name).is_some()
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        match self.name(name) {
            Some(g) => self.file.tensor(&g),
            None => Err(ModelError::MissingTensor {
                name: gguf_name(name).unwrap_or_else(|| name.to_string()),
                files: self.file.path().display().to_string(),
            }),
        }
    }

    fn origin(&self, name: &str) -> String {
        match gguf_name(name) {
            Some(g) => format!("{} (tensor '{g}')", self.file.path().display()),
            None => self.file.path().display().to_string(),
        }
    }

    fn stored_dtype(&self, name: &str) -> Option<DType> {
        self.name(name)
            .and_then(|g| self.file.info(&g))
            .map(|i| i.dtype)
    }
}

/// Loads a `bert` GGUF file. The pooling is the file's; vectors are normalized, as llama.cpp's
/// embedding tools do by default (the file does not say).
pub(crate) fn load(path: &Path) -> Result<EncoderModel> {
    let f = GgufFile::open(path)?;
    let arch = f.require_str("general.architecture")?;
    if arch != "bert" {
        return Err(f.key_error(
            "general.architecture",
            format!("'{arch}' is not an encoder Switchyard reads from GGUF (bert)"),
        ));
    }
    let u = |key: &str| f.require_u64(&format!("bert.{key}")).map(|v| v as usize);
    let rows = |tensor: &str| -> Result<usize> {
        f.info(tensor)
            .and_then(|i| i.dims.first().copied())
            .ok_or_else(|| ModelError::MissingTensor {
                name: tensor.to_string(),
                files: path.display().to_string(),
            })
    };
    let hidden_size = u("embedding_length")?;
    let num_heads = u("attention.head_count")?;
    if num_heads == 0 || hidden_size % num_heads != 0 {
        return Err(f.key_error(
            "bert.attention.head_count",
            format!("{num_heads} heads do not divide the embedding length {hidden_size}"),
        ));
    }
    let pooling = match f.get("bert.pooling_type").and_then(|v| v.as_u64()) {
        Some(1) => Some(Pooling::Mean),
        Some(2) => Some(Pooling::Cls),
        Some(3) => Some(Pooling::LastToken),
        None | Some(0) => None,
        Some(other) => {
            return Err(f.key_error(
                "bert.pooling_type",
                format!("pooling type {other} (rank) is not an embedding"),
            ))
        }
    };
    let tokenizer = crate::gguf::vocab_wordpiece(&f)?;
    let config = EncoderConfig {
        arch: EncoderArch::Bert,
        vocab_size: rows("token_embd.weight")?,
        hidden_size,
        num_layers: u("block_count")?,
        num_heads,
        head_dim: hidden_size / num_heads,
        intermediate_size: u("feed_forward_length")?,
        max_position_embeddings: rows("position_embd.weight")?,
        type_vocab_size: rows("token_types.weight").unwrap_or(1),
        layer_norm_eps: f.require_f64("bert.attention.layer_norm_epsilon")? as f32,
        // BERT's `gelu` (llama.cpp's files do not record the activation).
        activation: EncoderActivation::GeluErf,
        pad_token_id: f
            .get("tokenizer.ggml.padding_token_id")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32,
        position_offset: 0,
    };
    Ok(EncoderModel {
        dir: path.to_path_buf(),
        config,
        tokenizer: tokenizer.map(|t| Tokenizer::from_inner(t, path)),
        sentence: pooling.map(|pooling| SentenceConfig {
            pooling,
            normalize: true,
            max_seq_length: None,
        }),
        tokenizer_max_length: None,
        weights: Box::new(GgufEncoderWeights { file: f }),
    })
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn every_graph_weight_has_its_gguf_name() {
        assert_eq!(
            gguf_name("encoder.layer.3.attention.output.LayerNorm.bias").as_deref(),
            Some("blk.3.attn_output_norm.bias")
        );
        assert_eq!(
            gguf_name("encoder.layer.0.output.dense.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(gguf_name("pooler.dense.weight"), None);
    }
}
