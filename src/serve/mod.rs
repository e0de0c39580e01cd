//! `switchyard serve`: an OpenAI-compatible HTTP server with continuous batching.
//!
//! One request's path: an axum handler ([`http`]) parses and checks the body ([`request`]),
//! takes a place in the bounded queue ([`scheduler::Shared::admit`], else 429) and sends a
//! [`scheduler::Job`] to the scheduler thread, which owns the engine and its
//! [`switchyard::models::Batch`]. At every step the scheduler admits queued jobs into free KV
//! slots, advances all running sequences in one call and sends each job its new token; the
//! handler streams the tokens as server-sent events or collects them into one body
//! ([`response`]). A finished or cancelled sequence (the client's channel closed) frees its slot
//! at once. [`metrics`] are updated along the way.

mod embeddings;
mod error;
mod http;
mod metrics;
mod request;
mod response;
mod scheduler;

use anyhow::{anyhow, Context, Result};
use scheduler::{Command, EngineSetup, Shared};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use switchyard::models::{BatchOptions, EmbedderOptions, EncoderModel, EngineOptions, Model};
use tokio::sync::{mpsc, oneshot};

/// The model a server runs.
pub enum ServedModel {
    /// Completions and chat, with continuous batching.
    Generator {
        model: Box<Model>,
        engine: EngineOptions,
        batch: BatchOptions,
    },
    /// Embeddings.
    Encoder {
        model: Box<EncoderModel>,
        options: EmbedderOptions,
    },
}

/// How to serve.
pub struct ServeOptions {
    pub model: ServedModel,
    /// The name clients send as `model` and `/v1/models` lists.
    pub served_name: String,
    pub device: String,
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    /// Requests that may wait for a slot before the server answers 429.
    pub max_queue: usize,
    pub max_body_bytes: usize,
}

/// Runs the server until Ctrl-C or SIGTERM: it stops accepting, ends in-flight requests with a
/// final event and returns. Fails when the address cannot be bound or the model cannot be
/// placed on the device.
pub fn run(options: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(options))
}

async fn serve(o: ServeOptions) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", o.host, o.port)
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(o.host.as_str(), o.port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| anyhow!("--host {}: not an address or a name that resolves", o.host))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (--host/--port)"))?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared::new(o.max_queue));
    let (loaded_tx, loaded_rx) = oneshot::channel();
    // The worker thread that owns the model, how handlers reach it, and how it is told to stop.
    let (served, worker, stop): (http::Served, _, Box<dyn FnOnce() + Send>) = match o.model {
        ServedModel::Generator {
            model,
            engine,
            batch,
        } => {
            let model: Arc<Model> = Arc::from(model);
            let (commands, receiver) = mpsc::unbounded_channel();
            let setup = EngineSetup {
                model: model.clone(),
                device: o.device.clone(),
                engine,
                batch,
            };
            let shared = shared.clone();
            let worker = std::thread::Builder::new()
                .name("scheduler".into())
                .spawn(move || scheduler::run(setup, shared, receiver, loaded_tx))
                .context("starting the scheduler thread")?;
            let stop_commands = commands.clone();
            (
                http::Served::Generator {
                    defaults: request::default_sampling(&model),
                    eos: model.eos_token_ids(),
                    model,
                    commands,
                },
                worker,
                Box::new(move || {
                    let _ = stop_commands.send(Command::Shutdown);
                }),
            )
        }
        ServedModel::Encoder { model, options } => {
            let (jobs, receiver) = mpsc::unbounded_channel();
            let handle = embeddings::EmbedHandle {
                jobs: jobs.clone(),
                dimensions: model.config.hidden_size,
                vocab_size: model.config.vocab_size,
            };
            let setup = embeddings::EncoderSetup {
                model: *model,
                device: o.device.clone(),
                options,
            };
            let shared = shared.clone();
            let worker = std::thread::Builder::new()
                .name("embedder".into())
                .spawn(move || embeddings::run(setup, shared, receiver, loaded_tx))
                .context("starting the embedder thread")?;
            (
                http::Served::Encoder(handle),
                worker,
                Box::new(move || {
                    let _ = jobs.send(embeddings::EmbedCommand::Shutdown);
                }),
            )
        }
    };
    let app = Arc::new(http::App {
        served,
        served_name: o.served_name.clone(),
        api_key: o.api_key,
        shared: shared.clone(),
        max_body_bytes: o.max_body_bytes,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_id: AtomicU64::new(0),
    });
    eprintln!(
        "serving `{}` on http://{local} (loading onto {}; /health turns 200 when ready)",
        o.served_name, o.device
    );
    // Loading failures end the server; a loaded engine is announced.
    let (failed_tx, failed_rx) = oneshot::channel::<String>();
    tokio::spawn(async move {
        match loaded_rx.await {
            Ok(Ok(ready)) => eprintln!("ready: {ready}"),
            Ok(Err(e)) => {
                let _ = failed_tx.send(e);
            }
            Err(_) => {
                let _ = failed_tx.send("the scheduler thread ended while loading".into());
            }
        }
    });
    let load_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let shutdown = {
        let shared = shared.clone();
        let load_error = load_error.clone();
        async move {
            tokio::select! {
                _ = signal() => eprintln!("shutting down: finishing in-flight requests"),
                Ok(e) = failed_rx => *load_error.lock().expect("not poisoned") = Some(e),
            }
            shared.shutting_down.store(true, Ordering::Release);
            stop();
        }
    };
    // Every token is its own small write: without TCP_NODELAY, Nagle's algorithm holds each
    // behind the client's delayed ACK (tens of milliseconds per token).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow!("the model's worker thread panicked"))?;
    if let Some(e) = load_error.lock().expect("not poisoned").take() {
        return Err(anyhow!("{e}"));
    }
    eprintln!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
