//! # switchyard-models
//!
//! Hugging Face models on any Switchyard device: `config.json` (both layouts),
//! memory-mapped safetensors (single or sharded), `tokenizer.json`, chat templates and
//! generation defaults ([`Model`]); one graph builder per architecture for a prefill and a decode
//! entry ([`build_graph`]); the [`Engine`] that uploads weights once, compiles each graph once and
//! runs sessions with a device-resident KV cache; sampling and streaming generation
//! ([`generate`]). It depends only on `switchyard-runtime`, so it runs unchanged on every device.
//!
//! ```no_run
//! use switchyard_models::{generate, Engine, EngineOptions, GenerateOptions, Model};
//! # fn demo<D: switchyard_runtime::Device>(device: D) -> switchyard_models::Result<()> {
//! let model = Model::load("tests/fixtures/llama")?;
//! let engine = Engine::new(device, &model.config, model.weights.as_ref(), &EngineOptions::default())?;
//! let tokenizer = model.tokenizer.as_ref().unwrap();
//! let prompt = tokenizer.encode("Hello", true)?;
//! let mut session = engine.new_session()?;
//! let out = generate(&engine, &mut session, Some(tokenizer), &prompt, &GenerateOptions::default(), |text| {
//!     print!("{text}");
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! println!("\n{:.1} tokens/s", out.timings.decode_tokens_per_second());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod batch;
mod builtin;
mod chat;
mod checkpoint;
mod config;
mod encoder;
mod engine;
mod error;
mod generate;
pub mod gguf;
mod graph;
mod hub;
mod model;
mod plan;
mod pool_plan;
mod rope;
mod sampling;
mod tokenizer;
mod upload;
mod weights;

pub use batch::{Batch, SequenceId, SequenceParams, StepStats, TokenEvent};
pub use builtin::{builtin_config, RandomWeights, BUILTIN_MODELS};
pub use chat::{ChatMessage, TokenizerConfig};
pub use checkpoint::Checkpoint;
pub use config::{Activation, Arch, ModelConfig};
pub use encoder::{
    build_encoder_graph, Embedder, EmbedderOptions, EncoderActivation, EncoderArch, EncoderConfig,
    EncoderGraphOptions, EncoderModel, Pooling, SentenceConfig, DEFAULT_MAX_BATCH,
};
pub use engine::{Engine, Session};
pub use error::{ModelError, Result};
pub use generate::{generate, GenerateOptions, Generation, StopReason, Timings};
pub use graph::{build_graph, embedding_name, kv_state_name, weight_graph, Entry, GraphOptions};
pub use hub::{cached_snapshot, hub_cache_dir, resolve_model, resolve_model_with};
pub use model::{GenerationConfig, Model};
pub use plan::{
    plan_executables, EngineOptions, EntryKind, ExecutablePlan, PlannedExecutable, Shapes,
    DEFAULT_MAX_CONTEXT, DEFAULT_PREFILL_CHUNK,
};
pub use pool_plan::{
    plan_pool, slot_bytes, BatchOptions, PoolExecutable, PoolPlan, PoolShapes, DEFAULT_MAX_SLOTS,
};
pub use rope::{Rope, RopeScaling};
pub use sampling::{argmax, Sampler, SamplingParams};
pub use tokenizer::{TextStream, Tokenizer};
pub use upload::{check_quantized_support, stored_quantized};
pub use weights::{checkpoint_name, WeightSource};
