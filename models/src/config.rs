//! `config.json`: the model's hyper-parameters, in both layouts found in the wild.
//!
//! The classic layout keeps `rope_theta`, `rope_scaling`, `partial_rotary_factor` and
//! `torch_dtype` at the top level; the newer one (transformers 5) nests the rotary settings in
//! `rope_parameters` and names the dtype `dtype`. Both parse to the same [`ModelConfig`].

use crate::error::{read_json, ModelError, Result};
use crate::rope::{Rope, RopeScaling};
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use switchyard_runtime::DType;

/// The largest size a config may give any dimension (vocabulary, hidden, intermediate, heads,
/// head size, positions): 2^24, beyond every released model, and small enough that no product of
/// two of them, summed over [`MAX_LAYERS`] layers, overflows 64 bits.
pub const MAX_DIMENSION: usize = 1 << 24;
/// The most layers a config may declare (llama.cpp allows 512; the largest released models have
/// fewer than 200).
pub const MAX_LAYERS: usize = 1024;

/// The architectures Switchyard builds graphs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 2/3 (incl. `llama3` rope scaling), and models sharing its layout.
    Llama,
    /// Mistral: Llama with a sliding attention window.
    Mistral,
    /// Qwen2: Llama with q/k/v biases.
    Qwen2,
    /// Phi-3: fused `qkv_proj` and `gate_up_proj`, partial rotary.
    Phi3,
    /// Gemma: `(1 + w)` RMSNorm, scaled embeddings, GELU-tanh MLP.
    Gemma,
    /// Gemma-2: Gemma plus post-norms, soft-capping and alternating sliding layers.
    Gemma2,
    /// Gemma 3 (text): Gemma-2's post-norms, q/k RMS norms, five sliding layers per global one,
    /// separate rotary bases for sliding and global layers, no soft-capping.
    Gemma3,
    /// GPT-2: learned positions, LayerNorm with bias, `Conv1D` layout.
    Gpt2,
}

impl Arch {
    /// Every supported `model_type`.
    pub const SUPPORTED: [&'static str; 8] = [
        "llama",
        "mistral",
        "qwen2",
        "phi3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "gpt2",
    ];

    /// The architecture for a `model_type` string.
    pub fn from_model_type(s: &str) -> Option<Arch> {
        Some(match s {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "phi3" => Arch::Phi3,
            "gemma" => Arch::Gemma,
            "gemma2" => Arch::Gemma2,
            "gemma3_text" => Arch::Gemma3,
            "gpt2" => Arch::Gpt2,
            _ => return None,
        })
    }

    /// The `model_type` string.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Phi3 => "phi3",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3_text",
            Arch::Gpt2 => "gpt2",
        }
    }

    /// A Gemma: `(1 + w)` RMSNorm weights and embeddings scaled by `√hidden`.
    pub fn is_gemma(self) -> bool {
        matches!(self, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3)
    }

    /// Norms after the attention and the MLP too (Gemma 2 and 3).
    pub fn has_post_norms(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (gated MLPs of Llama-like models).
    Silu,
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU, exact.
    GeluErf,
}

/// A model's hyper-parameters, normalized across architectures and config layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which graph builder applies.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding and of the output head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (equal to `num_heads` without GQA, 1 for MQA).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// Epsilon of the normalization layers.
    pub norm_eps: f32,
    /// Rotary embedding (none for GPT-2, which learns positions); of the global layers where
    /// [`ModelConfig::rope_local`] is set.
    pub rope: Option<Rope>,
    /// Rotary embedding of the sliding-window layers when it differs from `rope` (Gemma 3).
    pub rope_local: Option<Rope>,
    /// Queries and keys are RMS-normalized per head before the rotary embedding (Gemma 3).
    pub qk_norm: bool,
    /// GPT-2's projections are stored `[in, out]` (Hugging Face's `Conv1D`); GGUF stores them
    /// `[out, in]` like every other linear layer.
    pub conv1d: bool,
    /// The output head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// q, k and v projections have biases.
    pub qkv_bias: bool,
    /// The attention output projection has a bias.
    pub o_bias: bool,
    /// The MLP projections have biases.
    pub mlp_bias: bool,
    /// The MLP's activation.
    pub activation: Activation,
    /// Per layer: the sliding attention window, or `None` for full attention.
    pub layer_windows: Vec<Option<usize>>,
    /// Soft-cap of the attention scores.
    pub attn_softcap: Option<f32>,
    /// Soft-cap of the final logits.
    pub final_softcap: Option<f32>,
    /// Multiplier of the attention scores.
    pub attn_scale: f32,
    /// The dtype the checkpoint was saved in, if the config says.
    pub torch_dtype: Option<DType>,
    /// Beginning-of-sequence token, if the config says.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens from the config.
    pub eos_token_ids: Vec<u32>,
}

