//! The generation loop: prefill, then sample and decode token by token until a stop condition,
//! streaming text as it becomes complete.

use crate::engine::{Engine, Session};
use crate::error::{ModelError, Result};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use switchyard_runtime::Device;

/// What to generate and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// How to choose each token.
    pub sampling: SamplingParams,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Texts that end generation (excluded from the returned text).
    pub stop_strings: Vec<String>,
    /// Return the logits at the last prompt position.
    pub return_prompt_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 128,
            sampling: SamplingParams::default(),
            eos_token_ids: Vec::new(),
            ignore_eos: false,
            stop_strings: Vec::new(),
            return_prompt_logits: false,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-sequence token was generated.
    Eos,
    /// A stop string appeared.
    StopString,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The KV cache is full.
    ContextLimit,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// Where the time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Time to run the prompt through the model.
    pub prefill: Duration,
    /// Time from the start until the first generated token was known.
    pub time_to_first_token: Duration,
    /// Time of each decode step (one per generated token after the first).
    pub decode: Vec<Duration>,
}

impl Timings {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second over the decode steps.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let total: f64 = self.decode.iter().map(Duration::as_secs_f64).sum();
        if self.decode.is_empty() {
            0.0
        } else {
            self.decode.len() as f64 / total.max(1e-9)
        }
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt's ids.
    pub prompt_ids: Vec<u32>,
    /// The generated ids (an end-of-sequence token that stopped generation included).
    pub generated_ids: Vec<u32>,
    /// The generated text (special tokens skipped, stop string excluded), when a tokenizer was
    /// given.
    pub text: Option<String>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Timings.
    pub timings: Timings,
    /// Logits at the last prompt position, when asked for.
    pub last_prompt_logits: Option<Vec<f32>>,
}

/// Turns generated tokens into streamed text, holding back anything that may be the start of a
/// stop string.
pub(crate) struct Streamer<'a> {
    stream: Option<crate::tokenizer::TextStream<'a>>,
    pub(crate) text: String,
    emitted: usize,
    stops: Vec<String>,
}

impl<'a> Streamer<'a> {
    /// A streamer over `tokenizer` (none: no text) holding back prefixes of `stops`.
    pub(crate) fn new(tokenizer: Option<&'a Tokenizer>, stops: Vec<String>) -> Self {
        Streamer {
            stream: tokenizer.map(|t| t.stream(true)),
            text: String::new(),
            emitted: 0,
            stops,
        }
    }

    /// Adds a token; returns the text safe to show now and whether a stop string was found.
    pub(crate) fn push(&mut self, id: u32) -> Result<(String, bool)> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok((String::new(), false));
        };
        if let Some(piece) = stream.push(id)? {
            self.text.push_str(&piece);
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(at);
            let out = self.text[self.emitted.min(at)..].to_string();
            self.emitted = at;
            return Ok((out, true));
        }
        // Hold back the longest suffix that begins some stop string.
        let mut safe = self.text.len();
        for s in &self.stops {
            for (i, _) in self.text.char_indices().rev().take(s.chars().count()) {
                if s.starts_with(&self.text[i..]) {
                    safe = safe.min(i);
                }
            }
        }
        let safe = safe.max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        Ok((out, false))
    }

    /// The rest of the text at the end of generation (held-back bytes of an incomplete
    /// character included, as U+FFFD).
    pub(crate) fn flush(&mut self) -> Result<String> {
        if let Some(rest) = self
            .stream
            .as_mut()
            .map(|s| s.finish())
            .transpose()?
            .flatten()
        {
            self.text.push_str(&rest);
        }
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        Ok(out)
    }
}

