//! What one token costs a model: bytes read and floating-point operations per step, derived from
//! the decode graph the engine would build (every weight, the operation that reads it and the
//! type it is stored in), not from a parameter count alone.

use crate::models::{stored_quantized, weight_graph, ModelConfig, ModelError, WeightSource};
use crate::DType;
use serde::Serialize;
use switchyard_runtime::{ParamKind, WeightUse};

/// Bytes and operations of one model in one storage plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    /// Compute dtype (activations, KV cache, float weights).
    pub dtype: DType,
    /// How the weights are stored (e.g. `q8_0 ×210, f32 ×61`).
    pub weight_types: String,
    /// Parameters in the graph (tied embeddings counted once).
    pub parameters: usize,
    /// Bytes of every weight held in device memory.
    pub resident_bytes: f64,
    /// Bytes every step reads whatever its batch: matrices, norms, biases.
    pub streamed_bytes: f64,
    /// Bytes read per token from embedding tables (one row each).
    pub gathered_bytes_per_token: f64,
    /// Multiply-adds per token in the layers' matrix products (the output head excluded).
    pub layer_macs_per_token: f64,
    /// Multiply-adds of the output head for one token.
    pub head_macs: f64,
    /// Per layer: KV bytes per attended position and attention multiply-adds per attended
    /// position, and the layer's sliding window.
    pub layers: Vec<LayerCost>,
}

/// Attention costs of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerCost {
    /// K and V bytes per cached position.
    pub kv_bytes_per_position: f64,
    /// Multiply-adds per attended position (scores and weighted values, every head).
    pub attention_macs_per_position: f64,
    /// Positions attended at most (a sliding window), or every position.
    pub window: Option<usize>,
}

fn bytes_of(dtype: DType, numel: usize) -> f64 {
    (numel / dtype.block_len()) as f64 * dtype.block_bytes() as f64
}

