//! One call for library users: a model (directory, GGUF file, hub id or built-in) on a device
//! (a string), text or chat messages in, text out whole or streamed. The engine beneath stays
//! reachable for everything this type does not cover.

use crate::models::{
    generate, ChatMessage, Engine, EngineOptions, GenerateOptions, Model, ModelError,
    SamplingParams, Session, StopReason, Timings,
};
use crate::{AnyDevice, DType};
use std::ops::ControlFlow;

/// Errors of [`TextGenerator`]: loading, tokenizing and generating.
pub type TextError = ModelError;

/// How to load a [`TextGenerator`]; [`TextGenerator::load`] uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Compute dtype (default: the device's choice).
    pub dtype: Option<DType>,
    /// Quantize the matrices on load (`q8_0`, `q4_k`, ...).
    pub quantize: Option<DType>,
    /// Longest prompt plus generation (default: the model's, capped at 4096).
    pub max_context: Option<usize>,
    /// Static-shape devices: tokens per prefill call.
    pub prefill_chunk: Option<usize>,
    /// Static-shape devices: KV buckets.
    pub kv_buckets: Option<Vec<usize>>,
}

/// What to generate. The defaults: up to 128 new tokens, the model's own sampling settings
/// (`generation_config.json`) or greedy when it has none, stopping at its end-of-sequence tokens.
#[derive(Debug, Clone, Default)]
pub struct TextOptions {
    /// Most tokens to generate (default 128).
    pub max_new_tokens: Option<usize>,
    /// How to choose tokens (default: the model's generation config, else greedy).
    pub sampling: Option<SamplingParams>,
    /// Texts that end generation (excluded from the text).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
}

/// One completion.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// Tokens in the prompt (after the chat template, for chats).
    pub prompt_tokens: usize,
    /// The generated token ids.
    pub generated_ids: Vec<u32>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Prefill and per-token timings.
    pub timings: Timings,
}

/// A model loaded on a device, ready to complete text and chats.
///
/// ```
/// use switchyard::{TextGenerator, TextOptions};
/// use switchyard::models::ChatMessage;
///
/// let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama");
/// let mut g = TextGenerator::load(model, "cpu")?;
/// let options = TextOptions {
///     max_new_tokens: Some(8),
///     ignore_eos: true,
///     ..Default::default()
/// };
/// let whole = g.complete("Hello", &options)?;
/// assert_eq!(whole.generated_ids.len(), 8);
///
/// // The same, streamed: pieces arrive as they are decoded and add up to the whole text.
/// let mut streamed = String::new();
/// g.complete_stream("Hello", &options, |piece| {
///     streamed.push_str(piece);
///     std::ops::ControlFlow::Continue(())
/// })?;
/// assert_eq!(streamed, whole.text);
///
/// // Chat messages through the model's chat template.
/// let reply = g.chat(&[ChatMessage::new("user", "Hi")], &options)?;
/// assert!(reply.prompt_tokens > 2);
/// # Ok::<(), switchyard::TextError>(())
/// ```
pub struct TextGenerator {
    model: Model,
    engine: Engine<AnyDevice>,
    session: Session<AnyDevice>,
}

impl TextGenerator {
    /// Loads `model` (a directory, a `.gguf` file, a hub id in the local cache, or
    /// `builtin:NAME`) onto `device` (`cpu`, `cuda:0`, `neuron:0`).
    pub fn load(model: &str, device: &str) -> Result<TextGenerator, TextError> {
        Self::load_with(model, device, &LoadOptions::default())
    }

    /// [`TextGenerator::load`] with options.
    pub fn load_with(
        model: &str,
        device: &str,
        options: &LoadOptions,
    ) -> Result<TextGenerator, TextError> {
        let device = AnyDevice::open(device)?;
        let mut model = Model::load(model)?;
        if let Some(q) = options.quantize {
            model = crate::quantize::QuantizedWeights::wrap(model, q)?;
        }
        let engine = Engine::new(
            device,
            &model.config,
            model.weights.as_ref(),
            &EngineOptions {
                dtype: options.dtype,
                max_context: options.max_context,
                prefill_chunk: options.prefill_chunk,
                kv_buckets: options.kv_buckets.clone(),
            },
        )?;
        let session = engine.new_session()?;
        Ok(TextGenerator {
            model,
            engine,
            session,
        })
    }

