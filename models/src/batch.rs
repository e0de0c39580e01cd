//! Many sequences at once: a KV pool of sequence slots allocated once on the device, and steps
//! that advance every running sequence in one call.
//!
//! A [`Batch`] is what a server drives: [`Batch::add`] admits a sequence into a free slot,
//! [`Batch::step`] runs one call — every decoding sequence's next token, plus prompt tokens of
//! sequences still prefilling up to the step's token budget, so a long prompt holds the others
//! back by at most one budget — and returns each sequence's new token; a sequence that stops
//! (end of sequence, stop string, token limit, context) frees its slot at once, and
//! [`Batch::cancel`] frees one early. Each sequence has its own sampling parameters, seed, stop
//! strings and token limit; greedy sequences take the argmax on the device, so only ids cross
//! the bus when every row of a step is greedy.
//!
//! ```no_run
//! use switchyard_models::{BatchOptions, Engine, SequenceParams};
//! use switchyard_runtime::Device;
//!
//! fn run<D: Device>(engine: &Engine<D>) -> switchyard_models::Result<()> {
//!     let options = BatchOptions { slots: Some(4), ..Default::default() };
//!     let mut batch = engine.batch(None, &options)?;
//!     batch.add(vec![1, 2, 3], SequenceParams::default())?;
//!     batch.add(vec![4, 5], SequenceParams::default())?;
//!     while batch.has_work() {
//!         for event in batch.step()? {
//!             println!("{:?} -> {} {:?}", event.id, event.token, event.finished);
//!         }
//!     }
//!     Ok(())
//! }
//! ```

use crate::engine::{BoundExecutable, Engine, Slot};
use crate::error::{ModelError, Result};
use crate::generate::{StopReason, Streamer};
use crate::plan::EngineOptions;
use crate::pool_plan::{plan_pool, BatchOptions, PoolShapes};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use std::time::{Duration, Instant};
use switchyard_runtime::{DType, Device, DeviceBuffer, ExecuteArgs, HostTensor};

/// Identifies a sequence of a batch (never reused within the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId(pub u64);

/// How one sequence generates and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceParams {
    /// Most tokens to generate (at least 1).
    pub max_new_tokens: usize,
    /// How to choose each token (its own seed).
    pub sampling: SamplingParams,
    /// Tokens that end the sequence.
    pub eos_token_ids: Vec<u32>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Texts that end the sequence (needs the batch's tokenizer; excluded from the text).
    pub stop_strings: Vec<String>,
    /// Return each step's logits in the events (read back from the device).
    pub return_logits: bool,
}

impl Default for SequenceParams {
    fn default() -> Self {
        SequenceParams {
            max_new_tokens: 128,
            sampling: SamplingParams::default(),
            eos_token_ids: Vec::new(),
            ignore_eos: false,
            stop_strings: Vec::new(),
            return_logits: false,
        }
    }
}

impl SequenceParams {
    /// Whether the device's argmax is this sequence's next token.
    fn greedy_on_device(&self) -> bool {
        self.sampling.temperature == 0.0 && self.sampling.unpenalized() && !self.return_logits
    }
}

/// One sequence's new token from a step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    /// The sequence.
    pub id: SequenceId,
    /// The token generated.
    pub token: u32,
    /// Text now final (empty without a tokenizer, or while it may begin a stop string).
    pub text: String,
    /// The logits the token was chosen from, when the sequence asked for them.
    pub logits: Option<Vec<f32>>,
    /// Set when the sequence ended with this token; its slot is already free.
    pub finished: Option<StopReason>,
}

/// What one step ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Decoding sequences advanced by one token.
    pub decode_rows: usize,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Tokens in the call, padding included (static-shape devices pad to a bucket).
    pub width: usize,
}

