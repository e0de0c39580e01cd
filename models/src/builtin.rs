//! Built-in models: real architectures' shapes with deterministic random weights generated in
//! memory, so benchmarks run on a fresh machine with no download. Throughput does not depend on
//! weight values.

use crate::config::{Activation, Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::graph::{build_graph, Entry, GraphOptions};
use crate::rope::{Rope, RopeScaling};
use crate::weights::WeightSource;
use rayon::prelude::*;
use std::collections::HashMap;
use switchyard_runtime::{DType, HostTensor, ParamKind};

/// The built-in model names (`builtin:NAME`).
pub const BUILTIN_MODELS: [&str; 2] = ["smollm2-135m", "tinyllama-1.1b"];

#[allow(clippy::too_many_arguments)]
fn llama(
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    max_pos: usize,
    theta: f32,
    tied: bool,
) -> ModelConfig {
    let head_dim = hidden / heads;
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        max_position_embeddings: max_pos,
        norm_eps: 1e-5,
        rope: Some(Rope {
            theta,
            rotary_dim: head_dim,
            scaling: RopeScaling::None,
        }),
        rope_local: None,
        qk_norm: false,
        conv1d: false,
        tie_word_embeddings: tied,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        activation: Activation::Silu,
        layer_windows: vec![None; layers],
        attn_softcap: None,
        final_softcap: None,
        attn_scale: (head_dim as f32).powf(-0.5),
        torch_dtype: Some(DType::BF16),
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// The config of built-in model `name`.
pub fn builtin_config(name: &str) -> Result<ModelConfig> {
    match name {
        // SmolLM2-135M: 134.5 M parameters.
        "smollm2-135m" => Ok(llama(49152, 576, 1536, 30, 9, 3, 8192, 100000.0, true)),
        // TinyLlama-1.1B: 1100 M parameters.
        "tinyllama-1.1b" => Ok(llama(32000, 2048, 5632, 22, 32, 4, 2048, 10000.0, false)),
        other => Err(ModelError::Resolve {
            model: format!("builtin:{other}"),
            message: format!(
                "no such built-in model: available are {}",
                BUILTIN_MODELS.map(|m| format!("builtin:{m}")).join(", ")
            ),
        }),
    }
}

/// Deterministic random weights for a config: each tensor is generated when asked for, from a
/// seed and its name, so the same name always yields the same values and nothing is held in
/// memory between requests. Norm weights are 1; the rest are uniform in `±1/√fan_in`, which keeps
/// activations finite through any depth.
pub struct RandomWeights {
    shapes: HashMap<String, Vec<usize>>,
    seed: u64,
    label: String,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RandomWeights {
    /// Random weights for every weight the graphs of `config` declare.
    pub fn new(config: &ModelConfig, seed: u64, label: &str) -> Result<RandomWeights> {
        let graph = build_graph(
            config,
            &GraphOptions {
                entry: Entry::Prefill { max_tokens: 1 },
                compute: DType::F32,
                cache_len: 1,
                quantized: Default::default(),
            },
        )?;
        let shapes = graph
            .signature()
            .params
            .into_iter()
            .filter(|p| p.kind == ParamKind::Weight)
            .map(|p| {
                (
                    p.name,
                    p.spec
                        .shape
                        .fixed_dims()
                        .expect("weights have fixed shapes"),
                )
            })
            .collect();
        Ok(RandomWeights {
            shapes,
            seed,
            label: label.to_string(),
        })
    }
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let dims = self
            .shapes
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: self.label.clone(),
            })?;
        let n: usize = dims.iter().product();
        if name.ends_with("norm.weight") {
            return Ok(HostTensor::from_f32_vec(dims, vec![1.0; n])?);
        }
        let scale = 1.0 / (*dims.last().unwrap_or(&1) as f32).sqrt();
        let key = name
            .bytes()
            .fold(self.seed, |h, b| splitmix(h ^ u64::from(b)));
        let mut values = vec![0f32; n];
        const CHUNK: usize = 1 << 16;
        values
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut state = splitmix(key ^ (c as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                for v in chunk {
                    state = splitmix(state);
                    // 24 random bits to a uniform value in [-1, 1).
                    let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                    *v = (2.0 * u - 1.0) * scale;
                }
            });
        Ok(HostTensor::from_f32_vec(dims, values)?)
    }

    fn origin(&self, _name: &str) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_shapes_match_the_real_models() {
        let smol = builtin_config("smollm2-135m").unwrap();
        assert_eq!(smol.parameter_count().unwrap(), 134_515_008);
        let tiny = builtin_config("tinyllama-1.1b").unwrap();
        assert_eq!(tiny.parameter_count().unwrap(), 1_100_048_384);
        let e = builtin_config("gpt-5").unwrap_err().to_string();
        assert!(e.contains("builtin:smollm2-135m"), "{e}");
    }

    #[test]
    fn random_weights_are_deterministic_and_bounded() {
        let cfg = builtin_config("smollm2-135m").unwrap();
        let w = RandomWeights::new(&cfg, 7, "test").unwrap();
        let a = w.tensor("model.layers.3.mlp.up_proj.weight").unwrap();
        let b = w.tensor("model.layers.3.mlp.up_proj.weight").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.dims(), &[1536, 576]);
        let v = a.to_f32_vec().unwrap();
        let bound = 1.0 / 576f32.sqrt();
        assert!(v.iter().all(|x| x.abs() <= bound));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 1e-3 && v.iter().filter(|x| **x != 0.0).count() > v.len() * 99 / 100);
        assert_ne!(w.tensor("model.layers.4.mlp.up_proj.weight").unwrap(), a);
        assert!(w
            .tensor("model.norm.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap()
            .iter()
            .all(|x| *x == 1.0));
        assert!(w.tensor("nope").is_err());
    }
}
