//! The roofline projection: a step takes the longer of its bytes over the bandwidth and its
//! operations over the compute, each peak scaled by the efficiency assumed; a model that does not
//! fit one device is spread over as many as it needs, with ideal scaling.

use super::model_cost::ModelCost;
use super::specs::{DeviceClass, DeviceSpec, Efficiency};
use crate::DType;
use serde::Serialize;

/// The share of a device's memory a model may use (the runtime, activations and fragmentation
/// take the rest).
pub const USABLE_MEMORY_FRACTION: f64 = 0.9;

/// Which peak limits a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// Bytes over bandwidth.
    Memory,
    /// Operations over compute.
    Compute,
}

impl Bound {
    /// `memory` / `compute`.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
        }
    }
}

/// What to project: the benchmark's tests, at each batch size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Prompt sizes (`pp N`: a prompt of N tokens from an empty context).
    pub prompt_sizes: Vec<usize>,
    /// Generation sizes (`tg N`: N tokens from an empty context, one step each).
    pub gen_sizes: Vec<usize>,
    /// Sequences decoding together (each step reads the weights once for all of them).
    pub batches: Vec<usize>,
}

/// A projected prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptPoint {
    /// Prompt tokens.
    pub tokens: usize,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Time to the first token.
    pub ttft_s: f64,
    /// The limiting peak.
    pub bound: Bound,
}

/// Projected generation at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodePoint {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens generated per sequence.
    pub tokens: usize,
    /// Tokens per second over all sequences.
    pub aggregate_tokens_per_s: f64,
    /// Tokens per second each sequence sees.
    pub per_sequence_tokens_per_s: f64,
    /// The limiting peak of most steps.
    pub bound: Bound,
    /// Cost per million generated tokens at the aggregate rate, when a price is known.
    pub usd_per_million_tokens: Option<f64>,
}

/// Every projected figure for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// Always true: these figures are computed from specifications, not measured.
    pub projected: bool,
    /// The target's name.
    pub target: String,
    /// What it is.
    pub description: String,
    /// Its class.
    pub class: DeviceClass,
    /// Compute dtype.
    pub dtype: DType,
    /// How the weights are stored.
    pub weight_types: String,
    /// Bytes needed: weights plus the KV cache of the largest batch at the longest test.
    pub memory_needed_bytes: f64,
    /// Devices needed to hold it (1 when it fits one).
    pub devices: usize,
    /// The efficiency applied, with its source.
    pub efficiency: Efficiency,
    /// Hourly price of all the devices used, when known.
    pub usd_per_hour: Option<f64>,
    /// Where the price comes from.
    pub price_source: Option<String>,
    /// Per prompt size.
    pub prompts: Vec<PromptPoint>,
    /// Per batch size and generation size.
    pub decodes: Vec<DecodePoint>,
}

/// Peak FLOP/s of `spec` computing in `dtype`.
pub fn peak_flops(spec: &DeviceSpec, dtype: DType) -> f64 {
    match dtype {
        DType::F16 | DType::BF16 => spec.bf16_tflops * 1e12,
        _ => spec.f32_tflops * 1e12,
    }
}

struct Rates {
    bytes_per_s: f64,
    flops: f64,
    /// Seconds every step adds whatever its size.
    overhead_s: f64,
}

impl Rates {
    fn step(&self, bytes: f64, flops: f64) -> (f64, Bound) {
        let (m, c) = (bytes / self.bytes_per_s, flops / self.flops);
        if m >= c {
            (m + self.overhead_s, Bound::Memory)
        } else {
            (c + self.overhead_s, Bound::Compute)
        }
    }
}