struct Sequence<'t> {
    id: SequenceId,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// Positions in the cache.
    cached: usize,
    /// The last generated token, not yet in the cache.
    pending: Option<u32>,
    generated: usize,
    /// Prompt and generated tokens (for the repetition penalty).
    context: Vec<u32>,
    sampler: Sampler,
    params: SequenceParams,
    streamer: Streamer<'t>,
}

/// The step inputs of one width on a static-shape device, written in place each step.
struct StepInputs<B> {
    width: usize,
    tokens: B,
    positions: B,
    slots: B,
    rows: B,
}

/// Sequences of one engine advancing together, each in its own slot of a KV pool on the device
/// (see the module documentation).
pub struct Batch<'e, D: Device> {
    engine: &'e Engine<D>,
    tokenizer: Option<&'e Tokenizer>,
    shapes: PoolShapes,
    slots: usize,
    step_tokens: usize,
    max_context: usize,
    pool_bytes: u64,
    /// Dynamic: one. Static: token-major over the buckets.
    exes: Vec<BoundExecutable<D::Executable>>,
    /// Keys and values of every layer, `[pool slots, context, kv heads, head dim]` each.
    pool: Vec<D::Buffer>,
    /// By slot.
    sequences: Vec<Option<Sequence<'e>>>,
    next_id: u64,
    inputs: Vec<StepInputs<D::Buffer>>,
    compile_time: Duration,
    last: StepStats,
}

impl<D: Device> Engine<D> {
    /// A batch on this engine's device: plans and allocates the KV pool (its size from
    /// `options`, the engine's context and the device's free memory) and compiles the graphs
    /// that advance many sequences per call. `tokenizer` turns tokens into text and enables
    /// stop strings.
    pub fn batch<'e>(
        &'e self,
        tokenizer: Option<&'e Tokenizer>,
        options: &BatchOptions,
    ) -> Result<Batch<'e, D>> {
        let engine_options = EngineOptions {
            max_context: Some(self.max_context()),
            ..self.options.clone()
        };
        let info = self.device.info();
        let plan = plan_pool(
            &self.config,
            &engine_options,
            options,
            self.compute,
            &self.quantized,
            info,
        )?;
        let start = Instant::now();
        let compile_options = Default::default();
        let mut exes = Vec::with_capacity(plan.executables.len());
        for e in &plan.executables {
            let exe = self.device.compile(&e.graph, &compile_options)?;
            exes.push(BoundExecutable::new(
                exe,
                &self.weight_names,
                &self.state_names,
            )?);
        }
        let compile_time = start.elapsed();
        let c = &self.config;
        let dims = [
            plan.pool_slots,
            plan.max_context,
            c.num_kv_heads,
            c.head_dim,
        ];
        let pool = self
            .state_names
            .iter()
            .map(|_| self.device.allocate(self.compute, &dims))
            .collect::<switchyard_runtime::Result<Vec<_>>>()?;
        Ok(Batch {
            engine: self,
            tokenizer,
            shapes: plan.shapes,
            slots: plan.slots,
            step_tokens: plan.step_tokens,
            max_context: plan.max_context,
            pool_bytes: plan.pool_bytes,
            exes,
            pool,
            sequences: (0..plan.slots).map(|_| None).collect(),
            next_id: 0,
            inputs: Vec::new(),
            compile_time,
            last: StepStats::default(),
        })
    }
}

impl<'e, D: Device> Batch<'e, D> {
    /// Sequences the batch holds at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots without a sequence.
    pub fn free_slots(&self) -> usize {
        self.sequences.iter().filter(|s| s.is_none()).count()
    }

    /// Sequences running (prefilling or decoding).
    pub fn active(&self) -> usize {
        self.slots - self.free_slots()
    }

    /// Whether a step would do anything.
    pub fn has_work(&self) -> bool {
        self.active() > 0
    }

    /// Tokens per step.
    pub fn step_tokens(&self) -> usize {
        self.step_tokens
    }

    /// Positions each slot holds (prompt plus generated tokens).
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Bytes of the KV pool on the device.
    pub fn pool_bytes(&self) -> u64 {
        self.pool_bytes
    }

