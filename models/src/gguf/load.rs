//! A GGUF file as a [`Model`]: metadata to [`ModelConfig`], tensors (quantized or not) as
//! weights borrowed from the memory map, and the embedded vocabulary as the tokenizer.

use super::{gguf_tensor_name, vocab, GgufFile};
use crate::chat::TokenizerConfig;
use crate::config::{Activation, Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::rope::{Rope, RopeScaling};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use std::path::Path;
use std::sync::Arc;
use switchyard_runtime::{DType, HostTensor};

/// Architectures read from GGUF.
pub const GGUF_ARCHITECTURES: [&str; 1] = ["llama"];

/// The weights of a GGUF file under the Hugging Face names the graphs use. llama.cpp's layout
/// rotates q and k features in adjacent pairs; their rows are put back in Hugging Face's order
/// (pairs `(i, i + d/2)`) as they are read, so the graphs are the same for both sources.
pub struct GgufWeights {
    file: Arc<GgufFile>,
    heads: usize,
    kv_heads: usize,
}

/// Rows of a `[heads · d, cols]` projection from GGUF's rotary order to Hugging Face's: row
/// `2j` of each head becomes row `j`, row `2j + 1` becomes row `j + d/2`. Rows are whole blocks
/// of any storage type, so quantized weights move as bytes.
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
    Ok(HostTensor::new(t.dtype(), t.dims(), out)?)
}

impl GgufWeights {
    fn gguf_name(&self, hf: &str) -> Option<String> {
        gguf_tensor_name(hf).filter(|g| self.file.info(g).is_some())
    }
}

