//! The engine: a model's weights on a device, its graphs compiled once, and sessions that own a
//! KV cache.

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::graph::{build_graph, kv_state_name, Entry, GraphOptions};
use crate::weights::WeightSource;
use std::time::{Duration, Instant};
use switchyard_runtime::{
    DType, Device, DeviceBuffer, Executable, ExecuteArgs, HostTensor, ParamKind, ShapeSupport,
    WeightPlan,
};

/// How to place a model on a device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineOptions {
    /// Compute dtype; default f32 on the CPU (candle's bf16 CPU matmul is slow), the checkpoint's
    /// dtype elsewhere.
    pub dtype: Option<DType>,
    /// KV-cache length; default the model's `max_position_embeddings`, capped at 4096.
    pub max_context: Option<usize>,
}

/// Default cap on the KV-cache length when the user does not choose one.
pub const DEFAULT_MAX_CONTEXT: usize = 4096;

/// A model ready to run on device `D`: weights uploaded once, prefill and decode graphs compiled
/// once. Sessions ([`Session`]) hold the per-conversation KV cache, so one engine serves many.
pub struct Engine<D: Device> {
    device: D,
    config: ModelConfig,
    compute: DType,
    max_context: usize,
    weights: Vec<(String, D::Buffer)>,
    prefill: D::Executable,
    decode: D::Executable,
    load_time: Duration,
    compile_time: Duration,
    weight_bytes: usize,
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
    let name = checkpoint_name(source, name, arch);
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

/// The checkpoint name of a graph weight (GPT-2 checkpoints may prefix `transformer.`).
fn checkpoint_name<'a>(
    source: &dyn WeightSource,
    name: &'a str,
    arch: Arch,
) -> std::borrow::Cow<'a, str> {
    if arch == Arch::Gpt2 && !source.contains(name) {
        let prefixed = format!("transformer.{name}");
        if source.contains(&prefixed) {
            return prefixed.into();
        }
    }
    name.into()
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
        if info.shape_support == ShapeSupport::Static {
            return Err(ModelError::Runtime(
                switchyard_runtime::Error::Unsupported {
                    device: info.display_name(),
                    what: "models on static-shape devices (bucketed executables are not built yet)"
                        .into(),
                },
            ));
        }
        let compute = match options.dtype {
            Some(d) => d,
            None if info.name == "cpu" => DType::F32,
            None => config.torch_dtype.unwrap_or(DType::F32),
        };
        if !info.dtypes.contains(&compute) {
            return Err(ModelError::InvalidOption {
                option: "--dtype",
                message: format!("{} does not compute in {compute}", info.display_name()),
            });
        }
        let max_context = options
            .max_context
            .unwrap_or(config.max_position_embeddings.min(DEFAULT_MAX_CONTEXT));
        let graph = |entry| {
            build_graph(
                config,
                &GraphOptions {
                    entry,
                    compute,
                    max_context,
                },
            )
        };
        let prefill_graph = graph(Entry::Prefill {
            max_tokens: max_context,
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
        let options = Default::default();
        let prefill = device.compile(&prefill_graph, &options)?;
        let decode = device.compile(&decode_graph, &options)?;
        let compile_time = start.elapsed();
        Ok(Engine {
            device,
            config: config.clone(),
            compute,
            max_context,
            weights: uploaded,
            prefill,
            decode,
            load_time,
            compile_time,
            weight_bytes,
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

    /// The KV-cache length (the longest prompt plus generation a session can hold).
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Time spent reading, converting and uploading weights.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Time spent compiling the graphs.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// A new session with a zeroed KV cache at the full context length.
    pub fn new_session(&self) -> Result<Session<D>> {
        let c = &self.config;
        let dims = [1, self.max_context, c.num_kv_heads, c.head_dim];
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

    fn run(
        &self,
        exe: &D::Executable,
        session: &mut Session<D>,
        tokens: &[u32],
        last_index: Option<u32>,
    ) -> Result<Vec<f32>> {
        let n = tokens.len();
        let start = session.pos;
        if n == 0 {
            return Err(ModelError::InvalidOption {
                option: "prompt",
                message: "no tokens to process".into(),
            });
        }
        if start + n > self.max_context {
            return Err(ModelError::PromptTooLong {
                tokens: start + n,
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
        let positions: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        let tok = self
            .device
            .upload(&HostTensor::from_u32(&[1, n], tokens)?)?;
        let pos = self
            .device
            .upload(&HostTensor::from_i32(&[n], &positions)?)?;
        let last = match last_index {
            Some(i) => Some(self.device.upload(&HostTensor::from_u32(&[1], &[i])?)?),
            None => None,
        };
        let mut args = ExecuteArgs::new()
            .inputs_from(self.weights.iter().map(|(n, b)| (n.as_str(), b)))
            .input("tokens", &tok)
            .input("positions", &pos)
            .states_from(session.cache.iter_mut().map(|(n, b)| (n.as_str(), b)))
            .dim("kv_len", start + n);
        if let Some(l) = &last {
            args = args.input("last_index", l);
        }
        let out = self.device.execute(exe, args)?;
        session.pos = start + n;
        let logits = self.device.download(&out[0])?;
        debug_assert_eq!(out[0].dims(), &[1, self.config.vocab_size]);
        Ok(logits.to_f32_vec()?)
    }

    /// Runs `tokens` through the model at the session's position and returns the logits of the
    /// last one.
    pub fn prefill(&self, session: &mut Session<D>, tokens: &[u32]) -> Result<Vec<f32>> {
        let last = tokens.len().saturating_sub(1) as u32;
        self.run(&self.prefill, session, tokens, Some(last))
    }

    /// Runs one token at the session's position and returns its logits.
    pub fn decode(&self, session: &mut Session<D>, token: u32) -> Result<Vec<f32>> {
        self.run(&self.decode, session, &[token], None)
    }

    /// Fingerprints of the compiled prefill and decode graphs (they never change after `new`).
    pub fn executable_fingerprints(&self) -> [&str; 2] {
        [self.prefill.fingerprint(), self.decode.fingerprint()]
    }
}
