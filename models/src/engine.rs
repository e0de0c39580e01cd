//! The engine: a model's weights on a device, its graphs compiled once, and sessions that own a
//! KV cache.

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::graph::{build_graph, kv_state_name, Entry, GraphOptions};
use crate::weights::WeightSource;
use std::time::{Duration, Instant};
use switchyard_runtime::{
    DType, Device, DeviceBuffer, DeviceKind, Executable, ExecuteArgs, HostTensor, ParamKind,
    ShapeSupport, SymbolBindings, WeightPlan,
};

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

fn static_shapes(options: &EngineOptions, max_context: usize) -> Result<Shapes> {
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
fn resolve_max_context(config: &ModelConfig, options: &EngineOptions) -> Result<usize> {
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

/// The prefill and decode graphs specialized to a prefill chunk and a KV bucket.
fn bind_bucket(
    prefill: &switchyard_runtime::Graph,
    decode: &switchyard_runtime::Graph,
    chunk: usize,
    bucket: usize,
) -> Result<(switchyard_runtime::Graph, switchyard_runtime::Graph)> {
    let dims = SymbolBindings::new()
        .with("t", chunk)
        .with("kv_len", bucket);
    Ok((prefill.bind(&dims)?, decode.bind(&dims)?))
}

/// One executable of a static-shape engine: an entry specialized to a KV bucket.
#[derive(Debug, Clone)]
pub struct StaticExecutable {
    /// `prefill` or `decode`.
    pub entry: &'static str,
    /// The attended KV length it was specialized to.
    pub bucket: usize,
    /// The graph, every dimension fixed.
    pub graph: switchyard_runtime::Graph,
}

/// Every executable an engine on a static-shape device compiles for `config` with `options`,
/// computing in `compute` (what `switchyard compile` exports ahead of time): per bucket, the
/// prefill graph taking a chunk and the decode graph. Returns the shapes with them.
pub fn static_executables(
    config: &ModelConfig,
    options: &EngineOptions,
    compute: DType,
) -> Result<(Shapes, Vec<StaticExecutable>)> {
    let max_context = resolve_max_context(config, options)?;
    let shapes = static_shapes(options, max_context)?;
    let Shapes::Static { chunk, buckets } = &shapes else {
        unreachable!("static_shapes gives static shapes")
    };
    let graph = |entry| {
        build_graph(
            config,
            &GraphOptions {
                entry,
                compute,
                cache_len: max_context + chunk,
                quantized: Default::default(),
            },
        )
    };
    let prefill = graph(Entry::Prefill { max_tokens: *chunk })?;
    let decode = graph(Entry::Decode)?;
    let mut out = Vec::with_capacity(2 * buckets.len());
    for &bucket in buckets {
        let (p, d) = bind_bucket(&prefill, &decode, *chunk, bucket)?;
        out.push(StaticExecutable {
            entry: "prefill",
            bucket,
            graph: p,
        });
        out.push(StaticExecutable {
            entry: "decode",
            bucket,
            graph: d,
        });
    }
    Ok((shapes, out))
}

/// What one call reads back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readback {
    /// The logits (`[vocab]` f32).
    Logits,
    /// Only the argmax token id (greedy decoding on the device).
    NextToken,
}

/// The result of one call.
enum Step {
    Logits(Vec<f32>),
    Token(u32),
}

/// A model ready to run on device `D`: weights uploaded once, prefill and decode graphs compiled
/// once. Sessions ([`Session`]) hold the per-conversation KV cache, so one engine serves many.
pub struct Engine<D: Device> {
    device: D,
    config: ModelConfig,
    compute: DType,
    max_context: usize,
    /// KV-cache positions: the context, plus room for a padded last prefill chunk.
    cache_len: usize,
    shapes: Shapes,
    weights: Vec<(String, D::Buffer)>,
    /// One per bucket on static devices, one in all on dynamic ones.
    prefill: Vec<D::Executable>,
    decode: Vec<D::Executable>,
    load_time: Duration,
    compile_time: Duration,
    weight_bytes: usize,
    /// Weights kept block-quantized, with their types.
    quantized: std::collections::BTreeMap<String, DType>,
}

/// One conversation's state on the device: the KV cache and how many positions it holds.
pub struct Session<D: Device> {
    cache: Vec<(String, D::Buffer)>,
    pos: usize,
}

impl<D: Device> Session<D> {
    /// Positions already in the cache (the next token's position).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Forgets the conversation (the cache is overwritten as new tokens arrive).
    pub fn reset(&mut self) {
        self.pos = 0;
    }
}

/// Reads weight `name` from `source`, checks its shape against `spec` and converts it to the
/// spec's dtype.
fn load_weight(
    source: &dyn WeightSource,
    arch: Arch,
    name: &str,
    spec: &switchyard_runtime::TensorSpec,
) -> Result<HostTensor> {
    let name = crate::weights::checkpoint_name(source, name, arch);
    let host = source.tensor(&name)?;
    let file = std::path::PathBuf::from(source.origin(&name));
    let expected = spec.shape.fixed_dims().expect("weights have fixed shapes");
    if host.dims() != expected.as_slice() {
        return Err(ModelError::TensorShape {
            name: name.into_owned(),
            file,
            expected,
            got: host.dims().to_vec(),
        });
    }
    if host.dtype() == spec.dtype {
        Ok(host)
    } else if host.dtype().is_float() {
        Ok(host.to_dtype(spec.dtype)?)
    } else {
        Err(ModelError::TensorDType {
            name: name.into_owned(),
            file,
            dtype: host.dtype().to_string(),
        })
    }
}

/// The weights `source` stores block-quantized, kept so on the device (which must support their
/// types).
fn quantized_weights(
    config: &ModelConfig,
    source: &dyn WeightSource,
    compute: DType,
    info: &switchyard_runtime::DeviceInfo,
) -> Result<std::collections::BTreeMap<String, DType>> {
    let probe = build_graph(
        config,
        &GraphOptions {
            entry: Entry::Decode,
            compute,
            cache_len: 1,
            quantized: Default::default(),
        },
    )?;
    let mut out = std::collections::BTreeMap::new();
    for p in probe.signature().params {
        if p.kind != ParamKind::Weight {
            continue;
        }
        let stored = source.stored_dtype(&crate::weights::checkpoint_name(
            source,
            &p.name,
            config.arch,
        ));
        if let Some(q) = stored.filter(|d| d.is_quantized()) {
            if !info.quantized.contains(&q) {
                return Err(ModelError::InvalidOption {
                    option: "--model",
                    message: format!(
                        "weight '{}' is {q}, which {} cannot compute with (it takes {})",
                        p.name,
                        info.display_name(),
                        if info.quantized.is_empty() {
                            "no block-quantized weights: use an f32/f16/bf16 model".to_string()
                        } else {
                            info.quantized
                                .iter()
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                });
            }
            out.insert(p.name, q);
        }
    }
    Ok(out)
}

impl<D: Device> Engine<D> {
    /// Uploads the weights from `source` (each one the graphs for `config` declare) to `device`
    /// and compiles the prefill and decode graphs.
    pub fn new(
        device: D,
        config: &ModelConfig,
        source: &dyn WeightSource,
        options: &EngineOptions,
    ) -> Result<Self> {
        let info = device.info();
        let compute = match options.dtype {
            Some(d) => d,
            None if info.kind == DeviceKind::Cpu || info.emulated => DType::F32,
            None => config.torch_dtype.unwrap_or(DType::F32),
        };
        if !info.dtypes.contains(&compute) {
            return Err(ModelError::InvalidOption {
                option: "--dtype",
                message: format!("{} does not compute in {compute}", info.display_name()),
            });
        }
        let max_context = resolve_max_context(config, options)?;
        let shapes = match info.shape_support {
            ShapeSupport::Dynamic => Shapes::Dynamic,
            ShapeSupport::Static => static_shapes(options, max_context)?,
        };
        let cache_len = match &shapes {
            Shapes::Dynamic => max_context,
            Shapes::Static { chunk, .. } => max_context + chunk,
        };
        let quantized = quantized_weights(config, source, compute, info)?;
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
        let prefill_graph = graph(Entry::Prefill {
            max_tokens: match &shapes {
                Shapes::Dynamic => max_context,
                Shapes::Static { chunk, .. } => *chunk,
            },
        })?;
        let decode_graph = graph(Entry::Decode)?;

        let start = Instant::now();
        let plans: Vec<WeightPlan> = prefill_graph
            .signature()
            .params
            .into_iter()
            .filter(|p| p.kind == ParamKind::Weight)
            .map(|p| WeightPlan {
                uses: prefill_graph.uses_of(prefill_graph.param(&p.name).expect("declared")),
                name: p.name,
                spec: p.spec,
            })
            .collect();
        let mut weight_bytes = 0;
        // The loader's own errors (missing tensor, shape) are kept here and reported as they are.
        let mut load_error: Option<ModelError> = None;
        let mut fetch = |i: usize| -> switchyard_runtime::Result<HostTensor> {
            let p = &plans[i];
            match load_weight(source, config.arch, &p.name, &p.spec) {
                Ok(host) => {
                    weight_bytes += host.as_bytes().len();
                    Ok(host)
                }
                Err(e) => {
                    let message = e.to_string();
                    load_error = Some(e);
                    Err(switchyard_runtime::Error::exec("load", message))
                }
            }
        };
        let uploaded = match device.upload_weights(&plans, &mut fetch) {
            Ok(buffers) => plans
                .iter()
                .map(|p| p.name.clone())
                .zip(buffers)
                .collect::<Vec<_>>(),
            Err(e) => return Err(load_error.unwrap_or(ModelError::Runtime(e))),
        };
        device.synchronize()?;
        let load_time = start.elapsed();

        let start = Instant::now();
        let compile_options = Default::default();
        let (prefill, decode) = match &shapes {
            Shapes::Dynamic => (
                vec![device.compile(&prefill_graph, &compile_options)?],
                vec![device.compile(&decode_graph, &compile_options)?],
            ),
            Shapes::Static { chunk, buckets } => {
                let mut p = Vec::with_capacity(buckets.len());
                let mut d = Vec::with_capacity(buckets.len());
                for &b in buckets {
                    let (prefill, decode) = bind_bucket(&prefill_graph, &decode_graph, *chunk, b)?;
                    p.push(device.compile(&prefill, &compile_options)?);
                    d.push(device.compile(&decode, &compile_options)?);
                }
                (p, d)
            }
        };
        let compile_time = start.elapsed();
        Ok(Engine {
            device,
            config: config.clone(),
            compute,
            max_context,
            cache_len,
            shapes,
            weights: uploaded,
            prefill,
            decode,
            load_time,
            compile_time,
            weight_bytes,
            quantized,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The model's config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.compute
    }

    /// The longest prompt plus generation a session can hold.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// How the graphs were compiled (dynamic, or chunk and buckets).
    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }

    /// Time spent reading, converting and uploading weights.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Time spent compiling the graphs.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// How the weights are stored: each type with its number of tensors, e.g. `q8_0 ×154,
    /// f32 ×61` (block-quantized first).
    pub fn weight_types(&self) -> String {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for q in self.quantized.values() {
            *counts.entry(q.to_string()).or_default() += 1;
        }
        let rest = self.weights.len() - self.quantized.len();
        let mut parts: Vec<String> = counts.iter().map(|(t, n)| format!("{t} ×{n}")).collect();
        if rest > 0 {
            parts.push(format!("{} ×{rest}", self.compute));
        }
        parts.join(", ")
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// A new session with a zeroed KV cache at the full context length, allocated once.
    pub fn new_session(&self) -> Result<Session<D>> {
        let c = &self.config;
        let dims = [1, self.cache_len, c.num_kv_heads, c.head_dim];
        let mut cache = Vec::with_capacity(2 * c.num_layers);
        for layer in 0..c.num_layers {
            for which in ['k', 'v'] {
                cache.push((
                    kv_state_name(layer, which),
                    self.device.allocate(self.compute, &dims)?,
                ));
            }
        }
        Ok(Session { cache, pos: 0 })
    }

    fn check_tokens(&self, session: &Session<D>, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::InvalidOption {
                option: "prompt",
                message: "no tokens to process".into(),
            });
        }
        if session.pos + tokens.len() > self.max_context {
            return Err(ModelError::PromptTooLong {
                tokens: session.pos + tokens.len(),
                max_context: self.max_context,
            });
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(ModelError::InvalidOption {
                option: "token id",
                message: format!(
                    "{bad} is outside the vocabulary (size {})",
                    self.config.vocab_size
                ),
            });
        }
        Ok(())
    }

    /// One execution: `tokens` (at most one chunk on static devices) at the session's position.
    fn call(
        &self,
        prefill: bool,
        session: &mut Session<D>,
        tokens: &[u32],
        readback: Readback,
    ) -> Result<Step> {
        let n = tokens.len();
        let start = session.pos;
        let (exe, width, kv_len) = match &self.shapes {
            Shapes::Dynamic => {
                let exe = if prefill {
                    &self.prefill[0]
                } else {
                    &self.decode[0]
                };
                (exe, n, Some(start + n))
            }
            Shapes::Static { chunk, buckets } => {
                let b = buckets
                    .iter()
                    .position(|&b| b >= start + n)
                    .expect("check_tokens keeps positions within the largest bucket");
                let exe = if prefill {
                    &self.prefill[b]
                } else {
                    &self.decode[b]
                };
                (exe, if prefill { *chunk } else { 1 }, None)
            }
        };
        // Padding rows repeat token 0 at the following positions (clamped to the model's range);
        // their keys land past the real ones and are overwritten before any query can see them.
        let mut padded = tokens.to_vec();
        padded.resize(width, 0);
        let max_pos = self.config.max_position_embeddings as i32 - 1;
        let positions: Vec<i32> = (start..start + width)
            .map(|p| (p as i32).min(max_pos))
            .collect();
        let tok = self
            .device
            .upload(&HostTensor::from_u32(&[1, width], &padded)?)?;
        let pos = self
            .device
            .upload(&HostTensor::from_i32(&[width], &positions)?)?;
        let last = if prefill {
            Some(
                self.device
                    .upload(&HostTensor::from_u32(&[1], &[n as u32 - 1])?)?,
            )
        } else {
            None
        };
        let mut args = ExecuteArgs::new()
            .inputs_from(self.weights.iter().map(|(n, b)| (n.as_str(), b)))
            .input("tokens", &tok)
            .input("positions", &pos)
            .states_from(session.cache.iter_mut().map(|(n, b)| (n.as_str(), b)));
        if let Some(l) = &last {
            args = args.input("last_index", l);
        }
        if let Some(kv) = kv_len {
            args = args.dim("kv_len", kv);
        }
        let out = self.device.execute(exe, args)?;
        session.pos = start + n;
        Ok(match readback {
            Readback::Logits => {
                debug_assert_eq!(out[0].dims(), &[1, self.config.vocab_size]);
                Step::Logits(self.device.download(&out[0])?.to_f32_vec()?)
            }
            Readback::NextToken => Step::Token(self.device.download(&out[1])?.to_u32_vec()?[0]),
        })
    }

    /// Prefill in as many calls as the shapes need; the last call's readback.
    fn prefill_with(
        &self,
        session: &mut Session<D>,
        tokens: &[u32],
        readback: Readback,
    ) -> Result<Step> {
        self.check_tokens(session, tokens)?;
        let per_call = match &self.shapes {
            Shapes::Dynamic => tokens.len(),
            Shapes::Static { chunk, .. } => *chunk,
        };
        let mut last = None;
        let chunks: Vec<&[u32]> = tokens.chunks(per_call).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let rb = if i + 1 == chunks.len() {
                readback
            } else {
                Readback::NextToken
            };
            last = Some(self.call(true, session, chunk, rb)?);
        }
        Ok(last.expect("at least one token"))
    }

    /// Runs `tokens` through the model at the session's position and returns the logits of the
    /// last one.
    pub fn prefill(&self, session: &mut Session<D>, tokens: &[u32]) -> Result<Vec<f32>> {
        match self.prefill_with(session, tokens, Readback::Logits)? {
            Step::Logits(l) => Ok(l),
            Step::Token(_) => unreachable!("asked for logits"),
        }
    }

    /// Like [`Engine::prefill`], but returns only the most likely next token, chosen on the
    /// device (nothing vocabulary-sized is read back).
    pub fn prefill_greedy(&self, session: &mut Session<D>, tokens: &[u32]) -> Result<u32> {
        match self.prefill_with(session, tokens, Readback::NextToken)? {
            Step::Token(t) => Ok(t),
            Step::Logits(_) => unreachable!("asked for a token"),
        }
    }

    /// Runs one token at the session's position and returns its logits.
    pub fn decode(&self, session: &mut Session<D>, token: u32) -> Result<Vec<f32>> {
        self.check_tokens(session, &[token])?;
        match self.call(false, session, &[token], Readback::Logits)? {
            Step::Logits(l) => Ok(l),
            Step::Token(_) => unreachable!("asked for logits"),
        }
    }

    /// Like [`Engine::decode`], but returns only the most likely next token, chosen on the device.
    pub fn decode_greedy(&self, session: &mut Session<D>, token: u32) -> Result<u32> {
        self.check_tokens(session, &[token])?;
        match self.call(false, session, &[token], Readback::NextToken)? {
            Step::Token(t) => Ok(t),
            Step::Logits(_) => unreachable!("asked for a token"),
        }
    }

    /// Fingerprints of the compiled executables (prefill ones first; they never change after
    /// `new`).
    pub fn executable_fingerprints(&self) -> Vec<&str> {
        self.prefill
            .iter()
            .chain(&self.decode)
            .map(|e| e.fingerprint())
            .collect()
    }
}