/// Typed access to a JSON object, with errors naming the file and key.
pub(crate) struct Keys<'a> {
    pub file: &'a Path,
    pub map: &'a Map<String, Value>,
}

impl<'a> Keys<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::config(self.file, key, message)
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    pub fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(v) = self.opt_usize(k)? {
                return Ok(v);
            }
        }
        Err(self.err(keys[0], "missing (required)"))
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|n| Some(n as f32))
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<Keys<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Keys {
                file: self.file,
                map,
            })),
            Some(v) => Err(self.err(key, format!("expected an object, got {v}"))),
        }
    }

    /// One id or a list of ids.
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad = |v: &Value| {
            self.err(
                key,
                format!("expected a token id or a list of ids, got {v}"),
            )
        };
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad(v))
                })
                .collect(),
            Some(v) => Ok(vec![v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(v))?]),
        }
    }
}

fn parse_dtype(keys: &Keys<'_>, key: &str) -> Result<Option<DType>> {
    Ok(match keys.opt_str(key)? {
        None => None,
        Some("float32") => Some(DType::F32),
        Some("float16") => Some(DType::F16),
        Some("bfloat16") => Some(DType::BF16),
        Some(other) => {
            return Err(keys.err(
                key,
                format!("unsupported dtype '{other}': expected float32, float16 or bfloat16"),
            ))
        }
    })
}

