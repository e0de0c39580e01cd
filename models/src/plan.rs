//! The plan of executables: which graphs an engine compiles for a model on a device (one prefill
//! and one decode graph with symbolic lengths on dynamic-shape devices; per KV bucket, a prefill
//! graph taking one chunk and a decode graph on static-shape devices), with the shape policy
//! behind it (context, chunk, buckets). `Engine::new` and `switchyard compile` both take their
//! graphs from [`plan_executables`], so a NEFF compiled ahead of time is the one the engine asks
//! for.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::graph::{build_graph, Entry, GraphOptions};
use std::collections::BTreeMap;
use switchyard_runtime::{DType, Graph, ShapeSupport, SymbolBindings};

/// How to place a model on a device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineOptions {
    /// Compute dtype; default f32 on the CPU (candle's bf16 CPU matmul is slow) and on emulated
    /// devices (for parity with the CPU), the checkpoint's dtype elsewhere.
    pub dtype: Option<DType>,
    /// Longest prompt plus generation a session holds; default the model's
    /// `max_position_embeddings`, capped at 4096.
    pub max_context: Option<usize>,
    /// Static-shape devices: tokens per prefill call, the last call padded (default 128).
    pub prefill_chunk: Option<usize>,
    /// Static-shape devices: the attended KV lengths compiled, ascending (default 512, 2048, ...
    /// by factors of 4, and the maximum context, which is always added).
    pub kv_buckets: Option<Vec<usize>>,
}

/// Default cap on the context when the user does not choose one.
pub const DEFAULT_MAX_CONTEXT: usize = 4096;
/// Default prefill chunk on static-shape devices.
pub const DEFAULT_PREFILL_CHUNK: usize = 128;

/// How an engine's graphs become executables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shapes {
    /// One prefill and one decode executable with symbolic lengths, bound per call.
    Dynamic,
    /// Per KV bucket, a prefill executable taking `chunk` tokens (the last chunk padded and masked)
    /// and a decode executable; each call uses the smallest bucket holding its positions.
    Static {
        /// Tokens per prefill call.
        chunk: usize,
        /// Attended KV lengths, ascending; the last is the maximum context.
        buckets: Vec<usize>,
    },
}

impl Shapes {
    /// Executables an engine compiles for these shapes.
    pub fn executables(&self) -> usize {
        match self {
            Shapes::Dynamic => 2,
            Shapes::Static { buckets, .. } => 2 * buckets.len(),
        }
    }
}

pub(crate) fn static_shapes(options: &EngineOptions, max_context: usize) -> Result<Shapes> {
    let chunk = options
        .prefill_chunk
        .unwrap_or(DEFAULT_PREFILL_CHUNK.min(max_context));
    if chunk == 0 || chunk > max_context {
        return Err(ModelError::InvalidOption {
            option: "--prefill-chunk",
            message: format!("{chunk} must be between 1 and the context ({max_context})"),
        });
    }
    let mut buckets = match &options.kv_buckets {
        Some(b) => b.clone(),
        None => {
            let mut b = Vec::new();
            let mut x = 512;
            while x < max_context {
                b.push(x);
                x *= 4;
            }
            b
        }
    };
    if let Some(bad) = buckets.iter().find(|&&b| b == 0 || b > max_context) {
        return Err(ModelError::InvalidOption {
            option: "--buckets",
            message: format!("bucket {bad} must be between 1 and the context ({max_context})"),
        });
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ModelError::InvalidOption {
            option: "--buckets",
            message: format!("buckets must be ascending without repeats, got {buckets:?}"),
        });
    }
    if buckets.last() != Some(&max_context) {
        buckets.push(max_context);
    }
    Ok(Shapes::Static { chunk, buckets })
}

