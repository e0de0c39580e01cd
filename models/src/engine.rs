//! The engine: a model's weights on a device, its graphs compiled once, and sessions that own a
//! KV cache.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::graph::kv_state_name;
use crate::plan::{plan_executables, EngineOptions, EntryKind, ExecutablePlan, Shapes};
use crate::upload::{load_weight, quantized_weights, upload_declared};
use crate::weights::WeightSource;
use std::time::{Duration, Instant};
use switchyard_runtime::{
    DType, Device, DeviceBuffer, Executable, ExecuteArgs, HostTensor, ParamKind,
};

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

/// Where one argument of an executable comes from, resolved from its signature when the engine
/// is built: a step passes buffers by position and compares no names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The engine's weight set, at this index.
    Weight(usize),
    /// The step's token ids.
    Tokens,
    /// The step's positions.
    Positions,
    /// The prompt's last real row (prefill).
    LastIndex,
    /// Each token's sequence slot (pool steps).
    SequenceSlots,
    /// The tokens whose logits are wanted (pool steps).
    Rows,
}

/// An executable with its arguments and outputs resolved to positions once.
pub(crate) struct BoundExecutable<E> {
    pub(crate) exe: E,
    /// One per non-state parameter, in signature order.
    pub(crate) inputs: Vec<Slot>,
    /// One per state parameter, in signature order: the index of the buffer in a session's cache.
    pub(crate) states: Vec<usize>,
    /// Position of the `logits` output.
    pub(crate) logits: usize,
    /// Position of the `next_token` output.
    pub(crate) next_token: usize,
}

impl<E: Executable> BoundExecutable<E> {
    /// Resolves `exe`'s parameters against the engine's weight names and the cache's state names.
    pub(crate) fn new(exe: E, weights: &[String], states: &[String]) -> Result<Self> {
        let sig = exe.signature().clone();
        let unknown = |what: &str, name: &str| {
            ModelError::Runtime(switchyard_runtime::Error::exec(
                "bind",
                format!("the graph's {what} '{name}' is not one the engine provides"),
            ))
        };
        let (mut inputs, mut state_slots) = (Vec::new(), Vec::new());
        for p in &sig.params {
            match p.kind {
                ParamKind::State => state_slots.push(
                    states
                        .iter()
                        .position(|s| *s == p.name)
                        .ok_or_else(|| unknown("state", &p.name))?,
                ),
                ParamKind::Weight => inputs.push(Slot::Weight(
                    weights
                        .iter()
                        .position(|w| *w == p.name)
                        .ok_or_else(|| unknown("weight", &p.name))?,
                )),
                ParamKind::Input => inputs.push(match p.name.as_str() {
                    "tokens" => Slot::Tokens,
                    "positions" => Slot::Positions,
                    "last_index" => Slot::LastIndex,
                    "slots" => Slot::SequenceSlots,
                    "rows" => Slot::Rows,
                    other => return Err(unknown("input", other)),
                }),
            }
        }
        let output = |name: &str| {
            sig.outputs
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| unknown("output", name))
        };
        Ok(BoundExecutable {
            logits: output("logits")?,
            next_token: output("next_token")?,
            inputs,
            states: state_slots,
            exe,
        })
    }
}

/// The per-step inputs of one width, kept on the device and written in place each step, so an
/// executable that bound them keeps them bound.
struct StepInputs<B> {
    width: usize,
    tokens: B,
    positions: B,
    /// Prefill only (decode graphs have no `last_index`).
    last_index: Option<B>,
}

/// A model ready to run on device `D`: weights uploaded once, prefill and decode graphs compiled
/// once. Sessions ([`Session`]) hold the per-conversation KV cache, so one engine serves many.
pub struct Engine<D: Device> {
    pub(crate) device: D,
    pub(crate) config: ModelConfig,
    pub(crate) compute: DType,
    /// The options it was built with (a batch's pool follows them).
    pub(crate) options: EngineOptions,
    max_context: usize,
    /// KV-cache positions: the context, plus room for a padded last prefill chunk.
    cache_len: usize,
    shapes: Shapes,
    /// The weight set: uploaded once, bound to every executable by position.
    pub(crate) weights: Vec<D::Buffer>,
    /// The weights' names, in the weight set's order.
    pub(crate) weight_names: Vec<String>,
    /// The cache's state names, in the order a session holds its buffers.
    pub(crate) state_names: Vec<String>,
    /// One per bucket on static devices, one in all on dynamic ones.
    prefill: Vec<BoundExecutable<D::Executable>>,
    decode: Vec<BoundExecutable<D::Executable>>,
    load_time: Duration,
    compile_time: Duration,
    weight_bytes: usize,
    /// Weights kept block-quantized, with their types.
    pub(crate) quantized: std::collections::BTreeMap<String, DType>,
}