impl ModelConfig {
    /// Reads `config.json` from a model directory (or a config file given directly).
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let file: PathBuf = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let json = read_json(&file)?;
        Self::from_json(&file, &json)
    }

    /// Parses a config already read; `file` names it in errors.
    pub fn from_json(file: &Path, json: &Value) -> Result<ModelConfig> {
        let map = json
            .as_object()
            .ok_or_else(|| ModelError::config(file, "(root)", "expected a JSON object"))?;
        let k = Keys { file, map };
        let model_type = k
            .opt_str("model_type")?
            .ok_or_else(|| k.err("model_type", "missing (required)"))?;
        let arch = Arch::from_model_type(model_type).ok_or_else(|| {
            ModelError::UnsupportedArchitecture {
                file: file.to_path_buf(),
                model_type: model_type.to_string(),
                supported: Arch::SUPPORTED.to_vec(),
            }
        })?;
        let gpt2 = arch == Arch::Gpt2;
        let vocab_size = k.usize_any(&["vocab_size"])?;
        let hidden_size = k.usize_any(&["hidden_size", "n_embd"])?;
        let num_layers = k.usize_any(&["num_hidden_layers", "n_layer"])?;
        let num_heads = k.usize_any(&["num_attention_heads", "n_head"])?;
        let num_kv_heads = if gpt2 {
            num_heads
        } else {
            k.opt_usize("num_key_value_heads")?.unwrap_or(num_heads)
        };
        let intermediate_size = if gpt2 {
            k.opt_usize("n_inner")?.unwrap_or(4 * hidden_size)
        } else {
            k.usize_any(&["intermediate_size"])?
        };
        for (key, v) in [
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("num_hidden_layers", num_layers),
            ("num_attention_heads", num_heads),
            ("num_key_value_heads", num_kv_heads),
            ("intermediate_size", intermediate_size),
        ] {
            if v == 0 {
                return Err(k.err(key, "must be at least 1"));
            }
            if v > MAX_DIMENSION {
                return Err(k.err(
                    key,
                    format!(
                        "{v} is beyond any model this runtime can hold (at most {MAX_DIMENSION})"
                    ),
                ));
            }
        }
        if num_layers > MAX_LAYERS {
            return Err(k.err(
                "num_hidden_layers",
                format!("{num_layers} layers: at most {MAX_LAYERS} are supported"),
            ));
        }
        if num_heads % num_kv_heads != 0 {
            return Err(k.err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
            ));
        }
        let head_dim = match k.opt_usize("head_dim")? {
            Some(d) if d > MAX_DIMENSION => {
                return Err(k.err(
                    "head_dim",
                    format!(
                        "{d} is beyond any model this runtime can hold (at most {MAX_DIMENSION})"
                    ),
                ))
            }
            Some(d) if d > 0 => d,
            Some(_) => return Err(k.err("head_dim", "must be at least 1")),
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(k.err(
                        "num_attention_heads",
                        format!("{num_heads} heads do not divide hidden_size = {hidden_size} (and no head_dim is given)"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        let max_position_embeddings = k.usize_any(&["max_position_embeddings", "n_positions"])?;
        if max_position_embeddings == 0 {
            return Err(k.err("max_position_embeddings", "must be at least 1"));
        }
        if max_position_embeddings > MAX_DIMENSION {
            return Err(k.err(
                "max_position_embeddings",
                format!(
                    "{max_position_embeddings} is beyond any context this runtime can hold (at most {MAX_DIMENSION})"
                ),
            ));
        }
        let norm_eps = match arch {
            Arch::Gpt2 => k.opt_f32("layer_norm_epsilon")?.unwrap_or(1e-5),
            _ => k.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        };
        if norm_eps.is_nan() || norm_eps <= 0.0 || norm_eps >= 1.0 {
            return Err(k.err(
                "rms_norm_eps",
                format!("{norm_eps} is not a small positive number"),
            ));
        }
        let rope = if gpt2 {
            None
        } else {
            Some(Rope::from_config(&k, head_dim)?)
        };
        let rope_local = if arch == Arch::Gemma3 {
            Some(Rope::local_from_config(&k, head_dim)?)
        } else {
            None
        };
        let activation = {
            let key = if gpt2 {
                "activation_function"
            } else if k.get("hidden_activation").is_some() {
                "hidden_activation"
            } else {
                "hidden_act"
            };
            let default = match arch {
                Arch::Gpt2 => "gelu_new",
                a if a.is_gemma() => "gelu_pytorch_tanh",
                _ => "silu",
            };
            match k.opt_str(key)?.unwrap_or(default) {
                "silu" | "swish" => Activation::Silu,
                "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
                // Gemma's config says "gelu" for what its code runs as the tanh approximation.
                "gelu" if arch.is_gemma() => Activation::GeluTanh,
                "gelu" => Activation::GeluErf,
                other => return Err(k.err(key, format!("unsupported activation '{other}'"))),
            }
        };
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            Arch::Gpt2 => (true, true),
            Arch::Phi3 | Arch::Mistral => (false, false),
            Arch::Llama | Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 => {
                let b = k.bool_or("attention_bias", false)?;
                (b, b)
            }
        };
        let mlp_bias = match arch {
            Arch::Gpt2 => true,
            Arch::Llama => k.bool_or("mlp_bias", false)?,
            _ => false,
        };
        let layer_windows = layer_windows(&k, arch, num_layers)?;
        let attn_softcap = if arch.has_post_norms() {
            k.opt_f32("attn_logit_softcapping")?
        } else {
            None
        };
        let final_softcap = if arch.has_post_norms() {
            k.opt_f32("final_logit_softcapping")?
        } else {
            None
        };
        for (key, cap) in [
            ("attn_logit_softcapping", attn_softcap),
            ("final_logit_softcapping", final_softcap),
        ] {
            if cap.is_some_and(|c| c.is_nan() || c <= 0.0) {
                return Err(k.err(key, "must be positive"));
            }
        }
        let attn_scale = match (arch.has_post_norms(), k.opt_f32("query_pre_attn_scalar")?) {
            (true, Some(s)) if s > 0.0 => s.powf(-0.5),
            (true, Some(_)) => return Err(k.err("query_pre_attn_scalar", "must be positive")),
            _ => (head_dim as f32).powf(-0.5),
        };
        if gpt2 && k.bool_or("scale_attn_by_inverse_layer_idx", false)? {
            return Err(k.err("scale_attn_by_inverse_layer_idx", "true is not supported"));
        }
        let torch_dtype = match parse_dtype(&k, "dtype")? {
            Some(d) => Some(d),
            None => parse_dtype(&k, "torch_dtype")?,
        };
        let bos_token_id = k.opt_usize("bos_token_id")?.map(|v| v as u32);
        let eos_token_ids = k.ids("eos_token_id")?;
        let tie_default = arch == Arch::Gpt2 || arch.is_gemma();
        Ok(ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings,
            norm_eps,
            rope,
            rope_local,
            qk_norm: arch == Arch::Gemma3,
            conv1d: gpt2,
            tie_word_embeddings: k.bool_or("tie_word_embeddings", tie_default)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            activation,
            layer_windows,
            attn_softcap,
            final_softcap,
            attn_scale,
            torch_dtype,
            bos_token_id,
            eos_token_ids,
        })
    }

    /// Number of parameters the config implies (every weight of its graph, tied embeddings
    /// counted once).
    pub fn parameter_count(&self) -> Result<usize> {
        let graph = crate::graph::build_graph(
            self,
            &crate::graph::GraphOptions {
                entry: crate::graph::Entry::Decode,
                compute: DType::F32,
                cache_len: 1,
                quantized: Default::default(),
            },
        )?;
        Ok(graph
            .signature()
            .params
            .iter()
            .filter(|p| p.kind == switchyard_runtime::ParamKind::Weight)
            .map(|p| p.spec.shape.max_numel())
            .sum())
    }
}

