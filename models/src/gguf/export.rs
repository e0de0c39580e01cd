//! Exporting a model to GGUF as llama.cpp's converter writes it: the architecture's keys and
//! tensor names ([`super::arch`]), q/k rows of llama models in interleaved rotary order, Gemma
//! norm weights as `1 + w`, GPT-2's projections `[out, in]`, the tokenizer and chat template.

use super::arch::{self, gguf_arch, gguf_tensor_name, Stored};
use super::{file_type, GgufValue, GgufWriter};
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::rope::RopeScaling;
use std::path::Path;
use switchyard_runtime::{DType, HostTensor};

/// Reorders the rows of a q or k projection from the Hugging Face rotary layout (feature pairs
/// `(i, i + d/2)` within each head) to the GGUF one (pairs `(2i, 2i + 1)`).
pub fn permute_rotary_rows(t: &HostTensor, heads: usize) -> Result<HostTensor> {
    let (rows, cols) = (t.dims()[0], t.dims()[1]);
    let d = rows / heads;
    let v = t.to_f32_vec()?;
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for j in 0..d / 2 {
            for (dst, src) in [(2 * j, j), (2 * j + 1, j + d / 2)] {
                let (o, i) = ((h * d + dst) * cols, (h * d + src) * cols);
                out[o..o + cols].copy_from_slice(&v[i..i + cols]);
            }
        }
    }
    Ok(HostTensor::from_f32_vec(&[rows, cols], out)?)
}

/// A placeholder SentencePiece vocabulary of `n` tokens (`<unk>`, `<s>`, `</s>`, the 256 byte
/// tokens, then `▁tN`), for models without a tokenizer: llama.cpp needs a vocabulary to load a
/// model even when it is fed token ids directly.
fn placeholder_vocab(n: usize) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        let (t, ty) = match i {
            0 => ("<unk>".to_string(), 2),
            1 => ("<s>".to_string(), 3),
            2 => ("</s>".to_string(), 3),
            3..=258 => (format!("<0x{:02X}>", i - 3), 6),
            _ => (format!("\u{2581}t{i}"), 1),
        };
        tokens.push(t);
        types.push(ty);
    }
    let scores = (0..n).map(|i| -(i as f32)).collect();
    (tokens, scores, types)
}

/// The model's own tokenizer as GGUF vocabulary keys, padded with unused tokens to the model's
/// vocabulary size; `None` for a model without a tokenizer, an error naming the tokenizer file
/// when its kind cannot be written so that llama.cpp tokenizes the same way.
fn model_vocab(model: &Model) -> Result<Option<Vec<(String, GgufValue)>>> {
    let Some(tok) = model.tokenizer.as_ref() else {
        return Ok(None);
    };
    let c = &model.config;
    let bad = |message: String| ModelError::Tokenizer {
        file: model.dir.join("tokenizer.json"),
        message: format!("cannot be written as a GGUF vocabulary: {message}"),
    };
    let probe = "a";
    let with = tok.encode(probe, true)?;
    let without = tok.encode(probe, false)?;
    let add_bos = c
        .bos_token_id
        .is_some_and(|b| with.first() == Some(&b) && without.first() != Some(&b));
    let eos = c.eos_token_ids.first().copied();
    let add_eos = eos.is_some_and(|e| with.last() == Some(&e) && without.last() != Some(&e));
    let json = tok
        .to_json()
        .ok_or_else(|| bad("it does not serialize".into()))?;
    let ids = super::vocab::export::SpecialIds {
        bos: c.bos_token_id,
        eos,
        add_bos,
        add_eos,
    };
    let mut keys = super::vocab::export::vocab_keys(&json, &ids).map_err(bad)?;
    let n = keys
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::StrArray(t)) => Some(t.len()),
            _ => None,
        })
        .unwrap_or(0);
    if n > c.vocab_size {
        // Tokens past the embedding's rows (special tokens a tokenizer class adds) can never
        // reach the model; anything else past them means the two do not belong together.
        super::vocab::export::truncate_to(&mut keys, c.vocab_size).map_err(bad)?;
    }
    super::vocab::export::pad_to(&mut keys, c.vocab_size);
    Ok(Some(keys))
}

