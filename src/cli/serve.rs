//! `switchyard serve`: command-line options of the OpenAI-compatible server.

use crate::serve::ServedModel;
use anyhow::{bail, Context, Result};
use clap::Args;
use switchyard::models::{
    BatchOptions, EmbedderOptions, EncoderModel, EngineOptions, Model, Pooling,
};

#[derive(Args)]
pub struct ServeArgs {
    /// A model directory, a .gguf file, a hub id in the local cache, or builtin:NAME. An
    /// encoder (BERT, RoBERTa, XLM-RoBERTa; a sentence-transformers directory) serves
    /// /v1/embeddings instead of completions.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    device: super::options::DeviceArg,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences served at once (KV slots; default: as many as fit, at most 16). Encoders:
    /// inputs per device call (default 32).
    #[arg(long)]
    slots: Option<usize>,
    /// Positions per sequence, prompt plus completion (default: the model's, capped at 4096).
    /// Encoders: the longest input in tokens (default: the model's max_seq_length).
    #[arg(long)]
    max_context: Option<usize>,
    /// Tokens per step: running decodes plus a chunk of prompt (default: the device's choice).
    #[arg(long)]
    step_tokens: Option<usize>,
    /// Require `Authorization: Bearer KEY` on every /v1 request.
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The model name clients send and /v1/models lists (default: --model as given).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Requests that may wait for a free slot; beyond them the server answers 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Encoders: pooling (mean, cls, lasttoken, max, mean_sqrt_len; default: the directory's).
    #[arg(long)]
    pooling: Option<String>,
    /// Encoders: refuse inputs over the limit (400) instead of truncating them.
    #[arg(long)]
    no_truncate: bool,
    /// CPU threads for the model's computation (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    engine: super::options::EngineArgs,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.api_key.as_deref() == Some("") {
        bail!("--api-key: empty (unset SWITCHYARD_API_KEY or give a key)");
    }
    if a.slots == Some(0) {
        bail!("--slots 0: at least one slot is needed");
    }
    // An encoder (BERT, RoBERTa, XLM-RoBERTa) serves /v1/embeddings; anything else generates.
    let served = if EncoderModel::is_encoder(&a.model) {
        if a.engine.quantize.is_some() {
            bail!("--quantize: encoders run with their checkpoint's float weights");
        }
        ServedModel::Encoder {
            model: Box::new(EncoderModel::load(&a.model)?),
            options: EmbedderOptions {
                dtype: a.engine.dtype()?,
                max_batch: a.slots.unwrap_or(switchyard::models::DEFAULT_MAX_BATCH),
                max_tokens: a.max_context,
                pooling: a
                    .pooling
                    .as_deref()
                    .map(|p| {
                        Pooling::from_name(p)
                            .with_context(|| format!("--pooling {p}: not a pooling mode"))
                    })
                    .transpose()?,
                truncate: !a.no_truncate,
                ..Default::default()
            },
        }
    } else {
        let mut model = Model::load(&a.model)?;
        if let Some(q) = a.engine.quantize()? {
            model = switchyard::quantize::QuantizedWeights::wrap(model, q)?;
        }
        ServedModel::Generator {
            model: Box::new(model),
            engine: EngineOptions {
                dtype: a.engine.dtype()?,
                max_context: a.max_context,
                prefill_chunk: a.engine.prefill_chunk,
                kv_buckets: a.engine.buckets.clone(),
            },
            batch: BatchOptions {
                slots: a.slots,
                step_tokens: a.step_tokens,
                ..Default::default()
            },
        }
    };
    crate::serve::run(crate::serve::ServeOptions {
        model: served,
        served_name: a.served_model_name.unwrap_or_else(|| a.model.clone()),
        device: a.device.device,
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        max_queue: a.max_queue,
        max_body_bytes: a.max_body_bytes,
    })
}