fn layer_windows(k: &Keys<'_>, arch: Arch, layers: usize) -> Result<Vec<Option<usize>>> {
    let window = k.opt_usize("sliding_window")?;
    if window == Some(0) {
        return Err(k.err("sliding_window", "must be at least 1"));
    }
    if let Some(Value::Array(types)) = k.get("layer_types") {
        if types.len() != layers {
            return Err(k.err(
                "layer_types",
                format!(
                    "lists {} layers but num_hidden_layers is {layers}",
                    types.len()
                ),
            ));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => window
                    .map(Some)
                    .ok_or_else(|| k.err("sliding_window", "required by sliding_attention layers")),
                _ => Err(k.err("layer_types", format!("unknown layer type {t}"))),
            })
            .collect();
    }
    Ok(match arch {
        Arch::Mistral | Arch::Phi3 => vec![window; layers],
        Arch::Qwen2 => {
            let on = k.bool_or("use_sliding_window", false)?;
            let from = k.opt_usize("max_window_layers")?.unwrap_or(layers);
            (0..layers)
                .map(|i| if on && i >= from { window } else { None })
                .collect()
        }
        Arch::Gemma2 => {
            let w = window.unwrap_or(4096);
            (0..layers).map(|i| (i % 2 == 0).then_some(w)).collect()
        }
        Arch::Gemma3 => {
            // Every `sliding_window_pattern`-th layer is global, the others slide.
            let w = window.unwrap_or(4096);
            let pattern = k.opt_usize("sliding_window_pattern")?.unwrap_or(6);
            if pattern == 0 {
                return Err(k.err("sliding_window_pattern", "must be at least 1"));
            }
            (0..layers)
                .map(|i| (!(i + 1).is_multiple_of(pattern)).then_some(w))
                .collect()
        }
        Arch::Llama | Arch::Gemma | Arch::Gpt2 => vec![None; layers],
    })
}

