//! `POST /v1/embeddings` on an encoder: the request (OpenAI's fields), the worker thread that
//! owns the [`Embedder`] and embeds every request waiting at once in one batched call, and the
//! response.

use super::error::ApiError;
use super::request::{check_model_name, from_value, token_ids};
use super::scheduler::Shared;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use switchyard::models::{Embedder, EmbedderOptions, EncoderModel, ModelError};
use switchyard::{AnyDevice, Device};
use tokio::sync::{mpsc, oneshot};

/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// What a handler knows of the encoder without asking its worker.
pub struct EmbedHandle {
    pub jobs: mpsc::UnboundedSender<EmbedCommand>,
    pub dimensions: usize,
    pub vocab_size: usize,
}

/// A request's inputs.
pub enum EmbedInput {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

impl EmbedInput {
    fn len(&self) -> usize {
        match self {
            EmbedInput::Texts(t) => t.len(),
            EmbedInput::Ids(i) => i.len(),
        }
    }
}

/// Vectors in input order, and the tokens they took.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// One request for the worker.
pub struct EmbedJob {
    pub input: EmbedInput,
    pub reply: oneshot::Sender<Result<Embedded, ApiError>>,
    pub received: Instant,
}

/// What the worker is sent.
pub enum EmbedCommand {
    Submit(EmbedJob),
    Shutdown,
}

/// A checked request.
pub struct Parsed {
    pub input: EmbedInput,
    pub base64: bool,
}

#[derive(Deserialize)]
struct Fields {
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
    #[allow(dead_code)]
    user: Option<String>,
}

/// Checks an embeddings request: `input` as a string, a list of strings, a list of token ids
/// or a list of such lists; `encoding_format` float or base64; `dimensions` only the model's.
pub fn parse(body: &Value, served: &str, handle: &EmbedHandle) -> Result<Parsed, ApiError> {
    let f: Fields = from_value(body)?;
    check_model_name(f.model.as_deref(), served)?;
    let base64 = match f.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format: '{other}' is not float or base64"),
            ))
        }
    };
    if let Some(d) = f.dimensions {
        if d != handle.dimensions as i64 {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "dimensions: {d} asked for; `{served}` makes {}-dimensional vectors and cannot shorten them",
                    handle.dimensions
                ),
            ));
        }
    }
    let bad = || {
        ApiError::invalid(
            "input",
            "input: expected a string, a list of strings, a list of token ids or a list of lists of token ids",
        )
    };
    let vocab = handle.vocab_size;
    let input = match f.input {
        None => return Err(ApiError::invalid("input", "input: required")),
        Some(Value::String(s)) => EmbedInput::Texts(vec![s]),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("input", "input: the list is empty"))
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => EmbedInput::Texts(
            items
                .into_iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
        ),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            EmbedInput::Ids(vec![token_ids(&items, vocab, "input")?])
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => EmbedInput::Ids(
            items
                .iter()
                .map(|v| token_ids(v.as_array().map_or(&[][..], Vec::as_slice), vocab, "input"))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(bad()),
    };
    if input.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!(
                "input: {} inputs in one request; at most {MAX_INPUTS}",
                input.len()
            ),
        ));
    }
    let empty = match &input {
        EmbedInput::Texts(t) => t.iter().position(String::is_empty),
        EmbedInput::Ids(i) => i.iter().position(Vec::is_empty),
    };
    if let Some(i) = empty {
        return Err(ApiError::invalid(
            "input",
            format!("input: input {i} is empty"),
        ));
    }
    Ok(Parsed { input, base64 })
}

/// The response body: OpenAI's list of embeddings with usage.
pub fn response(served: &str, embedded: &Embedded, base64: bool) -> Value {
    use base64::Engine as _;
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": served,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    })
}

/// Where the encoder runs.
pub struct EncoderSetup {
    pub model: EncoderModel,
    pub device: String,
    pub options: EmbedderOptions,
}

