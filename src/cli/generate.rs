//! `switchyard generate`: stream a completion from a model on a device.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;
use switchyard::models::{
    generate, ChatMessage, Engine, EngineOptions, GenerateOptions, Model, SamplingParams,
    StopReason,
};
use switchyard::{AnyDevice, Device};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Stream text to stdout, timings to stderr.
    Text,
    /// One JSON object on stdout.
    Json,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A model directory, or a Hugging Face hub id (org/name) in the local cache or downloadable.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    device: super::options::DeviceArg,
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    prompt: Option<String>,
    /// The prompt as token ids, comma-separated (no tokenizer needed).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<String>>,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// A system message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature (0: greedy). Default: the model's generation_config, else greedy.
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep the k most likely tokens (0: all).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Drop tokens below min-p times the most likely one's probability.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    min_p: f32,
    /// Penalty for tokens already in the context (1: off).
    #[arg(long, allow_negative_numbers = true)]
    repetition_penalty: Option<f32>,
    /// Subtracted from the logit of every token already generated, in [-2, 2].
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Subtracted from a token's logit per time it was generated, in [-2, 2].
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Seed for sampling (default: random, reported).
    #[arg(long)]
    seed: Option<u64>,
    /// Do not stop at end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// KV-cache length (default: the model's maximum, capped at 4096).
    #[arg(long)]
    max_context: Option<usize>,
    #[command(flatten)]
    engine: super::options::EngineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// With --format json, include the logits at the last prompt position.
    #[arg(long)]
    logits: bool,
}