impl RopeScaling {
    pub(crate) fn parse(k: &Keys<'_>, key: &str) -> Result<RopeScaling> {
        let kind = match k.opt_str("rope_type")? {
            Some(t) => t,
            None => k.opt_str("type")?.unwrap_or("default"),
        };
        let f = |name: &str| -> Result<f32> {
            k.opt_f32(name)?.ok_or_else(|| {
                ModelError::config(k.file, &format!("{key}.{name}"), "missing (required)")
            })
        };
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: f("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_max_position_embeddings: f("original_max_position_embeddings")?,
            },
            other => {
                return Err(ModelError::config(
                    k.file,
                    &format!("{key}.rope_type"),
                    format!(
                    "rope scaling '{other}' is not supported (supported: default, linear, llama3)"
                ),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ModelConfig {
        let v: Value = serde_json::from_str(json).unwrap();
        ModelConfig::from_json(Path::new("config.json"), &v).unwrap()
    }

    const GEMMA2: &str = r#"{"model_type": "gemma2", "vocab_size": 8, "hidden_size": 64,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "intermediate_size": 32, "max_position_embeddings": 64,
        "query_pre_attn_scalar": 144, "sliding_window": 4}"#;

    #[test]
    fn absurd_sizes_are_refused_naming_the_key_before_anything_is_built() {
        // Found by fuzzing: 2.1e18 layers made the parameter count allocate without bound.
        let err = |json: &str| {
            let v: Value = serde_json::from_str(json).unwrap();
            ModelConfig::from_json(Path::new("config.json"), &v)
                .unwrap_err()
                .to_string()
        };
        let huge_layers = GEMMA2.replace(
            r#""num_hidden_layers": 4"#,
            r#""num_hidden_layers": 2111111111111111111"#,
        );
        let e = err(&huge_layers);
        assert!(
            e.contains("num_hidden_layers") && e.contains("at most"),
            "{e}"
        );
        let many = GEMMA2.replace(r#""num_hidden_layers": 4"#, r#""num_hidden_layers": 2000"#);
        let e = err(&many);
        assert!(
            e.contains("num_hidden_layers") && e.contains("at most 1024"),
            "{e}"
        );
        let huge_vocab = GEMMA2.replace(r#""vocab_size": 8"#, r#""vocab_size": 99999999999"#);
        let e = err(&huge_vocab);
        assert!(
            e.contains("vocab_size") && e.contains("at most 16777216"),
            "{e}"
        );
        let huge_head = GEMMA2.replace(r#""head_dim": 16"#, r#""head_dim": 99999999999"#);
        assert!(err(&huge_head).contains("head_dim"));
        let huge_ctx = GEMMA2.replace(
            r#""max_position_embeddings": 64"#,
            r#""max_position_embeddings": 99999999999"#,
        );
        assert!(err(&huge_ctx).contains("max_position_embeddings"));
        // At the limits a config still parses and counts its parameters.
        let c = parse(&GEMMA2.replace(r#""num_hidden_layers": 4"#, r#""num_hidden_layers": 1024"#));
        assert!(c.parameter_count().unwrap() > 0);
    }

    #[test]
    fn query_pre_attn_scalar_sets_the_attention_scale() {
        let c = parse(GEMMA2);
        assert_eq!(c.attn_scale, 144f32.powf(-0.5));
        assert_eq!(c.layer_windows, vec![Some(4), None, Some(4), None]);
    }

    #[test]
    fn gemma3_classic_layout_and_window_pattern() {
        let c = parse(
            r#"{"model_type": "gemma3_text", "vocab_size": 8, "hidden_size": 64,
            "num_hidden_layers": 7, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "intermediate_size": 32, "max_position_embeddings": 64,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 8,
            "sliding_window_pattern": 3}"#,
        );
        assert_eq!(c.rope.as_ref().unwrap().theta, 1e6);
        assert_eq!(c.rope_local.as_ref().unwrap().theta, 1e4);
        assert!(c.qk_norm && c.tie_word_embeddings);
        let w = Some(8);
        assert_eq!(c.layer_windows, vec![w, w, None, w, w, None, w]);
    }
}
