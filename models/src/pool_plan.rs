//! The plan of a KV pool and its executables: how many sequence slots, how many positions each,
//! the bytes that takes on the device, and the graphs that advance many sequences per call (one
//! with symbolic lengths on dynamic-shape devices; per token bucket × KV bucket on static ones,
//! each step padded to the smallest token bucket that holds it).

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::graph::{build_graph, Entry, GraphOptions};
use crate::plan::{resolve_max_context, static_shapes, EngineOptions, Shapes};
use std::collections::BTreeMap;
use switchyard_runtime::{DType, DeviceInfo, Graph, ShapeSupport, SymbolBindings};

/// How to size a batch: its slots and the tokens one step may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOptions {
    /// Sequences held at once (default: as many as fit in half the device's free memory, at most
    /// [`DEFAULT_MAX_SLOTS`]).
    pub slots: Option<usize>,
    /// Tokens per step: the running decodes plus prompt tokens up to this budget (default the
    /// engine's prefill chunk, [`crate::plan::DEFAULT_PREFILL_CHUNK`]); at least `slots`.
    pub step_tokens: Option<usize>,
    /// Static-shape devices: the step widths compiled, ascending (default 1, 4, 8, 16, ... up to
    /// the slots, and the step budget, which is always added).
    pub token_buckets: Option<Vec<usize>>,
}

/// Most slots chosen when the user does not say.
pub const DEFAULT_MAX_SLOTS: usize = 16;

/// How a pool's graphs become executables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolShapes {
    /// One executable with symbolic token count and attended length, bound per call.
    Dynamic,
    /// One executable per (token bucket, KV bucket), token-major.
    Static {
        /// Step widths, ascending; the last is the step budget.
        token_buckets: Vec<usize>,
        /// Attended KV lengths, ascending; the last is the context.
        kv_buckets: Vec<usize>,
    },
}

/// One executable of a pool plan.
#[derive(Debug, Clone)]
pub struct PoolExecutable {
    /// Tokens per call it is specialized to (static shapes).
    pub tokens: Option<usize>,
    /// Attended KV length it is specialized to (static shapes).
    pub kv_bucket: Option<usize>,
    /// The graph to compile.
    pub graph: Graph,
}

/// A KV pool and its executables.
#[derive(Debug, Clone)]
pub struct PoolPlan {
    /// Sequences held at once.
    pub slots: usize,
    /// Slots allocated: `slots`, plus one scratch slot that padding rows write on static devices.
    pub pool_slots: usize,
    /// Positions per slot (the context).
    pub max_context: usize,
    /// Tokens per step.
    pub step_tokens: usize,
    /// Bytes of the whole pool (keys and values of every layer).
    pub pool_bytes: u64,
    /// Dynamic, or token and KV buckets.
    pub shapes: PoolShapes,
    /// Dynamic: one. Static: token-major over the buckets.
    pub executables: Vec<PoolExecutable>,
}

/// Bytes of keys and values one slot of `positions` takes in `compute`.
pub fn slot_bytes(config: &ModelConfig, positions: usize, compute: DType) -> u64 {
    let per_position = 2 * config.num_layers * config.num_kv_heads * config.head_dim;
    compute.storage_bytes(per_position) as u64 * positions as u64
}

