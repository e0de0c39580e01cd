//! Architectures in GGUF files as llama.cpp names and reads them: the `general.architecture`
//! string, the `{arch}.*` hyper-parameter keys, the tensor names, and the ways the stored tensors
//! differ from Hugging Face's (llama's q/k rows in interleaved rotary order, Gemma's norm weights
//! stored as `1 + w`, GPT-2's projections `[out, in]`).

use super::{GgufFile, GgufValue};
use crate::config::{Activation, Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::rope::{Rope, RopeScaling};

/// `general.architecture` values read.
pub const GGUF_ARCHITECTURES: [&str; 7] = [
    "llama", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];

/// The `general.architecture` a model of `arch` is written as (Mistral is llama to llama.cpp).
pub fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama | Arch::Mistral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Phi3 => "phi3",
        Arch::Gemma => "gemma",
        Arch::Gemma2 => "gemma2",
        Arch::Gemma3 => "gemma3",
        Arch::Gpt2 => "gpt2",
    }
}

fn arch_of(name: &str) -> Option<Arch> {
    Some(match name {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        "phi3" => Arch::Phi3,
        "gemma" => Arch::Gemma,
        "gemma2" => Arch::Gemma2,
        "gemma3" => Arch::Gemma3,
        "gpt2" => Arch::Gpt2,
        _ => return None,
    })
}

/// The GGUF name of the Hugging Face tensor `hf` of a model of `arch`.
pub fn gguf_tensor_name(arch: Arch, hf: &str) -> Option<String> {
    if arch == Arch::Gpt2 {
        let fixed = match hf {
            "wte.weight" => Some("token_embd.weight"),
            "wpe.weight" => Some("position_embd.weight"),
            "ln_f.weight" => Some("output_norm.weight"),
            "ln_f.bias" => Some("output_norm.bias"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some(f.to_string());
        }
        let rest = hf.strip_prefix("h.")?;
        let (layer, part) = rest.split_once('.')?;
        let (module, kind) = part.rsplit_once('.')?;
        let g = match module {
            "ln_1" => "attn_norm",
            "attn.c_attn" => "attn_qkv",
            "attn.c_proj" => "attn_output",
            "ln_2" => "ffn_norm",
            "mlp.c_fc" => "ffn_up",
            "mlp.c_proj" => "ffn_down",
            _ => return None,
        };
        return Some(format!("blk.{layer}.{g}.{kind}"));
    }
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let (module, kind) = part.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" if arch.has_post_norms() => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" | "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// How a stored tensor differs from the Hugging Face one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stored {
    /// As is.
    Same,
    /// q/k rows in llama.cpp's interleaved rotary order, for this many heads.
    RotaryInterleaved(usize),
    /// A Gemma norm weight stored as `1 + w`.
    PlusOne,
}

/// How the tensor named `gguf` of a model `c` is stored.
pub(crate) fn stored(c: &ModelConfig, gguf: &str) -> Stored {
    if gguf_arch(c.arch) == "llama" && c.rope.is_some() {
        if gguf.ends_with(".attn_q.weight") {
            return Stored::RotaryInterleaved(c.num_heads);
        }
        if gguf.ends_with(".attn_k.weight") {
            return Stored::RotaryInterleaved(c.num_kv_heads);
        }
    }
    if c.arch.is_gemma() && gguf.ends_with("norm.weight") {
        return Stored::PlusOne;
    }
    Stored::Same
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

fn opt_positive(f: &GgufFile, key: &str) -> Result<Option<f32>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| *x > 0.0 && x.is_finite())
            .map(|x| Some(x as f32))
            .ok_or_else(|| f.key_error(key, format!("{v:?} is not a positive number"))),
    }
}

/// The architecture a GGUF file declares, refused by name when it is not one read here.
pub(crate) fn file_arch(f: &GgufFile) -> Result<(Arch, &str)> {
    let name = f.require_str("general.architecture")?;
    let arch = arch_of(name).ok_or_else(|| ModelError::UnsupportedArchitecture {
        file: f.path().to_path_buf(),
        model_type: name.to_string(),
        supported: GGUF_ARCHITECTURES.to_vec(),
    })?;
    Ok((arch, name))
}