    /// The model (config, tokenizer, chat template).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The engine beneath, for sessions of your own and token-level control.
    pub fn engine(&self) -> &Engine<AnyDevice> {
        &self.engine
    }

    /// Completes `prompt` (tokenized with the model's tokenizer, special tokens added).
    pub fn complete(
        &mut self,
        prompt: &str,
        options: &TextOptions,
    ) -> Result<Completion, TextError> {
        self.complete_stream(prompt, options, |_| ControlFlow::Continue(()))
    }

    /// [`TextGenerator::complete`], handing each piece of text to `on_text` as it is decoded;
    /// `ControlFlow::Break` stops generation.
    pub fn complete_stream(
        &mut self,
        prompt: &str,
        options: &TextOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion, TextError> {
        let ids = self.tokenizer()?.encode(prompt, true)?;
        self.run(&ids, options, on_text)
    }

    /// Answers `messages` through the model's chat template (with the assistant turn opened).
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        options: &TextOptions,
    ) -> Result<Completion, TextError> {
        self.chat_stream(messages, options, |_| ControlFlow::Continue(()))
    }

    /// [`TextGenerator::chat`], streamed like [`TextGenerator::complete_stream`].
    pub fn chat_stream(
        &mut self,
        messages: &[ChatMessage],
        options: &TextOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion, TextError> {
        let template =
            self.model
                .tokenizer_config
                .as_ref()
                .ok_or_else(|| ModelError::InvalidOption {
                    option: "chat",
                    message: format!(
                        "{} has no chat template (tokenizer_config.json)",
                        self.model.dir.display()
                    ),
                })?;
        let text = template.render_chat(messages, true)?;
        let ids = self.tokenizer()?.encode(&text, false)?;
        self.run(&ids, options, on_text)
    }

    fn tokenizer(&self) -> Result<&crate::models::Tokenizer, TextError> {
        self.model
            .tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::InvalidOption {
                option: "prompt",
                message: format!(
                    "{} has no tokenizer: use the engine with token ids",
                    self.model.dir.display()
                ),
            })
    }

    /// The model's own sampling settings, else greedy.
    fn default_sampling(&self) -> SamplingParams {
        let g = self.model.generation_config.clone().unwrap_or_default();
        if g.do_sample != Some(true) {
            return SamplingParams::default();
        }
        SamplingParams {
            temperature: g.temperature.unwrap_or(1.0),
            top_k: g.top_k.filter(|&k| k > 0),
            top_p: g.top_p.unwrap_or(1.0),
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
            ..SamplingParams::default()
        }
    }

    fn run(
        &mut self,
        ids: &[u32],
        options: &TextOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion, TextError> {
        let sampling = options
            .sampling
            .clone()
            .unwrap_or_else(|| self.default_sampling());
        sampling.validate()?;
        let generate_options = GenerateOptions {
            max_new_tokens: options.max_new_tokens.unwrap_or(128),
            sampling,
            eos_token_ids: self.model.eos_token_ids(),
            ignore_eos: options.ignore_eos,
            stop_strings: options.stop.clone(),
            return_prompt_logits: false,
        };
        self.session.reset();
        let out = generate(
            &self.engine,
            &mut self.session,
            self.model.tokenizer.as_ref(),
            ids,
            &generate_options,
            |t| on_text(t),
        )?;
        Ok(Completion {
            text: out.text.unwrap_or_default(),
            prompt_tokens: out.prompt_ids.len(),
            generated_ids: out.generated_ids,
            stop_reason: out.stop_reason,
            timings: out.timings,
        })
    }
}