/// Writes `model` as a GGUF file at `path`. Every weight is read in f32 and stored as llama.cpp
/// expects it; `convert` turns each tensor into the stored dtype (given the GGUF tensor name,
/// so callers can keep norms in f32). `mostly` is the dtype recorded as the file type.
pub fn export_gguf(
    model: &Model,
    mostly: DType,
    convert: &dyn Fn(&str, HostTensor) -> Result<HostTensor>,
    path: &Path,
) -> Result<()> {
    let c = &model.config;
    let mut w = GgufWriter::new();
    let name = model.dir.display().to_string();
    w.meta(
        "general.architecture",
        GgufValue::Str(gguf_arch(c.arch).into()),
    )
    .meta("general.name", GgufValue::Str(name))
    .meta("general.file_type", GgufValue::U32(file_type(mostly)))
    // The block layouts written are those of ggml's quantization version 2.
    .meta("general.quantization_version", GgufValue::U32(2));
    for (k, v) in arch::metadata(c)? {
        w.meta(&k, v);
    }
    match model_vocab(model)? {
        Some(keys) => {
            for (k, v) in keys {
                w.meta(&k, v);
            }
        }
        None => {
            let (tokens, scores, types) = placeholder_vocab(c.vocab_size);
            w.meta("tokenizer.ggml.model", GgufValue::Str("llama".into()))
                .meta("tokenizer.ggml.tokens", GgufValue::StrArray(tokens))
                .meta("tokenizer.ggml.scores", GgufValue::F32Array(scores))
                .meta("tokenizer.ggml.token_type", GgufValue::I32Array(types))
                .meta("tokenizer.ggml.unknown_token_id", GgufValue::U32(0))
                .meta("tokenizer.ggml.bos_token_id", GgufValue::U32(1))
                .meta("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
        }
    }
    if let Some(t) = model
        .tokenizer_config
        .as_ref()
        .and_then(|t| t.chat_template.clone())
    {
        w.meta("tokenizer.chat_template", GgufValue::Str(t));
    }
    let graph = crate::graph::build_graph(
        c,
        &crate::graph::GraphOptions {
            entry: crate::graph::Entry::Decode,
            compute: DType::F32,
            cache_len: 1,
            quantized: Default::default(),
        },
    )?;
    if let Some(rope) = c
        .rope
        .as_ref()
        .filter(|r| !matches!(r.scaling, RopeScaling::None | RopeScaling::Linear { .. }))
    {
        if gguf_arch(c.arch) != "llama" {
            return Err(ModelError::InvalidOption {
                option: "--model",
                message: format!(
                    "GGUF export: {}'s rotary scaling has no GGUF form llama.cpp reads",
                    c.arch
                ),
            });
        }
        // llama.cpp divides each frequency by these factors.
        let f = rope.factors();
        w.tensor(
            "rope_freqs.weight",
            HostTensor::from_f32_vec(&[f.len()], f)?,
        )?;
    }
    for p in graph.signature().params {
        if p.kind != switchyard_runtime::ParamKind::Weight {
            continue;
        }
        let gguf = gguf_tensor_name(c.arch, &p.name).ok_or_else(|| ModelError::InvalidOption {
            option: "--model",
            message: format!("no GGUF name for tensor {}", p.name),
        })?;
        let stored_as = crate::weights::checkpoint_name(model.weights.as_ref(), &p.name, c.arch);
        let mut t = model.weights.tensor(&stored_as)?.to_dtype(DType::F32)?;
        let conv1d_weight = [
            ".attn.c_attn.weight",
            ".attn.c_proj.weight",
            ".mlp.c_fc.weight",
            ".mlp.c_proj.weight",
        ]
        .iter()
        .any(|s| p.name.ends_with(s));
        if c.conv1d && conv1d_weight {
            t = transpose(&t)?;
        }
        t = match arch::stored(c, &gguf) {
            Stored::Same => t,
            Stored::RotaryInterleaved(heads) => permute_rotary_rows(&t, heads)?,
            Stored::PlusOne => {
                let v: Vec<f32> = t.to_f32_vec()?.into_iter().map(|x| x + 1.0).collect();
                HostTensor::from_f32_vec(t.dims(), v)?
            }
        };
        let stored = convert(&gguf, t)?;
        w.tensor(&gguf, stored)?;
    }
    w.write(path)
}

/// A `[rows, cols]` f32 tensor transposed.
fn transpose(t: &HostTensor) -> Result<HostTensor> {
    let (rows, cols) = (t.dims()[0], t.dims()[1]);
    let v = t.to_f32_vec()?;
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for (c, &x) in v[r * cols..(r + 1) * cols].iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    Ok(HostTensor::from_f32_vec(&[cols, rows], out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;

    #[test]
    fn rotary_permutation_interleaves_each_head() {
        // 2 heads of dimension 4, one column: rows are the row indices.
        let t = HostTensor::from_f32(&[8, 1], &[0., 1., 2., 3., 4., 5., 6., 7.]).unwrap();
        let p = permute_rotary_rows(&t, 2).unwrap().to_f32_vec().unwrap();
        assert_eq!(p, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(
            gguf_tensor_name(Arch::Llama, "model.layers.12.mlp.down_proj.weight").as_deref(),
            Some("blk.12.ffn_down.weight")
        );
        assert_eq!(
            gguf_tensor_name(Arch::Llama, "model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            gguf_tensor_name(Arch::Llama, "model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
        assert_eq!(
            gguf_tensor_name(
                Arch::Gemma2,
                "model.layers.3.post_attention_layernorm.weight"
            )
            .as_deref(),
            Some("blk.3.post_attention_norm.weight")
        );
        assert_eq!(
            gguf_tensor_name(Arch::Gpt2, "h.1.attn.c_attn.bias").as_deref(),
            Some("blk.1.attn_qkv.bias")
        );
    }
}