/// Projects `workload` for `cost` on `spec` at `efficiency`; `usd_per_hour` is one device's
/// price (with its source), when known.
pub fn project(
    spec: &DeviceSpec,
    efficiency: &Efficiency,
    cost: &ModelCost,
    workload: &Workload,
    price: Option<(f64, String)>,
) -> Projection {
    let longest = workload
        .prompt_sizes
        .iter()
        .chain(&workload.gen_sizes)
        .copied()
        .max()
        .unwrap_or(1);
    let batch = workload.batches.iter().copied().max().unwrap_or(1);
    let needed = cost.resident_bytes + batch as f64 * cost.kv_bytes_held(longest);
    let devices = (needed / (spec.memory_bytes() * USABLE_MEMORY_FRACTION))
        .ceil()
        .max(1.0) as usize;
    let rates = Rates {
        bytes_per_s: spec.bytes_per_s() * efficiency.bandwidth * devices as f64,
        flops: peak_flops(spec, cost.dtype) * efficiency.compute * devices as f64,
        overhead_s: efficiency.layer_overhead_us * 1e-6 * cost.layers.len() as f64,
    };
    let prompts = workload
        .prompt_sizes
        .iter()
        .map(|&n| {
            let bytes = cost.streamed_bytes
                + n as f64 * cost.gathered_bytes_per_token
                + cost.kv_bytes_held(n);
            let (t, bound) = rates.step(bytes, cost.prompt_flops(n));
            PromptPoint {
                tokens: n,
                tokens_per_s: n as f64 / t,
                ttft_s: t,
                bound,
            }
        })
        .collect();
    let usd_per_hour = price.as_ref().map(|(p, _)| p * devices as f64);
    let mut decodes = Vec::new();
    for &b in &workload.batches {
        for &n in &workload.gen_sizes {
            let (mut total, mut memory_steps) = (0.0, 0usize);
            // Step i attends i positions (the bench's `tg N` starts from an empty context).
            for i in 1..=n {
                let bytes = cost.streamed_bytes
                    + b as f64 * (cost.gathered_bytes_per_token + cost.kv_bytes_read(i));
                let (t, bound) = rates.step(bytes, b as f64 * cost.decode_flops(i));
                total += t;
                memory_steps += usize::from(bound == Bound::Memory);
            }
            let aggregate = (b * n) as f64 / total;
            decodes.push(DecodePoint {
                batch: b,
                tokens: n,
                aggregate_tokens_per_s: aggregate,
                per_sequence_tokens_per_s: n as f64 / total,
                bound: if 2 * memory_steps >= n {
                    Bound::Memory
                } else {
                    Bound::Compute
                },
                usd_per_million_tokens: usd_per_hour
                    .map(|p| crate::bench::usd_per_million_tokens(p, aggregate)),
            });
        }
    }
    Projection {
        projected: true,
        target: spec.name.clone(),
        description: spec.description.clone(),
        class: spec.class,
        dtype: cost.dtype,
        weight_types: cost.weight_types.clone(),
        memory_needed_bytes: needed,
        devices,
        efficiency: efficiency.clone(),
        usd_per_hour,
        price_source: price.map(|(_, s)| s),
        prompts,
        decodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Model;
    use crate::project::SpecTable;

    fn unit() -> Efficiency {
        Efficiency {
            bandwidth: 1.0,
            compute: 1.0,
            layer_overhead_us: 0.0,
            source: "peak".into(),
        }
    }

    #[test]
    fn decode_is_bandwidth_over_bytes_and_prompt_is_flops_over_compute() {
        let m = Model::load("builtin:smollm2-135m").unwrap();
        let cost = ModelCost::new(&m.config, m.weights.as_ref(), DType::BF16).unwrap();
        let specs = SpecTable::shipped();
        let h100 = specs.target("h100").unwrap();
        let w = Workload {
            prompt_sizes: vec![512],
            gen_sizes: vec![1],
            batches: vec![1, 64],
        };
        let p = project(h100, &unit(), &cost, &w, Some((98.32 / 8.0, "t".into())));
        assert!(p.projected);
        assert_eq!(p.devices, 1);
        // One token at context 1: (weights + a row + one position of KV) / 3.35 TB/s.
        let bytes = cost.streamed_bytes + cost.gathered_bytes_per_token + cost.kv_bytes_read(1);
        let want = 3.35e12 / bytes;
        let d1 = &p.decodes[0];
        assert_eq!(d1.bound, Bound::Memory);
        assert!((d1.aggregate_tokens_per_s / want - 1.0).abs() < 1e-12);
        // $/1M = 12.29 $/h / 3600 / tokens/s × 1e6.
        let usd = 98.32 / 8.0 / 3600.0 / want * 1e6;
        assert!((d1.usd_per_million_tokens.unwrap() / usd - 1.0).abs() < 1e-9);
        // Batch 64 reads the weights once: the aggregate grows, each sequence's rate falls.
        let d64 = &p.decodes[1];
        assert!(d64.aggregate_tokens_per_s > 30.0 * d1.aggregate_tokens_per_s);
        assert!(d64.per_sequence_tokens_per_s < d1.per_sequence_tokens_per_s);
        // The prompt is compute-bound on an H100: FLOPs / 989 TFLOP/s.
        let pp = &p.prompts[0];
        assert_eq!(pp.bound, Bound::Compute);
        assert!((pp.ttft_s / (cost.prompt_flops(512) / 989e12) - 1.0).abs() < 1e-12);
        // Halving the efficiency halves the rates.
        let half = Efficiency {
            bandwidth: 0.5,
            compute: 0.5,
            layer_overhead_us: 0.0,
            source: "half".into(),
        };
        let q = project(h100, &half, &cost, &w, None);
        assert!((q.decodes[0].aggregate_tokens_per_s * 2.0 / want - 1.0).abs() < 1e-12);
        assert!(q.decodes[0].usd_per_million_tokens.is_none());
        // A per-layer overhead adds 30 layers × 40 us to every step.
        let launches = Efficiency {
            layer_overhead_us: 40.0,
            ..unit()
        };
        let r = project(h100, &launches, &cost, &w, None);
        let step = 1.0 / want + 30.0 * 40e-6;
        assert!((r.decodes[0].aggregate_tokens_per_s * step - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_model_larger_than_one_device_is_spread_over_several() {
        let m = Model::load("builtin:tinyllama-1.1b").unwrap();
        let cost = ModelCost::new(&m.config, m.weights.as_ref(), DType::F32).unwrap();
        let specs = SpecTable::shipped();
        let c7i = specs.target("c7i.large").unwrap();
        let w = Workload {
            prompt_sizes: vec![],
            gen_sizes: vec![8],
            batches: vec![1],
        };
        // 4.4 GB of f32 weights in 4 GiB × 0.9: two instances.
        let p = project(c7i, &unit(), &cost, &w, Some((0.1, "t".into())));
        assert_eq!(p.devices, 2);
        assert!((p.usd_per_hour.unwrap() - 0.2).abs() < 1e-12);
        let trn2 = specs.target("trn2").unwrap();
        assert_eq!(project(trn2, &unit(), &cost, &w, None).devices, 1);
    }
}
