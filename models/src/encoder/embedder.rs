//! The embedder: an encoder's weights on a device, its graph compiled once (per batch and length
//! bucket on static-shape devices), and many texts per call.

use super::config::EncoderConfig;
use super::graph::{build_encoder_graph, EncoderGraphOptions};
use super::model::EncoderModel;
use super::pooling::Pooling;
use crate::error::{ModelError, Result};
use crate::tokenizer::Tokenizer;
use crate::upload::{check_quantized_support, read_weight, upload_declared};
use std::time::{Duration, Instant};
use switchyard_runtime::{
    DType, Device, Executable, ExecuteArgs, HostTensor, ParamKind, ShapeSupport, SymbolBindings,
};

/// Default most texts per call.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// How to place an encoder on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderOptions {
    /// Compute dtype; default the device's preference, else f32.
    pub dtype: Option<DType>,
    /// Most texts per device call (more are split into several calls).
    pub max_batch: usize,
    /// Longest input in tokens; default the model's (`max_seq_length`, else its position table).
    pub max_tokens: Option<usize>,
    /// Pooling; default the sentence-transformers directory's (required for a plain encoder).
    pub pooling: Option<Pooling>,
    /// Unit-length vectors; default whether the directory has a `Normalize` module.
    pub normalize: Option<bool>,
    /// Cut inputs longer than the limit (true), or refuse them.
    pub truncate: bool,
    /// Static-shape devices: batch sizes compiled (default 1, 4, 16, … and `max_batch`).
    pub batch_buckets: Option<Vec<usize>>,
    /// Static-shape devices: input lengths compiled (default 32, 128, 512, … and the limit).
    pub token_buckets: Option<Vec<usize>>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            dtype: None,
            max_batch: DEFAULT_MAX_BATCH,
            max_tokens: None,
            pooling: None,
            normalize: None,
            truncate: true,
            batch_buckets: None,
            token_buckets: None,
        }
    }
}

/// Where one argument of the encoder graph comes from, resolved once at compile time.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Weight(usize),
    Tokens,
    Lengths,
}

struct Compiled<E> {
    exe: E,
    /// Batch and length it is specialized to (static shapes); `None` for symbolic ones.
    shape: Option<(usize, usize)>,
    args: Vec<Arg>,
}

/// An encoder ready to embed on device `D`.
pub struct Embedder<D: Device> {
    device: D,
    config: EncoderConfig,
    compute: DType,
    pooling: Pooling,
    normalize: bool,
    max_batch: usize,
    max_tokens: usize,
    truncate: bool,
    weights: Vec<D::Buffer>,
    compiled: Vec<Compiled<D::Executable>>,
    tokenizer: Option<Tokenizer>,
    load_time: Duration,
    compile_time: Duration,
}

/// Ascending, deduplicated buckets up to `max`, always ending at `max`.
fn buckets(
    given: Option<&[usize]>,
    start: usize,
    max: usize,
    option: &'static str,
) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = match given {
        Some(b) => b.to_vec(),
        None => std::iter::successors(Some(start), |x| Some(x * 4))
            .take_while(|&x| x < max)
            .collect(),
    };
    if let Some(bad) = out.iter().find(|&&b| b == 0 || b > max) {
        return Err(ModelError::InvalidOption {
            option,
            message: format!("bucket {bad} must be between 1 and {max}"),
        });
    }
    out.sort_unstable();
    out.dedup();
    if out.last() != Some(&max) {
        out.push(max);
    }
    Ok(out)
}

