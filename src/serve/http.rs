//! Routes, authentication and the request handlers: each handler checks its request, hands a
//! job to the scheduler and turns the job's events into a JSON body or a server-sent-event
//! stream.

use super::embeddings::{self, EmbedCommand, EmbedHandle, EmbedJob};
use super::error::ApiError;
use super::request::{self, Parsed};
use super::response::{Endpoint, Envelope};
use super::scheduler::{Command, Job, JobEvent, Shared, TokenOut};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchyard::models::{Model, SamplingParams};
use tokio::sync::mpsc;

/// Everything a handler needs.
pub struct App {
    pub served: Served,
    pub served_name: String,
    pub api_key: Option<String>,
    pub shared: Arc<Shared>,
    pub max_body_bytes: usize,
    pub started: u64,
    pub next_id: AtomicU64,
}

/// What the server runs: a text generator (completions, chat) or an encoder (embeddings).
pub enum Served {
    Generator {
        model: Arc<Model>,
        commands: mpsc::UnboundedSender<Command>,
        defaults: SamplingParams,
        eos: Vec<u32>,
    },
    Encoder(EmbedHandle),
}

type AppState = Arc<App>;

impl App {
    /// What every body of request `id` repeats.
    fn envelope(&self, endpoint: Endpoint, id: &str, created: u64) -> Envelope<'_> {
        Envelope {
            endpoint,
            id: id.to_string(),
            created,
            model: &self.served_name,
            tokenizer: match &self.served {
                Served::Generator { model, .. } => model.tokenizer.as_ref(),
                Served::Encoder(_) => None,
            },
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The server's routes.
pub fn router(app: AppState) -> Router {
    let limit = app.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|uri: Uri| async move { ApiError::no_route(uri.path()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn authenticate(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            app.shared.metrics.ended("unauthorized");
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn health(State(app): State<AppState>) -> Response {
    let s = &app.shared;
    if s.shutting_down.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response()
    } else if s.ready.load(Ordering::Acquire) {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.shared.metrics.render(),
    )
        .into_response()
}

async fn models(State(app): State<AppState>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.served_name,
            "object": "model",
            "created": app.started,
            "owned_by": "switchyard",
            "max_model_len": app.shared.max_context.load(Ordering::Acquire),
        }],
    }))
    .into_response()
}

async fn completions(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(app, body, Endpoint::Completion).await
}

async fn chat_completions(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(app, body, Endpoint::Chat).await
}

/// A request from body to response; every refusal is counted by outcome.
async fn handle(
    app: AppState,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let received = Instant::now();
    match start(&app, body, endpoint, received) {
        Ok((parsed, events)) => {
            let prefix = match endpoint {
                Endpoint::Completion => "cmpl",
                Endpoint::Chat => "chatcmpl",
            };
            let id = format!(
                "{prefix}-{:016x}",
                app.next_id.fetch_add(1, Ordering::Relaxed)
            );
            let created = unix_now();
            if parsed.common.stream {
                let include_usage = parsed
                    .common
                    .stream_options
                    .as_ref()
                    .is_some_and(|o| o.include_usage);
                stream(app.clone(), id, created, endpoint, include_usage, events).into_response()
            } else {
                whole(
                    &app,
                    id,
                    created,
                    endpoint,
                    parsed.logprobs.is_some(),
                    events,
                )
                .await
            }
        }
        Err(e) => {
            app.shared.metrics.ended(e.outcome());
            e.into_response()
        }
    }
}

/// Checks the request and submits it; returns its event channel.
fn start(
    app: &App,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
    received: Instant,
) -> Result<(Parsed, mpsc::UnboundedReceiver<JobEvent>), ApiError> {
    let Served::Generator {
        model,
        commands,
        defaults,
        eos,
    } = &app.served
    else {
        return Err(ApiError::invalid(
            "model",
            format!(
                "model: `{}` is an embedding model: use /v1/embeddings",
                app.served_name
            ),
        ));
    };
    let value = accept(app, body)?;
    let shared = &app.shared;
    let parsed = match endpoint {
        Endpoint::Completion => request::completion(&value, model, &app.served_name)?,
        Endpoint::Chat => request::chat(&value, model, &app.served_name)?,
    };
    let max_context = shared.max_context.load(Ordering::Acquire);
    let seed = random_seed(app.next_id.load(Ordering::Relaxed));
    let params = request::sequence_params(&parsed, defaults, eos, max_context, seed)?;
    shared.admit()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt: parsed.prompt.clone(),
        params,
        logprobs: parsed.logprobs,
        events: tx,
        received,
    };
    if commands.send(Command::Submit(job)).is_err() {
        shared.release();
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    Ok((parsed, rx))
}

/// The body of a request the server can take now, as a JSON object.
fn accept(app: &App, body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let shared = &app.shared;
    if shared.shutting_down.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    if !shared.ready.load(Ordering::Acquire) {
        return Err(ApiError::unavailable(
            "the model is still loading; see /health",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(app.max_body_bytes)
        } else {
            ApiError::malformed(format!("could not read the body: {e}"))
        }
    })?;
    request::json_object(&body)
}