/// One conversation's state on the device: the KV cache, how many positions it holds, and (on
/// static-shape devices) its step inputs, allocated on first use and rewritten in place.
pub struct Session<D: Device> {
    cache: Vec<D::Buffer>,
    pos: usize,
    inputs: Vec<StepInputs<D::Buffer>>,
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
        let compute = options
            .dtype
            .or(info.preferred_dtype)
            .unwrap_or(config.torch_dtype.unwrap_or(DType::F32));
        if !info.dtypes.contains(&compute) {
            return Err(ModelError::InvalidOption {
                option: "--dtype",
                message: format!("{} does not compute in {compute}", info.display_name()),
            });
        }
        let quantized = quantized_weights(config, source, info)?;
        let plan = plan_executables(config, options, compute, &quantized, info.shape_support)?;
        let ExecutablePlan {
            shapes,
            max_context,
            cache_len,
            executables,
        } = plan;
        let prefill_graph = &executables[0].graph;

        let start = Instant::now();
        let (uploaded, weight_names, weight_bytes) =
            upload_declared(&device, prefill_graph, |name, spec| {
                load_weight(source, config.arch, name, spec)
            })?;
        let state_names: Vec<String> = (0..config.num_layers)
            .flat_map(|l| ['k', 'v'].map(|w| kv_state_name(l, w)))
            .collect();
        device.synchronize()?;
        let load_time = start.elapsed();

        let start = Instant::now();
        let compile_options = Default::default();
        let (mut prefill, mut decode) = (Vec::new(), Vec::new());
        for e in &executables {
            let exe = device.compile(&e.graph, &compile_options)?;
            match e.entry {
                EntryKind::Prefill => prefill.push(exe),
                EntryKind::Decode => decode.push(exe),
            }
        }
        let compile_time = start.elapsed();
        let bind = |exes: Vec<D::Executable>| {
            exes.into_iter()
                .map(|e| BoundExecutable::new(e, &weight_names, &state_names))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Engine {
            prefill: bind(prefill)?,
            decode: bind(decode)?,
            device,
            config: config.clone(),
            compute,
            options: options.clone(),
            weight_names,
            max_context,
            cache_len,
            shapes,
            weights: uploaded,
            state_names,
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
        let cache = self
            .state_names
            .iter()
            .map(|_| self.device.allocate(self.compute, &dims))
            .collect::<switchyard_runtime::Result<Vec<_>>>()?;
        Ok(Session {
            cache,
            pos: 0,
            inputs: Vec::new(),
        })
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
        let host = [
            HostTensor::from_u32(&[1, width], &padded)?,
            HostTensor::from_i32(&[width], &positions)?,
            HostTensor::from_u32(&[1], &[n as u32 - 1])?,
        ];
        // Static shapes: a session's inputs of each width live on the device and are rewritten
        // in place (at most two widths: the chunk and 1). Dynamic shapes: one upload per call.
        let fresh;
        let inputs: &StepInputs<D::Buffer> = match self.shapes {
            Shapes::Static { .. } => {
                let i = match session.inputs.iter().position(|s| s.width == width) {
                    Some(i) => i,
                    None => {
                        session.inputs.push(StepInputs {
                            width,
                            tokens: self.device.allocate(DType::U32, &[1, width])?,
                            positions: self.device.allocate(DType::I32, &[width])?,
                            last_index: None,
                        });
                        session.inputs.len() - 1
                    }
                };
                let s = &mut session.inputs[i];
                self.device.write(&mut s.tokens, &host[0])?;
                self.device.write(&mut s.positions, &host[1])?;
                if prefill {
                    match &mut s.last_index {
                        Some(b) => self.device.write(b, &host[2])?,
                        None => s.last_index = Some(self.device.upload(&host[2])?),
                    }
                }
                &session.inputs[i]
            }
            Shapes::Dynamic => {
                fresh = StepInputs {
                    width,
                    tokens: self.device.upload(&host[0])?,
                    positions: self.device.upload(&host[1])?,
                    last_index: if prefill {
                        Some(self.device.upload(&host[2])?)
                    } else {
                        None
                    },
                };
                &fresh
            }
        };
        let mut args = ExecuteArgs::positional();
        for slot in &exe.inputs {
            args = args.arg(match *slot {
                Slot::Weight(i) => &self.weights[i],
                Slot::Tokens => &inputs.tokens,
                Slot::Positions => &inputs.positions,
                Slot::LastIndex => inputs
                    .last_index
                    .as_ref()
                    .expect("only prefill graphs take last_index, and prefill sets it"),
                Slot::SequenceSlots | Slot::Rows => {
                    unreachable!(
                        "only pool graphs take slots and rows, and sessions never run them"
                    )
                }
            });
        }
        let mut cache: Vec<Option<&mut D::Buffer>> = session.cache.iter_mut().map(Some).collect();
        for &i in &exe.states {
            args = args.state_arg(cache[i].take().expect("a state is bound once"));
        }
        if let Some(kv) = kv_len {
            args = args.dim("kv_len", kv);
        }
        let out = self.device.execute(&exe.exe, args)?;
        session.pos = start + n;
        Ok(match readback {
            Readback::Logits => {
                let logits = &out[exe.logits];
                debug_assert_eq!(logits.dims(), &[1, self.config.vocab_size]);
                Step::Logits(self.device.download(logits)?.to_f32_vec()?)
            }
            Readback::NextToken => {
                Step::Token(self.device.download(&out[exe.next_token])?.to_u32_vec()?[0])
            }
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
            .map(|e| e.exe.fingerprint())
            .collect()
    }
}