/// Loads the embedder, reports through `loaded`, then embeds until shutdown: every request
/// waiting when the worker comes round goes into one batched call.
pub fn run(
    setup: EncoderSetup,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<EmbedCommand>,
    loaded: oneshot::Sender<Result<String, String>>,
) {
    let start = Instant::now();
    let embedder = AnyDevice::open(&setup.device)
        .map_err(|e| e.to_string())
        .and_then(|d| Embedder::new(d, &setup.model, &setup.options).map_err(|e| e.to_string()));
    let embedder = match embedder {
        Ok(e) => e,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let m = &shared.metrics;
    shared.slots.store(embedder.max_batch(), Ordering::Release);
    shared
        .max_context
        .store(embedder.max_tokens(), Ordering::Release);
    shared.ready.store(true, Ordering::Release);
    let _ = loaded.send(Ok(format!(
        "{} embeddings ({} pooling{}) of inputs up to {} tokens, {} per call, loaded in {:.1} s",
        embedder.device().info().display_name(),
        embedder.pooling(),
        if embedder.normalizes() {
            ", normalized"
        } else {
            ""
        },
        embedder.max_tokens(),
        embedder.max_batch(),
        start.elapsed().as_secs_f64()
    )));
    let end = |outcome: &str| {
        m.ended(outcome);
        shared.release();
    };
    loop {
        let mut jobs = Vec::new();
        let mut stop = false;
        match commands.blocking_recv() {
            Some(EmbedCommand::Submit(job)) => jobs.push(job),
            Some(EmbedCommand::Shutdown) | None => stop = true,
        }
        while let Ok(c) = commands.try_recv() {
            match c {
                EmbedCommand::Submit(job) => jobs.push(job),
                EmbedCommand::Shutdown => stop = true,
            }
        }
        if stop {
            for job in jobs {
                end("aborted");
                let _ = job
                    .reply
                    .send(Err(ApiError::unavailable("the server is shutting down")));
            }
            break;
        }
        // Clients that went away are not worth embedding for.
        jobs.retain(|job| {
            let gone = job.reply.is_closed();
            if gone {
                end("cancelled");
            }
            !gone
        });
        // Each request's token ids; one that cannot be tokenized fails alone.
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            m.queue_time.observe(job.received.elapsed().as_secs_f64());
            let ids = match &job.input {
                EmbedInput::Ids(ids) => embedder.check_inputs(ids).map(|()| ids.clone()),
                EmbedInput::Texts(texts) => {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    embedder.tokenize(&refs)
                }
            };
            match ids {
                Ok(ids) => ready.push((job, ids)),
                Err(e) => {
                    let e = input_error(&e);
                    end(e.outcome());
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if ready.is_empty() {
            continue;
        }
        m.running.set(ready.len() as i64);
        let all: Vec<Vec<u32>> = ready.iter().flat_map(|(_, ids)| ids.clone()).collect();
        match embedder.embed_ids(&all) {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (job, ids) in ready {
                    let tokens: usize =
                        ids.iter().map(|i| i.len().min(embedder.max_tokens())).sum();
                    m.prompt_tokens.inc_by(tokens as u64);
                    m.e2e_latency.observe(job.received.elapsed().as_secs_f64());
                    end("embedded");
                    let _ = job.reply.send(Ok(Embedded {
                        vectors: vectors.by_ref().take(ids.len()).collect(),
                        tokens,
                    }));
                }
            }
            Err(e) => {
                // Inputs were checked per request: a failure here is the device's.
                for (job, _) in ready {
                    let err = ApiError::internal(format!("the encoder failed: {e}"));
                    end(err.outcome());
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        m.running.set(0);
    }
    m.running.set(0);
}

/// A model-layer refusal of one request's inputs as a 400 naming `input`.
fn input_error(e: &ModelError) -> ApiError {
    match e {
        ModelError::InputTooLong { .. } => ApiError::context_length("input", format!("input: {e}")),
        ModelError::InvalidOption { message, .. } => {
            ApiError::invalid("input", format!("input: {message}"))
        }
        other => ApiError::internal(other.to_string()),
    }
}