    /// How the batch's graphs were compiled.
    pub fn shapes(&self) -> &PoolShapes {
        &self.shapes
    }

    /// Time spent compiling the batch's graphs.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// What the last step ran.
    pub fn last_step(&self) -> &StepStats {
        &self.last
    }

    /// Admits a sequence with `prompt` into a free slot. Fails without changing anything when
    /// no slot is free ([`ModelError::NoFreeSlot`]), the prompt is empty, too long or holds an id
    /// outside the vocabulary, or `params` are invalid.
    pub fn add(&mut self, prompt: Vec<u32>, params: SequenceParams) -> Result<SequenceId> {
        let sampler = Sampler::new(params.sampling.clone())?;
        if prompt.is_empty() {
            return Err(ModelError::InvalidOption {
                option: "prompt",
                message: "the prompt has no tokens".into(),
            });
        }
        if params.max_new_tokens == 0 {
            return Err(ModelError::InvalidOption {
                option: "--max-new-tokens",
                message: "a sequence in a batch generates at least one token".into(),
            });
        }
        let vocab = self.engine.config.vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::InvalidOption {
                option: "token id",
                message: format!("{bad} is outside the vocabulary (size {vocab})"),
            });
        }
        if prompt.len() > self.max_context {
            return Err(ModelError::PromptTooLong {
                tokens: prompt.len(),
                max_context: self.max_context,
            });
        }
        if let PoolShapes::Static { kv_buckets, .. } = &self.shapes {
            let needed = prompt.len() + params.max_new_tokens - 1;
            if needed > self.max_context {
                return Err(ModelError::InvalidOption {
                    option: "--max-new-tokens",
                    message: format!(
                        "the prompt ({} tokens) plus {} new tokens needs {needed} positions, but the largest bucket compiled for {} holds {} (buckets {kv_buckets:?})",
                        prompt.len(),
                        params.max_new_tokens,
                        self.engine.device.info().display_name(),
                        self.max_context
                    ),
                });
            }
        }
        let Some(slot) = self.sequences.iter().position(Option::is_none) else {
            return Err(ModelError::NoFreeSlot { slots: self.slots });
        };
        let id = SequenceId(self.next_id);
        self.next_id += 1;
        self.sequences[slot] = Some(Sequence {
            id,
            context: prompt.clone(),
            prompt,
            fed: 0,
            cached: 0,
            pending: None,
            generated: 0,
            sampler,
            streamer: Streamer::new(self.tokenizer, params.stop_strings.clone()),
            params,
        });
        Ok(id)
    }

    /// Ends sequence `id` now and frees its slot; false when it is not in the batch (finished,
    /// cancelled or never added).
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        match self
            .sequences
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.id == id))
        {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }

    /// Whether sequence `id` is in the batch.
    pub fn contains(&self, id: SequenceId) -> bool {
        self.sequences.iter().flatten().any(|s| s.id == id)
    }

    /// One call on the device: every decoding sequence's pending token, then prompt tokens of
    /// prefilling sequences (oldest first) up to the step budget. Returns the new token of each
    /// sequence that produced one (a decoding sequence, or one whose prompt completed).
    pub fn step(&mut self) -> Result<Vec<TokenEvent>> {
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut slot_ids = Vec::new();
        // (slot, token row) of each token whose logits are wanted.
        let mut wanted: Vec<(usize, usize)> = Vec::new();
        for (slot, s) in self.sequences.iter().enumerate() {
            if let Some(seq) = s {
                if let Some(t) = seq.pending {
                    wanted.push((slot, tokens.len()));
                    tokens.push(t);
                    positions.push(seq.cached as i32);
                    slot_ids.push(slot as i32);
                }
            }
        }
        let decode_rows = tokens.len();
        let mut prefilling: Vec<(SequenceId, usize)> = self
            .sequences
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                s.as_ref()
                    .filter(|s| s.fed < s.prompt.len())
                    .map(|s| (s.id, slot))
            })
            .collect();
        prefilling.sort();
        let mut fed: Vec<(usize, usize)> = Vec::new();
        for (_, slot) in prefilling {
            let budget = self.step_tokens - tokens.len();
            if budget == 0 {
                break;
            }
            let seq = self.sequences[slot].as_ref().expect("listed above");
            let n = budget.min(seq.prompt.len() - seq.fed);
            for i in 0..n {
                tokens.push(seq.prompt[seq.fed + i]);
                positions.push((seq.cached + i) as i32);
                slot_ids.push(slot as i32);
            }
            if seq.fed + n == seq.prompt.len() {
                wanted.push((slot, tokens.len() - 1));
            }
            fed.push((slot, n));
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let greedy = wanted.iter().all(|&(slot, _)| {
            self.sequences[slot]
                .as_ref()
                .is_some_and(|s| s.params.greedy_on_device())
        });
        let out = self.execute(&tokens, &positions, &slot_ids, &wanted, greedy)?;
        self.last = StepStats {
            decode_rows,
            prompt_tokens: tokens.len() - decode_rows,
            width: out.width,
        };
        for &(slot, _) in &wanted[..decode_rows] {
            let seq = self.sequences[slot].as_mut().expect("decoding");
            seq.pending = None;
            seq.cached += 1;
        }
        for (slot, n) in fed {
            let seq = self.sequences[slot].as_mut().expect("prefilling");
            seq.fed += n;
            seq.cached += n;
        }
        let vocab = self.engine.config.vocab_size;
        let mut events = Vec::with_capacity(wanted.len());
        for (row, &(slot, _)) in wanted.iter().enumerate() {
            let seq = self.sequences[slot].as_mut().expect("in the step");
            let (token, logits) = match &out.values {
                Readback::Ids(ids) => (ids[row], None),
                Readback::Logits(l) => {
                    let l = &l[row * vocab..(row + 1) * vocab];
                    let generated = &seq.context[seq.prompt.len()..];
                    let token = seq.sampler.sample_after(l, &seq.context, generated)?;
                    (token, seq.params.return_logits.then(|| l.to_vec()))
                }
            };
            seq.generated += 1;
            seq.context.push(token);
            let (mut text, hit_stop) = seq.streamer.push(token)?;
            let p = &seq.params;
            let finished = if hit_stop {
                Some(StopReason::StopString)
            } else if !p.ignore_eos && p.eos_token_ids.contains(&token) {
                Some(StopReason::Eos)
            } else if seq.generated >= p.max_new_tokens {
                Some(StopReason::MaxTokens)
            } else if seq.cached >= self.max_context {
                Some(StopReason::ContextLimit)
            } else {
                None
            };
            match finished {
                Some(StopReason::StopString) => {}
                Some(_) => text.push_str(&seq.streamer.flush()?),
                None => seq.pending = Some(token),
            }
            events.push(TokenEvent {
                id: seq.id,
                token,
                text,
                logits,
                finished: finished.clone(),
            });
            if finished.is_some() {
                self.sequences[slot] = None;
            }
        }
        Ok(events)
    }

    /// Runs one call with the step's tokens, padded on static-shape devices, and reads back the
    /// wanted rows' ids or logits.
    fn execute(
        &mut self,
        tokens: &[u32],
        positions: &[i32],
        slot_ids: &[i32],
        wanted: &[(usize, usize)],
        greedy: bool,
    ) -> Result<Executed> {
        let n = tokens.len();
        let seen = positions.iter().max().map_or(1, |&p| p as usize + 1);
        let (exe_index, width, rows, kv_len) = match &self.shapes {
            PoolShapes::Dynamic => (0, n, wanted.len().max(1), Some(seen)),
            PoolShapes::Static {
                token_buckets,
                kv_buckets,
            } => {
                let t = token_buckets
                    .iter()
                    .position(|&b| b >= n)
                    .expect("a step never exceeds the budget, the largest bucket");
                let k = kv_buckets
                    .iter()
                    .position(|&b| b >= seen)
                    .expect("add keeps positions within the context, the largest bucket");
                let width = token_buckets[t];
                (t * kv_buckets.len() + k, width, width.min(self.slots), None)
            }
        };
        // Padding rows write the scratch slot (the pool's last) at position 0 and are never read.
        let scratch = self.slots as i32;
        let mut host_tokens = tokens.to_vec();
        host_tokens.resize(width, 0);
        let mut host_positions = positions.to_vec();
        host_positions.resize(width, 0);
        let mut host_slots = slot_ids.to_vec();
        host_slots.resize(width, scratch);
        let mut host_rows: Vec<u32> = wanted.iter().map(|&(_, r)| r as u32).collect();
        host_rows.resize(rows, 0);
        let host = [
            HostTensor::from_u32(&[1, width], &host_tokens)?,
            HostTensor::from_i32(&[width], &host_positions)?,
            HostTensor::from_i32(&[width], &host_slots)?,
            HostTensor::from_u32(&[rows], &host_rows)?,
        ];
        let device = &self.engine.device;
        let fresh;
        let inputs = match self.shapes {
            PoolShapes::Static { .. } => {
                let i = match self.inputs.iter().position(|s| s.width == width) {
                    Some(i) => i,
                    None => {
                        self.inputs.push(StepInputs {
                            width,
                            tokens: device.allocate(DType::U32, &[1, width])?,
                            positions: device.allocate(DType::I32, &[width])?,
                            slots: device.allocate(DType::I32, &[width])?,
                            rows: device.allocate(DType::U32, &[rows])?,
                        });
                        self.inputs.len() - 1
                    }
                };
                let s = &mut self.inputs[i];
                device.write(&mut s.tokens, &host[0])?;
                device.write(&mut s.positions, &host[1])?;
                device.write(&mut s.slots, &host[2])?;
                device.write(&mut s.rows, &host[3])?;
                &self.inputs[i]
            }
            PoolShapes::Dynamic => {
                fresh = StepInputs {
                    width,
                    tokens: device.upload(&host[0])?,
                    positions: device.upload(&host[1])?,
                    slots: device.upload(&host[2])?,
                    rows: device.upload(&host[3])?,
                };
                &fresh
            }
        };
        let exe = &self.exes[exe_index];
        let mut args = ExecuteArgs::positional();
        for slot in &exe.inputs {
            args = args.arg(match *slot {
                Slot::Weight(i) => &self.engine.weights[i],
                Slot::Tokens => &inputs.tokens,
                Slot::Positions => &inputs.positions,
                Slot::SequenceSlots => &inputs.slots,
                Slot::Rows => &inputs.rows,
                Slot::LastIndex => unreachable!("pool graphs take rows, not last_index"),
            });
        }
        let mut pool: Vec<Option<&mut D::Buffer>> = self.pool.iter_mut().map(Some).collect();
        for &i in &exe.states {
            args = args.state_arg(pool[i].take().expect("a state is bound once"));
        }
        if let Some(kv) = kv_len {
            args = args.dim("kv_len", kv);
        }
        let out = device.execute(&exe.exe, args)?;
        let values = if greedy {
            let ids = device.download(&out[exe.next_token])?.to_u32_vec()?;
            Readback::Ids(ids)
        } else {
            let logits = &out[exe.logits];
            debug_assert_eq!(logits.dims(), &[rows, self.engine.config.vocab_size]);
            Readback::Logits(device.download(logits)?.to_f32_vec()?)
        };
        Ok(Executed { width, values })
    }
}

enum Readback {
    Ids(Vec<u32>),
    Logits(Vec<f32>),
}

struct Executed {
    width: usize,
    values: Readback,
}
