//! A GGUF file as a [`Model`]: metadata to [`ModelConfig`], tensors (quantized or not) as
//! weights borrowed from the memory map, and the embedded vocabulary as the tokenizer.

use super::arch::{self, gguf_tensor_name, Stored};
use super::{vocab, GgufFile};
use crate::chat::TokenizerConfig;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use std::path::Path;
use std::sync::Arc;
use switchyard_runtime::{DType, HostTensor};

/// The weights of a GGUF file under the Hugging Face names the graphs use, as Hugging Face
/// stores them: llama's q/k rows back in rotary-half order (rows move as whole blocks, so
/// quantized weights move as bytes), Gemma's norm weights without the `+1` the file holds.
pub struct GgufWeights {
    file: Arc<GgufFile>,
    config: ModelConfig,
}

/// Rows of a `[heads · d, cols]` projection from GGUF's rotary order to Hugging Face's: row
/// `2j` of each head becomes row `j`, row `2j + 1` becomes row `j + d/2`.
fn unpermute_rotary_rows(t: HostTensor, heads: usize) -> Result<HostTensor> {
    let rows = t.dims()[0];
    let d = rows / heads;
    let row_bytes = t.as_bytes().len() / rows;
    let src = t.as_bytes();
    let mut out = vec![0u8; src.len()];
    for h in 0..heads {
        for j in 0..d / 2 {
            for (dst, from) in [(j, 2 * j), (j + d / 2, 2 * j + 1)] {
                let (o, i) = ((h * d + dst) * row_bytes, (h * d + from) * row_bytes);
                out[o..o + row_bytes].copy_from_slice(&src[i..i + row_bytes]);
            }
        }
    }
    // The reordered copy is what the device takes: the file's pages need not stay resident.
    t.release_pages();
    Ok(HostTensor::new(t.dtype(), t.dims(), out)?)
}

impl GgufWeights {
    fn gguf_name(&self, hf: &str) -> Option<String> {
        gguf_tensor_name(self.config.arch, hf).filter(|g| self.file.info(g).is_some())
    }
}

impl WeightSource for GgufWeights {
    fn contains(&self, name: &str) -> bool {
        self.gguf_name(name).is_some()
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let Some(g) = self.gguf_name(name) else {
            return Err(ModelError::MissingTensor {
                name: gguf_tensor_name(self.config.arch, name).unwrap_or_else(|| name.to_string()),
                files: self.file.path().display().to_string(),
            });
        };
        let t = self.file.tensor(&g)?;
        match arch::stored(&self.config, &g) {
            Stored::Same => Ok(t),
            Stored::RotaryInterleaved(heads) => {
                if t.dims().len() != 2 || t.dims()[0] % (2 * heads) != 0 {
                    return Err(ModelError::Checkpoint {
                        file: self.file.path().to_path_buf(),
                        message: format!(
                            "tensor '{g}' has shape {:?}: not {heads} heads of even width",
                            t.dims()
                        ),
                    });
                }
                unpermute_rotary_rows(t, heads)
            }
            Stored::PlusOne => {
                let v: Vec<f32> = t.to_f32_vec()?.into_iter().map(|x| x - 1.0).collect();
                t.release_pages();
                Ok(HostTensor::from_f32_as(t.dtype(), t.dims(), &v)?)
            }
        }
    }

    fn origin(&self, name: &str) -> String {
        match gguf_tensor_name(self.config.arch, name) {
            Some(g) => format!("{} (tensor '{g}')", self.file.path().display()),
            None => self.file.path().display().to_string(),
        }
    }

    fn stored_dtype(&self, name: &str) -> Option<DType> {
        self.gguf_name(name)
            .and_then(|g| self.file.info(&g))
            .map(|i| i.dtype)
    }
}

/// The tokenizer a GGUF file embeds (`None` when it has no vocabulary), reading nothing else.
pub fn load_gguf_tokenizer(path: &Path) -> Result<Option<Tokenizer>> {
    let f = GgufFile::open(path)?;
    Ok(vocab::tokenizer(&f)?.map(|t| Tokenizer::from_inner(t, path)))
}

/// Loads a GGUF file: config, weights (memory-mapped, in their stored types) and tokenizer.
pub fn load_gguf(path: &Path) -> Result<Model> {
    let mut f = GgufFile::open(path)?;
    let config = arch::config(&f)?;
    let tokenizer = vocab::tokenizer(&f)?.map(|t| Tokenizer::from_inner(t, path));
    if let Some(t) = &tokenizer {
        if t.vocab_size() > config.vocab_size {
            return Err(f.key_error(
                "tokenizer.ggml.tokens",
                format!(
                    "{} tokens, but the model's vocabulary is {}",
                    t.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
    }
    let token = |id: Option<u32>| {
        let t = tokenizer.as_ref()?;
        t.token_string(id?)
    };
    let chat_template = f
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let tokenizer_config = (tokenizer.is_some()).then(|| TokenizerConfig {
        file: path.to_path_buf(),
        bos_token: token(config.bos_token_id),
        eos_token: token(config.eos_token_ids.first().copied()),
        chat_template,
    });
    // The tokenizer holds the vocabulary now: the file's copy (tens of thousands of strings)
    // need not live as long as the weights do.
    f.drop_vocabulary();
    let f = Arc::new(f);
    Ok(Model {
        dir: path.to_path_buf(),
        config: config.clone(),
        weights: Box::new(GgufWeights { file: f, config }),
        tokenizer,
        tokenizer_config,
        generation_config: None,
    })
}