impl ModelCost {
    /// The cost of `config` with weights from `weights` (a block-quantized stored type stays
    /// quantized, as the engine keeps it) and everything else in `dtype`.
    pub fn new(
        config: &ModelConfig,
        weights: &dyn WeightSource,
        dtype: DType,
    ) -> Result<ModelCost, ModelError> {
        let graph = weight_graph(config)?;
        // The weights the engine keeps block-quantized: the same map it builds.
        let quantized = stored_quantized(config, weights)?;
        let mut types: std::collections::BTreeMap<DType, usize> = Default::default();
        let mut cost = ModelCost {
            dtype,
            weight_types: String::new(),
            parameters: 0,
            resident_bytes: 0.0,
            streamed_bytes: 0.0,
            gathered_bytes_per_token: 0.0,
            layer_macs_per_token: 0.0,
            head_macs: 0.0,
            layers: Vec::new(),
        };
        for p in graph.signature().params {
            if p.kind != ParamKind::Weight {
                continue;
            }
            let dims = p.spec.shape.fixed_dims().unwrap_or_default();
            let numel: usize = dims.iter().product();
            let stored = quantized.get(&p.name).copied().unwrap_or(dtype);
            *types.entry(stored).or_default() += 1;
            let bytes = bytes_of(stored, numel);
            cost.parameters += numel;
            cost.resident_bytes += bytes;
            let uses = graph.uses_of(graph.param(&p.name).expect("declared"));
            let matmul = uses
                .iter()
                .any(|u| matches!(u, WeightUse::MatMul | WeightUse::MatMulTransposed));
            let gathered = uses.contains(&WeightUse::Gather);
            if matmul || uses.contains(&WeightUse::Other) || !gathered {
                cost.streamed_bytes += bytes;
            }
            if gathered {
                let row = dims.last().copied().unwrap_or(1);
                cost.gathered_bytes_per_token += bytes_of(stored, row.max(stored.block_len()));
            }
            if matmul {
                // The output head is the matrix with a vocabulary-sized output; the engine
                // applies it to the last prompt position only.
                let head = dims.len() == 2
                    && dims[0] == config.vocab_size
                    && uses.contains(&WeightUse::MatMulTransposed);
                if head {
                    cost.head_macs += numel as f64;
                } else {
                    cost.layer_macs_per_token += numel as f64;
                }
            }
        }
        cost.weight_types = types
            .iter()
            .rev()
            .map(|(d, n)| format!("{} ×{n}", d.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let kv = 2.0 * (config.num_kv_heads * config.head_dim) as f64 * bytes_of(dtype, 1);
        let attn = 2.0 * (config.num_heads * config.head_dim) as f64;
        cost.layers = (0..config.num_layers)
            .map(|l| LayerCost {
                kv_bytes_per_position: kv,
                attention_macs_per_position: attn,
                window: config.layer_windows.get(l).copied().flatten(),
            })
            .collect();
        Ok(cost)
    }

    /// KV bytes read by one token attending `context` positions (itself included).
    pub fn kv_bytes_read(&self, context: usize) -> f64 {
        self.layers
            .iter()
            .map(|l| l.kv_bytes_per_position * l.window.map_or(context, |w| context.min(w)) as f64)
            .sum()
    }

    /// KV bytes held for one sequence of `context` positions.
    pub fn kv_bytes_held(&self, context: usize) -> f64 {
        self.layers
            .iter()
            .map(|l| l.kv_bytes_per_position * context as f64)
            .sum()
    }

    /// Floating-point operations of one generated token attending `context` positions.
    pub fn decode_flops(&self, context: usize) -> f64 {
        2.0 * (self.layer_macs_per_token + self.head_macs + self.attention_macs(context))
    }

    /// Floating-point operations of a prompt of `n` tokens from an empty context (logits of the
    /// last position only).
    pub fn prompt_flops(&self, n: usize) -> f64 {
        let attention: f64 = (1..=n).map(|i| self.attention_macs(i)).sum();
        2.0 * (n as f64 * self.layer_macs_per_token + self.head_macs + attention)
    }

    fn attention_macs(&self, context: usize) -> f64 {
        self.layers
            .iter()
            .map(|l| {
                l.attention_macs_per_position * l.window.map_or(context, |w| context.min(w)) as f64
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Model;

    #[test]
    fn smollm2_shape_costs_match_a_hand_count() {
        let m = Model::load("builtin:smollm2-135m").unwrap();
        let c = ModelCost::new(&m.config, m.weights.as_ref(), DType::F32).unwrap();
        // Hand count: 30 layers × (q 576², k and v 576×192, o 576², gate/up/down 576×1536 ×3)
        // plus the tied 49152×576 embedding, which is also the head.
        let layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536;
        assert_eq!(c.layer_macs_per_token, (30 * layer) as f64);
        assert_eq!(c.head_macs, (49152 * 576) as f64);
        assert_eq!(c.parameters, 134_515_008);
        // f32: every weight is read each step (the embedding is the head), plus one row.
        assert_eq!(c.resident_bytes, 4.0 * c.parameters as f64);
        assert_eq!(c.streamed_bytes, c.resident_bytes);
        assert_eq!(c.gathered_bytes_per_token, 4.0 * 576.0);
        // KV: 30 layers × K and V × 3 heads × 64 × 4 bytes per position.
        assert_eq!(c.kv_bytes_read(10), 10.0 * 30.0 * 2.0 * 192.0 * 4.0);
        // Attention: 2 products × 9 heads × 64 per position per layer.
        assert_eq!(
            c.decode_flops(1),
            2.0 * ((30 * layer + 49152 * 576) as f64 + 30.0 * 2.0 * 576.0)
        );
        // A prompt applies the head once.
        let p = c.prompt_flops(2);
        assert_eq!(
            p,
            2.0 * (2.0 * (30 * layer) as f64 + (49152 * 576) as f64 + 30.0 * 2.0 * 576.0 * 3.0)
        );
    }

    #[test]
    fn quantized_weights_and_untied_embeddings() {
        let model = Model::load("builtin:tinyllama-1.1b").unwrap();
        let q = crate::quantize::QuantizedWeights::wrap(model, DType::Q8_0).unwrap();
        let c = ModelCost::new(&q.config, q.weights.as_ref(), DType::BF16).unwrap();
        // Untied: the 32000×2048 embedding (a gather table, so not quantized: it stays in the
        // compute dtype) is held but only one row is read per token.
        let embed = 32000.0 * 2048.0 * 2.0;
        assert!((c.resident_bytes - c.streamed_bytes - embed).abs() < 1.0);
        assert_eq!(c.gathered_bytes_per_token, 2048.0 * 2.0);
        assert!(c.weight_types.contains("q8_0 ×"), "{}", c.weight_types);
        assert!(c.weight_types.contains("bf16 ×"), "{}", c.weight_types);
        // The matrices in q8_0 are 34 bytes per 32 weights.
        let matrices = c.layer_macs_per_token + c.head_macs;
        assert!((c.streamed_bytes - matrices * 34.0 / 32.0) / c.streamed_bytes < 1e-3);
        // bf16 KV: 22 layers × 2 × 4 heads × 64 × 2 bytes per position.
        assert_eq!(c.kv_bytes_held(100), 100.0 * 22.0 * 2.0 * 256.0 * 2.0);
    }
}