/// The pool and executables for `config` on a device described by `info`, computing in
/// `compute` with `quantized` weights kept block-quantized. Fails, naming the bytes, when the
/// slots asked for do not fit the device's free memory.
pub fn plan_pool(
    config: &ModelConfig,
    engine: &EngineOptions,
    batch: &BatchOptions,
    compute: DType,
    quantized: &BTreeMap<String, DType>,
    info: &DeviceInfo,
) -> Result<PoolPlan> {
    let max_context = resolve_max_context(config, engine)?;
    let per_slot = slot_bytes(config, max_context, compute);
    let is_static = info.shape_support == ShapeSupport::Static;
    let scratch = usize::from(is_static);
    let slots = match batch.slots {
        Some(0) => {
            return Err(ModelError::InvalidOption {
                option: "--slots",
                message: "a batch needs at least one slot".into(),
            })
        }
        Some(n) => n,
        None => match info.memory_free {
            Some(free) => ((free / 2 / per_slot.max(1)) as usize)
                .saturating_sub(scratch)
                .clamp(1, DEFAULT_MAX_SLOTS),
            None => DEFAULT_MAX_SLOTS,
        },
    };
    let pool_slots = slots + scratch;
    let pool_bytes = per_slot * pool_slots as u64;
    if let Some(free) = info.memory_free {
        if pool_bytes > free {
            return Err(ModelError::InvalidOption {
                option: "--slots",
                message: format!(
                    "{slots} slots of {max_context} positions need {pool_bytes} bytes of KV pool ({per_slot} per slot), but {} has {free} bytes free; lower --slots or --max-context",
                    info.display_name()
                ),
            });
        }
    }
    let step_tokens = batch
        .step_tokens
        .unwrap_or(crate::plan::DEFAULT_PREFILL_CHUNK.max(slots));
    if step_tokens < slots {
        return Err(ModelError::InvalidOption {
            option: "step_tokens",
            message: format!(
                "{step_tokens} tokens per step cannot advance {slots} decoding sequences; use at least the slots"
            ),
        });
    }
    let graph = |max_tokens| {
        build_graph(
            config,
            &GraphOptions {
                entry: Entry::Pool {
                    max_tokens,
                    slots: pool_slots,
                },
                compute,
                cache_len: max_context,
                quantized: quantized.clone(),
            },
        )
    };
    let (shapes, executables) = if is_static {
        let Shapes::Static {
            buckets: kv_buckets,
            ..
        } = static_shapes(
            &EngineOptions {
                prefill_chunk: Some(step_tokens.min(max_context)),
                ..engine.clone()
            },
            max_context,
        )?
        else {
            unreachable!("static_shapes returns static shapes")
        };
        let token_buckets = token_buckets(batch, slots, step_tokens)?;
        let pool = graph(step_tokens)?;
        let mut exes = Vec::with_capacity(token_buckets.len() * kv_buckets.len());
        for &t in &token_buckets {
            for &kv in &kv_buckets {
                let dims = SymbolBindings::new()
                    .with("t", t)
                    .with("r", t.min(slots))
                    .with("kv_len", kv);
                exes.push(PoolExecutable {
                    tokens: Some(t),
                    kv_bucket: Some(kv),
                    graph: pool.bind(&dims)?,
                });
            }
        }
        (
            PoolShapes::Static {
                token_buckets,
                kv_buckets,
            },
            exes,
        )
    } else {
        let exe = PoolExecutable {
            tokens: None,
            kv_bucket: None,
            graph: graph(step_tokens)?,
        };
        (PoolShapes::Dynamic, vec![exe])
    };
    Ok(PoolPlan {
        slots,
        pool_slots,
        max_context,
        step_tokens,
        pool_bytes,
        shapes,
        executables,
    })
}

fn token_buckets(batch: &BatchOptions, slots: usize, step_tokens: usize) -> Result<Vec<usize>> {
    let mut buckets = match &batch.token_buckets {
        Some(b) => b.clone(),
        None => {
            let mut b = vec![1];
            let mut x = 4;
            while x < slots.min(step_tokens) {
                b.push(x);
                x *= 2;
            }
            if slots > 1 && slots < step_tokens {
                b.push(slots);
            }
            b
        }
    };
    if let Some(bad) = buckets.iter().find(|&&b| b == 0 || b > step_tokens) {
        return Err(ModelError::InvalidOption {
            option: "token_buckets",
            message: format!("bucket {bad} must be between 1 and the step budget ({step_tokens})"),
        });
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ModelError::InvalidOption {
            option: "token_buckets",
            message: format!("buckets must be ascending without repeats, got {buckets:?}"),
        });
    }
    if buckets.last() != Some(&step_tokens) {
        buckets.push(step_tokens);
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_token_buckets_cover_the_slots_then_the_budget() {
        let b = |slots, step| token_buckets(&BatchOptions::default(), slots, step).unwrap();
        assert_eq!(b(16, 128), vec![1, 4, 8, 16, 128]);
        assert_eq!(b(4, 128), vec![1, 4, 128]);
        assert_eq!(b(3, 64), vec![1, 3, 64]);
        assert_eq!(b(1, 8), vec![1, 8]);
        assert_eq!(b(16, 16), vec![1, 4, 8, 16]);
    }
}