impl WeightSource for GgufWeights {
    fn contains(&self, name: &str) -> bool {
        self.gguf_name(name).is_some()
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        match self.gguf_name(name) {
            Some(g) => {
                let t = self.file.tensor(&g)?;
                let heads = if g.ends_with(".attn_q.weight") {
                    self.heads
                } else if g.ends_with(".attn_k.weight") {
                    self.kv_heads
                } else {
                    return Ok(t);
                };
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
            None => Err(ModelError::MissingTensor {
                name: gguf_tensor_name(name).unwrap_or_else(|| name.to_string()),
                files: self.file.path().display().to_string(),
            }),
        }
    }

    fn origin(&self, name: &str) -> String {
        match gguf_tensor_name(name) {
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

fn usize_key(f: &GgufFile, key: &str) -> Result<usize> {
    let v = f.require_u64(key)?;
    if v == 0 || v > 1 << 24 {
        return Err(f.key_error(key, format!("{v} is out of range")));
    }
    Ok(v as usize)
}

fn opt_usize_key(f: &GgufFile, key: &str) -> Result<Option<usize>> {
    if f.get(key).is_none() {
        return Ok(None);
    }
    usize_key(f, key).map(Some)
}

/// The config a llama-architecture GGUF file describes.
fn llama_config(f: &GgufFile) -> Result<ModelConfig> {
    let a = "llama";
    let key = |k: &str| format!("{a}.{k}");
    let hidden = usize_key(f, &key("embedding_length"))?;
    let layers = usize_key(f, &key("block_count"))?;
    let intermediate = usize_key(f, &key("feed_forward_length"))?;
    let heads = usize_key(f, &key("attention.head_count"))?;
    let kv_heads = opt_usize_key(f, &key("attention.head_count_kv"))?.unwrap_or(heads);
    if heads % kv_heads != 0 {
        return Err(f.key_error(
            &key("attention.head_count_kv"),
            format!("{kv_heads} does not divide {a}.attention.head_count = {heads}"),
        ));
    }
    let head_dim = match opt_usize_key(f, &key("attention.key_length"))? {
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(f.key_error(
                &key("attention.head_count"),
                format!("{heads} heads do not divide {a}.embedding_length = {hidden}"),
            ))
        }
    };
    let rotary_dim = opt_usize_key(f, &key("rope.dimension_count"))?.unwrap_or(head_dim);
    if rotary_dim > head_dim || rotary_dim % 2 != 0 {
        return Err(f.key_error(
            &key("rope.dimension_count"),
            format!("{rotary_dim} must be even and at most the head width {head_dim}"),
        ));
    }
    if let Some(kind) = f.get(&key("rope.scaling.type")) {
        if kind.as_str() != Some("none") {
            return Err(f.key_error(
                &key("rope.scaling.type"),
                format!("rope scaling {kind:?} is not supported from GGUF"),
            ));
        }
    }
    let scaling = match f.info("rope_freqs.weight") {
        None => RopeScaling::None,
        Some(info) => {
            let bad = |m: String| ModelError::Checkpoint {
                file: f.path().to_path_buf(),
                message: format!("tensor 'rope_freqs.weight': {m}"),
            };
            if info.dims != [rotary_dim / 2] {
                return Err(bad(format!(
                    "shape {:?}, expected [{}]",
                    info.dims,
                    rotary_dim / 2
                )));
            }
            let factors = f.tensor("rope_freqs.weight")?.to_f32_vec()?;
            if factors.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                return Err(bad("factors must be positive".into()));
            }
            RopeScaling::Factors(factors)
        }
    };
    let theta = match f.get(&key("rope.freq_base")) {
        Some(v) => v.as_f64().filter(|t| *t > 0.0).ok_or_else(|| {
            f.key_error(
                &key("rope.freq_base"),
                format!("{v:?} is not a positive number"),
            )
        })? as f32,
        None => 10000.0,
    };
    let eps = match f.get(&key("attention.layer_norm_rms_epsilon")) {
        Some(v) => v.as_f64().filter(|e| *e > 0.0 && *e < 1.0).ok_or_else(|| {
            f.key_error(
                &key("attention.layer_norm_rms_epsilon"),
                format!("{v:?} is not a small positive number"),
            )
        })? as f32,
        None => 1e-5,
    };
    let embed = f
        .info("token_embd.weight")
        .ok_or_else(|| ModelError::MissingTensor {
            name: "token_embd.weight".into(),
            files: f.path().display().to_string(),
        })?;
    let vocab = match opt_usize_key(f, &key("vocab_size"))? {
        Some(v) => v,
        None => embed.dims[0],
    };
    let context = usize_key(f, &key("context_length"))?;
    // Tensors for blocks the metadata does not declare mean the two disagree.
    if let Some(extra) = f.tensor_names().iter().find(|n| {
        n.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= layers)
    }) {
        return Err(f.key_error(
            &key("block_count"),
            format!("{layers} blocks, but the file has tensor '{extra}'"),
        ));
    }
    let window = opt_usize_key(f, &key("attention.sliding_window"))?;
    let id = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
    Ok(ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        max_position_embeddings: context,
        norm_eps: eps,
        rope: Some(Rope {
            theta,
            rotary_dim,
            scaling,
        }),
        tie_word_embeddings: f.info("output.weight").is_none(),
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        activation: Activation::Silu,
        layer_windows: vec![window; layers],
        attn_softcap: None,
        final_softcap: None,
        attn_scale: (head_dim as f32).powf(-0.5),
        torch_dtype: None,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
    })
}

/// The tokenizer a GGUF file embeds (`None` when it has no vocabulary), reading nothing else.
pub fn load_gguf_tokenizer(path: &Path) -> Result<Option<Tokenizer>> {
    let f = GgufFile::open(path)?;
    Ok(match vocab::tokenizer_json(&f)? {
        Some(json) => Some(Tokenizer::from_inner(vocab::build(&f, &json)?, path)),
        None => None,
    })
}

/// Loads a GGUF file: config, weights (memory-mapped, in their stored types) and tokenizer.
pub fn load_gguf(path: &Path) -> Result<Model> {
    let f = Arc::new(GgufFile::open(path)?);
    let arch = f.require_str("general.architecture")?;
    if !GGUF_ARCHITECTURES.contains(&arch) {
        return Err(ModelError::UnsupportedArchitecture {
            file: path.to_path_buf(),
            model_type: arch.to_string(),
            supported: GGUF_ARCHITECTURES.to_vec(),
        });
    }
    let config = llama_config(&f)?;
    let tokenizer = match vocab::tokenizer_json(&f)? {
        Some(json) => Some(Tokenizer::from_inner(vocab::build(&f, &json)?, path)),
        None => None,
    };
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
    let (heads, kv_heads) = (config.num_heads, config.num_kv_heads);
    Ok(Model {
        dir: path.to_path_buf(),
        config,
        weights: Box::new(GgufWeights {
            file: f,
            heads,
            kv_heads,
        }),
        tokenizer,
        tokenizer_config,
        generation_config: None,
    })
}