/// Generates from `prompt_ids` in `session` (which must be fresh or continue a conversation).
/// `on_text` receives text as it becomes final and may return `ControlFlow::Break` to stop.
pub fn generate<D: Device>(
    engine: &Engine<D>,
    session: &mut Session<D>,
    tokenizer: Option<&Tokenizer>,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Generation> {
    let mut sampler = Sampler::new(options.sampling.clone())?;
    if prompt_ids.is_empty() {
        return Err(ModelError::InvalidOption {
            option: "--prompt",
            message: "the prompt has no tokens".into(),
        });
    }
    let max_context = engine.max_context();
    if session.position() + prompt_ids.len() > max_context {
        return Err(ModelError::PromptTooLong {
            tokens: session.position() + prompt_ids.len(),
            max_context,
        });
    }
    // A static-shape device has executables only up to its largest bucket: refuse before any
    // work a request that would run past it.
    if let crate::plan::Shapes::Static { buckets, .. } = engine.shapes() {
        let needed =
            session.position() + prompt_ids.len() + options.max_new_tokens.saturating_sub(1);
        if needed > max_context {
            return Err(ModelError::InvalidOption {
                option: "--max-new-tokens",
                message: format!(
                    "the prompt ({} tokens at position {}) plus {} new tokens needs {needed} positions, but the largest bucket compiled for {} holds {} (buckets {buckets:?}; the model's context is {})",
                    prompt_ids.len(),
                    session.position(),
                    options.max_new_tokens,
                    engine.device().info().display_name(),
                    max_context,
                    engine.config().max_position_embeddings
                ),
            });
        }
    }
    let mut streamer = Streamer::new(tokenizer, options.stop_strings.clone());
    let mut timings = Timings {
        prompt_tokens: prompt_ids.len(),
        ..Default::default()
    };
    // Greedy decoding without a penalty needs only the argmax, which the device computes: read
    // back one id per token instead of the logits.
    let on_device_greedy = options.sampling.temperature == 0.0
        && options.sampling.unpenalized()
        && !options.return_prompt_logits;
    enum Next {
        Logits(Vec<f32>),
        Token(u32),
    }
    let start = Instant::now();
    let mut next_step = if on_device_greedy {
        Next::Token(engine.prefill_greedy(session, prompt_ids)?)
    } else {
        Next::Logits(engine.prefill(session, prompt_ids)?)
    };
    timings.prefill = start.elapsed();
    let last_prompt_logits = match (&next_step, options.return_prompt_logits) {
        (Next::Logits(l), true) => Some(l.clone()),
        _ => None,
    };
    let mut context: Vec<u32> = prompt_ids.to_vec();
    let mut generated = Vec::new();
    let stop_reason = loop {
        if generated.len() >= options.max_new_tokens {
            break StopReason::MaxTokens;
        }
        let next = match &next_step {
            Next::Logits(logits) => sampler.sample_after(logits, &context, &generated)?,
            Next::Token(t) => *t,
        };
        if generated.is_empty() {
            timings.time_to_first_token = start.elapsed();
        }
        generated.push(next);
        context.push(next);
        let (piece, hit_stop) = streamer.push(next)?;
        if !piece.is_empty() && on_text(&piece).is_break() {
            break StopReason::Cancelled;
        }
        if hit_stop {
            break StopReason::StopString;
        }
        if !options.ignore_eos && options.eos_token_ids.contains(&next) {
            break StopReason::Eos;
        }
        if generated.len() >= options.max_new_tokens {
            break StopReason::MaxTokens;
        }
        if session.position() >= max_context {
            break StopReason::ContextLimit;
        }
        let step = Instant::now();
        next_step = if on_device_greedy {
            Next::Token(engine.decode_greedy(session, next)?)
        } else {
            Next::Logits(engine.decode(session, next)?)
        };
        timings.decode.push(step.elapsed());
    };
    if stop_reason != StopReason::StopString && stop_reason != StopReason::Cancelled {
        let rest = streamer.flush()?;
        if !rest.is_empty() {
            let _ = on_text(&rest);
        }
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        generated_ids: generated,
        text: tokenizer.map(|_| streamer.text.clone()),
        stop_reason,
        timings,
        last_prompt_logits,
    })
}