impl<D: Device> Embedder<D> {
    /// Uploads `model`'s weights to `device` and compiles its graph.
    pub fn new(device: D, model: &EncoderModel, options: &EmbedderOptions) -> Result<Self> {
        let cfg = &model.config;
        let info = device.info();
        let compute = options.dtype.or(info.preferred_dtype).unwrap_or(DType::F32);
        if !info.dtypes.contains(&compute) || !compute.is_float() {
            return Err(ModelError::InvalidOption {
                option: "--dtype",
                message: format!("{} does not compute in {compute}", info.display_name()),
            });
        }
        let pooling = options
            .pooling
            .or(model.sentence.as_ref().map(|s| s.pooling))
            .ok_or_else(|| ModelError::InvalidOption {
                option: "--pooling",
                message: format!(
                    "{} is not a sentence-transformers directory (no modules.json): choose one of {}",
                    model.dir.display(),
                    Pooling::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            })?;
        let normalize = options
            .normalize
            .unwrap_or(model.sentence.as_ref().is_some_and(|s| s.normalize));
        let limit = model.max_tokens();
        let max_tokens = options.max_tokens.unwrap_or(limit);
        if max_tokens == 0 || max_tokens > cfg.max_tokens() {
            return Err(ModelError::InvalidOption {
                option: "--max-tokens",
                message: format!(
                    "{max_tokens} must be between 1 and the model's position limit ({})",
                    cfg.max_tokens()
                ),
            });
        }
        if options.max_batch == 0 {
            return Err(ModelError::InvalidOption {
                option: "--batch-size",
                message: "must be at least 1".into(),
            });
        }
        let mut graph_options = EncoderGraphOptions {
            compute,
            max_batch: options.max_batch,
            max_tokens,
            pooling,
            normalize,
            quantized: Default::default(),
        };
        // The weights the source stores block-quantized stay so (the device must take them).
        for p in build_encoder_graph(cfg, &graph_options)?.signature().params {
            if p.kind == ParamKind::Weight {
                if let Some(q) = model
                    .weights
                    .stored_dtype(&p.name)
                    .filter(|d| d.is_quantized())
                {
                    graph_options.quantized.insert(p.name, q);
                }
            }
        }
        check_quantized_support(
            &graph_options.quantized,
            &info.quantized,
            &info.display_name(),
        )?;
        let graph = build_encoder_graph(cfg, &graph_options)?;
        let shapes: Vec<Option<(usize, usize)>> = match info.shape_support {
            ShapeSupport::Dynamic => vec![None],
            ShapeSupport::Static => {
                let bs = buckets(
                    options.batch_buckets.as_deref(),
                    1,
                    options.max_batch,
                    "--batch-buckets",
                )?;
                let ts = buckets(
                    options.token_buckets.as_deref(),
                    32,
                    max_tokens,
                    "--token-buckets",
                )?;
                bs.iter()
                    .flat_map(|&b| ts.iter().map(move |&t| Some((b, t))))
                    .collect()
            }
        };

        let start = Instant::now();
        let source = model.weights.as_ref();
        let (weights, weight_names, _) = upload_declared(&device, &graph, |name, spec| {
            read_weight(source, name, spec)
        })?;
        device.synchronize()?;
        let load_time = start.elapsed();

        let start = Instant::now();
        let mut compiled = Vec::with_capacity(shapes.len());
        for shape in shapes {
            let g = match shape {
                None => graph.clone(),
                Some((b, t)) => graph.bind(&SymbolBindings::new().with("batch", b).with("t", t))?,
            };
            let exe = device.compile(&g, &Default::default())?;
            let args = exe
                .signature()
                .params
                .iter()
                .map(|p| match (p.kind, p.name.as_str()) {
                    (ParamKind::Weight, name) => Ok(Arg::Weight(
                        weight_names
                            .iter()
                            .position(|w| w == name)
                            .expect("the same graph declared it"),
                    )),
                    (ParamKind::Input, "tokens") => Ok(Arg::Tokens),
                    (ParamKind::Input, "lengths") => Ok(Arg::Lengths),
                    (_, other) => Err(ModelError::Runtime(switchyard_runtime::Error::exec(
                        "bind",
                        format!("the encoder graph's parameter '{other}' is not one the embedder provides"),
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            compiled.push(Compiled { exe, shape, args });
        }
        let compile_time = start.elapsed();
        let tokenizer = match &model.tokenizer {
            Some(t) if options.truncate => Some(t.truncating(max_tokens)?),
            Some(t) => Some(t.truncating(usize::MAX)?),
            None => None,
        };
        Ok(Embedder {
            device,
            config: cfg.clone(),
            compute,
            pooling,
            normalize,
            max_batch: options.max_batch,
            max_tokens,
            truncate: options.truncate,
            weights,
            compiled,
            tokenizer,
            load_time,
            compile_time,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Width of every embedding.
    pub fn dimensions(&self) -> usize {
        self.config.hidden_size
    }

    /// The compute dtype.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether vectors are scaled to unit length.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Most texts per device call.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Longest input in tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Time to read and upload the weights.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Time to compile the graph (every bucket).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Executables compiled (one on dynamic devices, batch × length buckets on static ones).
    pub fn executables(&self) -> usize {
        self.compiled.len()
    }

    /// Token ids of each text, with the model's special tokens, cut at the limit (or refused
    /// past it when truncation is off).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::InvalidOption {
                option: "--model",
                message: "the model has no tokenizer.json: give token ids instead of text".into(),
            })?;
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let (ids, _) = tok.encode_truncated(text)?;
                self.check_length(index, ids.len())?;
                Ok(ids)
            })
            .collect()
    }

    fn check_length(&self, index: usize, tokens: usize) -> Result<()> {
        if tokens > self.max_tokens && !self.truncate {
            return Err(ModelError::InputTooLong {
                index,
                tokens,
                max_tokens: self.max_tokens,
            });
        }
        Ok(())
    }

    /// Embeds texts (see [`Embedder::tokenize`] and [`Embedder::embed_ids`]).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids)
    }

    /// Checks token-id inputs as [`Embedder::embed_ids`] takes them: none empty, every id in
    /// the vocabulary, none over the limit when truncation is off.
    pub fn check_inputs(&self, inputs: &[Vec<u32>]) -> Result<()> {
        for (index, ids) in inputs.iter().enumerate() {
            if ids.is_empty() {
                return Err(ModelError::InvalidOption {
                    option: "input",
                    message: format!("input {index} is empty"),
                });
            }
            if let Some(&bad) = ids
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(ModelError::InvalidOption {
                    option: "input",
                    message: format!(
                        "input {index} holds token id {bad}, outside the vocabulary of {}",
                        self.config.vocab_size
                    ),
                });
            }
            self.check_length(index, ids.len())?;
        }
        Ok(())
    }

    /// Embeds token-id inputs, one vector each, in order. Inputs are grouped by length into
    /// calls of at most `max_batch`, each padded to its longest input (or bucket); an input
    /// longer than the limit is cut to it, or refused when truncation is off.
    pub fn embed_ids(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.check_inputs(inputs)?;
        // Longest first, so each call pads little; results go back in input order.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].len().min(self.max_tokens)));
        let mut out = vec![Vec::new(); inputs.len()];
        for chunk in order.chunks(self.max_batch) {
            let rows: Vec<&[u32]> = chunk
                .iter()
                .map(|&i| &inputs[i][..inputs[i].len().min(self.max_tokens)])
                .collect();
            for (&i, v) in chunk.iter().zip(self.run(&rows)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One device call for at most `max_batch` inputs of at most `max_tokens` tokens.
    fn run(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let (compiled, batch, len) = match self.compiled.first().and_then(|c| c.shape) {
            None => (&self.compiled[0], rows.len(), longest),
            Some(_) => {
                let c = self
                    .compiled
                    .iter()
                    .find(|c| {
                        c.shape
                            .is_some_and(|(b, t)| b >= rows.len() && t >= longest)
                    })
                    .expect("the largest bucket holds max_batch inputs of max_tokens");
                let (b, t) = c.shape.expect("static");
                (c, b, t)
            }
        };
        let mut tokens = vec![self.config.pad_token_id; batch * len];
        // Padding rows hold one pad token: a row with no real token would divide by zero.
        let mut lengths = vec![1u32; batch];
        for (r, ids) in rows.iter().enumerate() {
            tokens[r * len..r * len + ids.len()].copy_from_slice(ids);
            lengths[r] = ids.len() as u32;
        }
        let tokens = self
            .device
            .upload(&HostTensor::from_u32(&[batch, len], &tokens)?)?;
        let lengths = self
            .device
            .upload(&HostTensor::from_u32(&[batch], &lengths)?)?;
        let mut args = ExecuteArgs::positional();
        for a in &compiled.args {
            args = args.arg(match *a {
                Arg::Weight(i) => &self.weights[i],
                Arg::Tokens => &tokens,
                Arg::Lengths => &lengths,
            });
        }
        let out = self.device.execute(&compiled.exe, args)?;
        let host = self.device.download(&out[0])?.to_f32_vec()?;
        let h = self.config.hidden_size;
        Ok(host
            .chunks(h)
            .take(rows.len())
            .map(<[f32]>::to_vec)
            .collect())
    }
}