fn parse_ids(raw: &[String]) -> Result<Vec<u32>> {
    raw.iter()
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .with_context(|| format!("invalid --prompt-ids entry '{s}': expected a token id"))
        })
        .collect()
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if a.logits && a.format != Format::Json {
        bail!("--logits needs --format json");
    }
    let dtype = a.engine.dtype()?;
    let quantize = a.engine.quantize()?;
    let device = AnyDevice::open(&a.device.device)?;
    let load_start = Instant::now();
    let mut model = Model::load(&a.model)?;
    if let Some(q) = quantize {
        model = switchyard::quantize::QuantizedWeights::wrap(model, q)?;
    }
    let gen_cfg = model.generation_config.clone().unwrap_or_default();
    let sampling_default = gen_cfg.do_sample == Some(true);
    let sampling = SamplingParams {
        temperature: a.temperature.unwrap_or(if sampling_default {
            gen_cfg.temperature.unwrap_or(1.0)
        } else {
            0.0
        }),
        top_k: match a.top_k {
            Some(0) => None,
            Some(k) => Some(k),
            None if sampling_default => gen_cfg.top_k.filter(|&k| k > 0),
            None => None,
        },
        top_p: a.top_p.unwrap_or(if sampling_default {
            gen_cfg.top_p.unwrap_or(1.0)
        } else {
            1.0
        }),
        min_p: a.min_p,
        repetition_penalty: a
            .repetition_penalty
            .or(gen_cfg.repetition_penalty)
            .unwrap_or(1.0),
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        seed: a.seed.unwrap_or_else(random_seed),
    };
    sampling.validate()?;
    let tokenizer = model.tokenizer.as_ref();
    let prompt_ids = match (&a.prompt, &a.prompt_ids) {
        (_, Some(ids)) => parse_ids(ids)?,
        (Some(text), None) => {
            let tok = tokenizer.with_context(|| {
                format!(
                    "{} has no tokenizer.json: pass --prompt-ids instead of --prompt",
                    model.dir.display()
                )
            })?;
            if a.chat {
                let tc = model.tokenizer_config.as_ref().with_context(|| {
                    format!(
                        "--chat: {} has no tokenizer_config.json",
                        model.dir.display()
                    )
                })?;
                let mut messages = Vec::new();
                if let Some(s) = &a.system {
                    messages.push(ChatMessage::new("system", s));
                }
                messages.push(ChatMessage::new("user", text));
                tok.encode(&tc.render_chat(&messages, true)?, false)?
            } else {
                tok.encode(text, true)?
            }
        }
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    let engine = Engine::new(
        device,
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            dtype,
            max_context: a.max_context,
            prefill_chunk: a.engine.prefill_chunk,
            kv_buckets: a.engine.buckets.clone(),
        },
    )?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let mut session = engine.new_session()?;
    let options = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: sampling.clone(),
        eos_token_ids: model.eos_token_ids(),
        ignore_eos: a.ignore_eos,
        stop_strings: a.stop.clone(),
        return_prompt_logits: a.logits,
    };
    let stream = a.format == Format::Text;
    let mut stdout = std::io::stdout().lock();
    let out = generate(
        &engine,
        &mut session,
        tokenizer,
        &prompt_ids,
        &options,
        |text| {
            if stream && (stdout.write_all(text.as_bytes()).is_err() || stdout.flush().is_err()) {
                return ControlFlow::Break(());
            }
            if super::interrupt::requested() {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    let t = &out.timings;
    let device_name = engine.device().info().display_name();
    let stop = match out.stop_reason {
        StopReason::Eos => "end of sequence".to_string(),
        StopReason::StopString => "stop string".to_string(),
        StopReason::MaxTokens => format!("max new tokens ({})", a.max_new_tokens),
        StopReason::ContextLimit => format!(
            "the context limit of {} tokens was reached",
            engine.max_context()
        ),
        StopReason::Cancelled if super::interrupt::requested() => {
            "interrupted (Ctrl-C)".to_string()
        }
        StopReason::Cancelled => "output closed".to_string(),
    };
    match a.format {
        Format::Text => {
            if tokenizer.is_none() {
                let ids: Vec<String> = out.generated_ids.iter().map(u32::to_string).collect();
                write!(stdout, "{}", ids.join(","))?;
            }
            writeln!(stdout)?;
            stdout.flush()?;
            eprintln!(
                "[{device_name}, {}] load {:.0} ms (compile {:.0} ms) | prompt {} tokens in {:.1} ms ({:.1} tok/s) | generated {} tokens, {:.1} tok/s | first token {:.1} ms | stopped: {stop} | seed {}",
                engine.dtype(),
                load_ms,
                engine.compile_time().as_secs_f64() * 1e3,
                t.prompt_tokens,
                t.prefill.as_secs_f64() * 1e3,
                t.prefill_tokens_per_second(),
                out.generated_ids.len(),
                t.decode_tokens_per_second(),
                t.time_to_first_token.as_secs_f64() * 1e3,
                sampling.seed,
            );
        }
        Format::Json => {
            let mut obj = json!({
                "model": model.dir.display().to_string(),
                "architecture": model.config.arch.name(),
                "device": device_name,
                "dtype": engine.dtype().name(),
                "prompt_ids": out.prompt_ids,
                "generated_ids": out.generated_ids,
                "text": out.text,
                "stop_reason": out.stop_reason,
                "interrupted": super::interrupt::requested(),
                "seed": sampling.seed,
                "timings": {
                    "load_ms": load_ms,
                    "compile_ms": engine.compile_time().as_secs_f64() * 1e3,
                    "prefill_ms": t.prefill.as_secs_f64() * 1e3,
                    "prefill_tokens_per_s": t.prefill_tokens_per_second(),
                    "time_to_first_token_ms": t.time_to_first_token.as_secs_f64() * 1e3,
                    "decode_ms": t.decode.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
                    "decode_tokens_per_s": t.decode_tokens_per_second(),
                },
            });
            if let Some(l) = &out.last_prompt_logits {
                obj["last_prompt_logits"] = json!(l);
            }
            serde_json::to_writer(&mut stdout, &obj)?;
            writeln!(stdout)?;
        }
    }
    if out.stop_reason == StopReason::ContextLimit {
        eprintln!("stopped: {stop}");
    }
    Ok(())
}