/// The config a GGUF file describes, as llama.cpp reads its keys.
pub(crate) fn config(f: &GgufFile) -> Result<ModelConfig> {
    let (arch, a) = file_arch(f)?;
    let key = |k: &str| format!("{a}.{k}");
    let hidden = usize_key(f, &key("embedding_length"))?;
    let layers = usize_key(f, &key("block_count"))?;
    if layers > crate::config::MAX_LAYERS {
        return Err(f.key_error(
            &key("block_count"),
            format!(
                "{layers} blocks: at most {} are supported",
                crate::config::MAX_LAYERS
            ),
        ));
    }
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
    let rope = if arch == Arch::Gpt2 {
        None
    } else {
        Some(rope(f, a, head_dim)?)
    };
    let rope_local = match (arch, &rope) {
        (Arch::Gemma3, Some(r)) => Some(Rope {
            theta: opt_positive(f, &key("rope.freq_base_swa"))?.unwrap_or(10000.0),
            rotary_dim: r.rotary_dim,
            scaling: RopeScaling::None,
        }),
        _ => None,
    };
    let eps_key = if arch == Arch::Gpt2 {
        "attention.layer_norm_epsilon"
    } else {
        "attention.layer_norm_rms_epsilon"
    };
    let eps = match f.get(&key(eps_key)) {
        Some(v) => v.as_f64().filter(|e| *e > 0.0 && *e < 1.0).ok_or_else(|| {
            f.key_error(
                &key(eps_key),
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
    let layer_windows: Vec<Option<usize>> = match arch {
        // llama.cpp attends to everything in these, whatever a sliding-window key says (for
        // Phi-3 it reads the key and disables the window).
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Gemma | Arch::Gpt2 | Arch::Phi3 => {
            vec![None; layers]
        }
        Arch::Gemma2 => (0..layers).map(|i| window.filter(|_| i % 2 == 0)).collect(),
        Arch::Gemma3 => {
            let pattern = opt_usize_key(f, &key("attention.sliding_window_pattern"))?.unwrap_or(6);
            (0..layers)
                .map(|i| window.filter(|_| !(i + 1).is_multiple_of(pattern)))
                .collect()
        }
    };
    // llama.cpp's attention scale: 1/√head_dim, but 1/√(hidden/heads) for the 27B Gemmas.
    let gemma_27b =
        (arch == Arch::Gemma2 && layers == 46) || (arch == Arch::Gemma3 && layers == 62);
    let attn_scale = if gemma_27b {
        ((hidden / heads) as f32).powf(-0.5)
    } else {
        (head_dim as f32).powf(-0.5)
    };
    let has_bias = |t: &str| f.info(&format!("blk.0.{t}.bias")).is_some();
    let id = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
    Ok(ModelConfig {
        arch,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        max_position_embeddings: context,
        norm_eps: eps,
        rope,
        rope_local,
        qk_norm: arch == Arch::Gemma3,
        conv1d: false,
        tie_word_embeddings: f.info("output.weight").is_none(),
        qkv_bias: has_bias("attn_q") || has_bias("attn_qkv"),
        o_bias: has_bias("attn_output"),
        mlp_bias: has_bias("ffn_up") || has_bias("ffn_down"),
        activation: if arch == Arch::Gpt2 || arch.is_gemma() {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        layer_windows,
        attn_softcap: opt_positive(f, &key("attn_logit_softcapping"))?,
        final_softcap: opt_positive(f, &key("final_logit_softcapping"))?,
        attn_scale,
        torch_dtype: None,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
    })
}

fn rope(f: &GgufFile, a: &str, head_dim: usize) -> Result<Rope> {
    let key = |k: &str| format!("{a}.{k}");
    let rotary_dim = opt_usize_key(f, &key("rope.dimension_count"))?.unwrap_or(head_dim);
    if rotary_dim > head_dim || rotary_dim % 2 != 0 {
        return Err(f.key_error(
            &key("rope.dimension_count"),
            format!("{rotary_dim} must be even and at most the head width {head_dim}"),
        ));
    }
    for t in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        if f.info(t).is_some() {
            return Err(ModelError::Checkpoint {
                file: f.path().to_path_buf(),
                message: format!("tensor '{t}': long-context rotary factors are not supported"),
            });
        }
    }
    let mut scaling = RopeScaling::None;
    if let Some(kind) = f.get(&key("rope.scaling.type")) {
        match kind.as_str() {
            Some("none") => {}
            Some("linear") => {
                let factor = opt_positive(f, &key("rope.scaling.factor"))?.ok_or_else(|| {
                    f.key_error(
                        &key("rope.scaling.factor"),
                        "missing (required by linear)".into(),
                    )
                })?;
                scaling = RopeScaling::Linear { factor };
            }
            _ => {
                return Err(f.key_error(
                    &key("rope.scaling.type"),
                    format!("rope scaling {kind:?} is not supported from GGUF (none, linear are)"),
                ))
            }
        }
    }
    if let Some(info) = f.info("rope_freqs.weight") {
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
        scaling = RopeScaling::Factors(factors);
    }
    Ok(Rope {
        theta: opt_positive(f, &key("rope.freq_base"))?.unwrap_or(10000.0),
        rotary_dim,
        scaling,
    })
}

/// The hyper-parameter keys llama.cpp reads for a model `c`, as its converter writes them.
pub(crate) fn metadata(c: &ModelConfig) -> Result<Vec<(String, GgufValue)>> {
    let a = gguf_arch(c.arch);
    let key = |k: &str| format!("{a}.{k}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut m = vec![
        (key("context_length"), u(c.max_position_embeddings)),
        (key("embedding_length"), u(c.hidden_size)),
        (key("block_count"), u(c.num_layers)),
        (key("feed_forward_length"), u(c.intermediate_size)),
        (key("attention.head_count"), u(c.num_heads)),
        (key("attention.head_count_kv"), u(c.num_kv_heads)),
        (key("attention.key_length"), u(c.head_dim)),
        (key("attention.value_length"), u(c.head_dim)),
        (key("vocab_size"), u(c.vocab_size)),
    ];
    if c.arch == Arch::Gpt2 {
        m.push((
            key("attention.layer_norm_epsilon"),
            GgufValue::F32(c.norm_eps),
        ));
    } else {
        m.push((
            key("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(c.norm_eps),
        ));
    }
    if let Some(r) = &c.rope {
        m.push((key("rope.dimension_count"), u(r.rotary_dim)));
        m.push((key("rope.freq_base"), GgufValue::F32(r.theta)));
        if let RopeScaling::Linear { factor } = r.scaling {
            m.push((key("rope.scaling.type"), GgufValue::Str("linear".into())));
            m.push((key("rope.scaling.factor"), GgufValue::F32(factor)));
        }
    }
    if let Some(r) = &c.rope_local {
        m.push((key("rope.freq_base_swa"), GgufValue::F32(r.theta)));
    }
    if c.arch == Arch::Phi3 {
        m.push((
            key("rope.scaling.original_context_length"),
            u(c.max_position_embeddings),
        ));
    }
    // The windows llama.cpp applies: Gemma 2's on even layers, Gemma 3's on five of six. Phi-3's
    // key is written as llama.cpp's converter writes it, though llama.cpp disables Phi-3's
    // window; a Llama/Mistral window has no key (the converter drops it too).
    let window = c.layer_windows.iter().flatten().next().copied();
    if matches!(c.arch, Arch::Phi3 | Arch::Gemma2 | Arch::Gemma3) {
        if let Some(w) = window {
            let expected: Vec<Option<usize>> = (0..c.num_layers)
                .map(|i| match c.arch {
                    Arch::Phi3 => Some(w),
                    Arch::Gemma2 => (i % 2 == 0).then_some(w),
                    _ => (!(i + 1).is_multiple_of(6)).then_some(w),
                })
                .collect();
            if expected != c.layer_windows {
                return Err(ModelError::InvalidOption {
                    option: "--model",
                    message: format!(
                        "GGUF export: the layers' sliding windows {:?} are not the pattern llama.cpp assumes for {}",
                        c.layer_windows, c.arch
                    ),
                });
            }
            m.push((key("attention.sliding_window"), u(w)));
        }
    }
    if let Some(s) = c.attn_softcap {
        m.push((key("attn_logit_softcapping"), GgufValue::F32(s)));
    }
    if let Some(s) = c.final_softcap {
        m.push((key("final_logit_softcapping"), GgufValue::F32(s)));
    }
    let gemma_27b = (c.arch == Arch::Gemma2 && c.num_layers == 46)
        || (c.arch == Arch::Gemma3 && c.num_layers == 62);
    let expected_scale = if gemma_27b {
        ((c.hidden_size / c.num_heads) as f32).powf(-0.5)
    } else {
        (c.head_dim as f32).powf(-0.5)
    };
    if c.rope.is_some() && (c.attn_scale - expected_scale).abs() > 1e-6 * expected_scale {
        return Err(ModelError::InvalidOption {
            option: "--model",
            message: format!(
                "GGUF export: an attention scale of {} (not 1/√head_dim) has no GGUF key llama.cpp reads",
                c.attn_scale
            ),
        });
    }
    Ok(m)
}