/// The context an engine holds: `options.max_context`, else the model's maximum capped at
/// [`DEFAULT_MAX_CONTEXT`].
pub(crate) fn resolve_max_context(config: &ModelConfig, options: &EngineOptions) -> Result<usize> {
    let max_context = options
        .max_context
        .unwrap_or(config.max_position_embeddings.min(DEFAULT_MAX_CONTEXT));
    if max_context == 0 || max_context > config.max_position_embeddings {
        return Err(ModelError::InvalidOption {
            option: "--max-context",
            message: format!(
                "{max_context} must be between 1 and the model's max_position_embeddings ({})",
                config.max_position_embeddings
            ),
        });
    }
    Ok(max_context)
}

/// Which entry point an executable runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A prompt (or one chunk of it).
    Prefill,
    /// One generated token.
    Decode,
}

impl EntryKind {
    /// `prefill` / `decode` (file names, manifests).
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Prefill => "prefill",
            EntryKind::Decode => "decode",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One executable of the plan.
#[derive(Debug, Clone)]
pub struct PlannedExecutable {
    /// Its entry point.
    pub entry: EntryKind,
    /// The attended KV length it is specialized to (static shapes), `None` for symbolic lengths.
    pub bucket: Option<usize>,
    /// The graph to compile.
    pub graph: Graph,
}

/// Every executable an engine compiles, with the shapes and lengths they follow from.
#[derive(Debug, Clone)]
pub struct ExecutablePlan {
    /// Dynamic, or chunk and buckets.
    pub shapes: Shapes,
    /// The longest prompt plus generation a session holds.
    pub max_context: usize,
    /// KV-cache positions: the context, plus room for a padded last prefill chunk.
    pub cache_len: usize,
    /// Dynamic: prefill then decode. Static: per bucket (ascending), prefill then decode.
    pub executables: Vec<PlannedExecutable>,
}

/// The executables an engine builds for `config` with `options`, computing in `compute`, with
/// the weights in `quantized` kept block-quantized, on a device with `shape_support`. The one
/// function behind both `Engine::new` and `switchyard compile`.
pub fn plan_executables(
    config: &ModelConfig,
    options: &EngineOptions,
    compute: DType,
    quantized: &BTreeMap<String, DType>,
    shape_support: ShapeSupport,
) -> Result<ExecutablePlan> {
    let max_context = resolve_max_context(config, options)?;
    let shapes = match shape_support {
        ShapeSupport::Dynamic => Shapes::Dynamic,
        ShapeSupport::Static => static_shapes(options, max_context)?,
    };
    let (cache_len, prefill_tokens) = match &shapes {
        Shapes::Dynamic => (max_context, max_context),
        Shapes::Static { chunk, .. } => (max_context + chunk, *chunk),
    };
    let graph = |entry| {
        build_graph(
            config,
            &GraphOptions {
                entry,
                compute,
                cache_len,
                quantized: quantized.clone(),
            },
        )
    };
    let prefill = graph(Entry::Prefill {
        max_tokens: prefill_tokens,
    })?;
    let decode = graph(Entry::Decode)?;
    let executables = match &shapes {
        Shapes::Dynamic => vec![
            PlannedExecutable {
                entry: EntryKind::Prefill,
                bucket: None,
                graph: prefill,
            },
            PlannedExecutable {
                entry: EntryKind::Decode,
                bucket: None,
                graph: decode,
            },
        ],
        Shapes::Static { chunk, buckets } => {
            let mut out = Vec::with_capacity(2 * buckets.len());
            for &bucket in buckets {
                let dims = SymbolBindings::new()
                    .with("t", *chunk)
                    .with("kv_len", bucket);
                out.push(PlannedExecutable {
                    entry: EntryKind::Prefill,
                    bucket: Some(bucket),
                    graph: prefill.bind(&dims)?,
                });
                out.push(PlannedExecutable {
                    entry: EntryKind::Decode,
                    bucket: Some(bucket),
                    graph: decode.bind(&dims)?,
                });
            }
            out
        }
    };
    Ok(ExecutablePlan {
        shapes,
        max_context,
        cache_len,
        executables,
    })
}