async fn embeddings(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match embed(&app, body).await {
        Ok(v) => Json(v).into_response(),
        Err((e, counted)) => {
            if !counted {
                app.shared.metrics.ended(e.outcome());
            }
            e.into_response()
        }
    }
}

/// An embeddings request from body to response body; the error says whether the worker
/// already counted it.
async fn embed(
    app: &App,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, (ApiError, bool)> {
    let received = Instant::now();
    let Served::Encoder(handle) = &app.served else {
        return Err((
            ApiError::invalid(
                "model",
                format!(
                    "model: `{}` generates text and makes no embeddings; serve an encoder (BERT, RoBERTa, XLM-RoBERTa) for /v1/embeddings",
                    app.served_name
                ),
            ),
            false,
        ));
    };
    let value = accept(app, body).map_err(|e| (e, false))?;
    let parsed = embeddings::parse(&value, &app.served_name, handle).map_err(|e| (e, false))?;
    app.shared.admit().map_err(|e| (e, false))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = EmbedJob {
        input: parsed.input,
        reply,
        received,
    };
    if handle.jobs.send(EmbedCommand::Submit(job)).is_err() {
        app.shared.release();
        return Err((ApiError::unavailable("the server is shutting down"), false));
    }
    match answer.await {
        Ok(Ok(done)) => Ok(embeddings::response(&app.served_name, &done, parsed.base64)),
        Ok(Err(e)) => Err((e, true)),
        Err(_) => Err((lost(), false)),
    }
}

fn random_seed(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn lost() -> ApiError {
    ApiError::internal("the scheduler stopped without finishing the request")
}

/// Collects a job's events into one response.
async fn whole(
    app: &App,
    id: String,
    created: u64,
    endpoint: Endpoint,
    want_logprobs: bool,
    mut events: mpsc::UnboundedReceiver<JobEvent>,
) -> Response {
    let mut tokens: Vec<TokenOut> = Vec::new();
    loop {
        match events.recv().await {
            Some(JobEvent::Token(t)) => tokens.push(t),
            Some(JobEvent::Done(done)) => {
                let env = app.envelope(endpoint, &id, created);
                return Json(env.whole(&tokens, &done, want_logprobs)).into_response();
            }
            // The scheduler counted the outcome.
            Some(JobEvent::Failed(e)) => return e.into_response(),
            None => return lost().into_response(),
        }
    }
}

/// Where a stream is.
struct StreamState {
    app: AppState,
    id: String,
    created: u64,
    endpoint: Endpoint,
    include_usage: bool,
    events: mpsc::UnboundedReceiver<JobEvent>,
    out: VecDeque<Event>,
    offset: usize,
    ended: bool,
}

impl StreamState {
    fn data(&mut self, v: serde_json::Value) {
        self.out.push_back(Event::default().data(v.to_string()));
    }

    fn done_marker(&mut self) {
        self.out.push_back(Event::default().data("[DONE]"));
        self.ended = true;
    }

    /// Turns the next job event into stream events.
    fn on(&mut self, event: Option<JobEvent>) {
        let app = self.app.clone();
        let env = app.envelope(self.endpoint, &self.id, self.created);
        match event {
            Some(JobEvent::Token(t)) => {
                if !t.text.is_empty() || t.logprob.is_some() {
                    let chunk = env.token_chunk(&t, self.offset);
                    self.data(chunk);
                }
                self.offset += t.text.len();
            }
            Some(JobEvent::Done(done)) => {
                self.data(env.finish_chunk(&done));
                if self.include_usage {
                    self.data(env.usage_chunk(&done));
                }
                self.done_marker();
            }
            Some(JobEvent::Failed(e)) => {
                self.data(e.body());
                self.done_marker();
            }
            None => {
                self.data(lost().body());
                self.done_marker();
            }
        }
    }
}

/// A job's events as server-sent events, ending in `data: [DONE]`. Dropping the stream (the
/// client went away) drops the job's receiver, which the scheduler sees as a cancellation.
fn stream(
    app: AppState,
    id: String,
    created: u64,
    endpoint: Endpoint,
    include_usage: bool,
    events: mpsc::UnboundedReceiver<JobEvent>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut state = StreamState {
        app,
        id,
        created,
        endpoint,
        include_usage,
        events,
        out: VecDeque::new(),
        offset: 0,
        ended: false,
    };
    let app = state.app.clone();
    if let Some(role) = app.envelope(endpoint, &state.id, created).role_chunk() {
        state.data(role);
    }
    let s = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.out.pop_front() {
                return Some((Ok(e), st));
            }
            if st.ended {
                return None;
            }
            let event = st.events.recv().await;
            st.on(event);
        }
    });
    Sse::new(s)
}
