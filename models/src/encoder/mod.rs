//! Encoders: BERT, RoBERTa and XLM-RoBERTa as sentence-embedding models on any device.
//!
//! An [`EncoderModel`] is read from a sentence-transformers directory (`modules.json` choosing
//! the pooling and normalization, `sentence_bert_config.json` the input limit) or a plain Hugging
//! Face encoder directory; an [`Embedder`] uploads its weights once, compiles its graph
//! ([`build_encoder_graph`]) once (per batch and length bucket on static-shape devices) and
//! embeds many texts per call.
//!
//! ```no_run
//! use switchyard_models::{Embedder, EmbedderOptions, EncoderModel};
//! # fn demo<D: switchyard_runtime::Device>(device: D) -> switchyard_models::Result<()> {
//! let model = EncoderModel::load("tests/fixtures/bert")?;
//! let embedder = Embedder::new(device, &model, &EmbedderOptions::default())?;
//! let vectors = embedder.embed(&["a query", "a longer passage to search"])?;
//! println!("{} vectors of {} dimensions", vectors.len(), embedder.dimensions());
//! # Ok(()) }
//! ```

mod config;
mod embedder;
mod gguf;
mod graph;
mod model;
mod pooling;

pub use config::{EncoderActivation, EncoderArch, EncoderConfig};
pub use embedder::{Embedder, EmbedderOptions, DEFAULT_MAX_BATCH};
pub use graph::{build_encoder_graph, EncoderGraphOptions};
pub use model::EncoderModel;
pub use pooling::{Pooling, SentenceConfig};
