//! OpenAI request bodies: parsing, checking every field, and turning them into a [`Job`] for the
//! scheduler. Everything a client can get wrong is refused here with a 400 naming the field.

use super::error::ApiError;
use serde::Deserialize;
use serde_json::Value;
use switchyard::models::{ChatMessage, Model, SamplingParams, SequenceParams};

/// Fields completions and chat completions share.
#[derive(Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub tools: Option<Value>,
    pub best_of: Option<i64>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `/v1/completions`'s own fields.
#[derive(Deserialize)]
struct CompletionFields {
    prompt: Option<Value>,
    logprobs: Option<i64>,
}

/// `/v1/chat/completions`'s own fields.
#[derive(Deserialize)]
struct ChatFields {
    messages: Option<Vec<Value>>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<i64>,
}

/// Most alternatives per token a client may ask for (OpenAI allows 20 for chat).
const MAX_TOP_LOGPROBS: i64 = 20;
/// Most stop strings per request.
const MAX_STOPS: usize = 16;

/// A checked request, ready to become a job once the server knows its context.
pub struct Parsed {
    pub common: Common,
    pub prompt: Vec<u32>,
    pub logprobs: Option<usize>,
}

pub fn from_value<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::malformed(format!("bad request body: {e}")))
}

/// Parses the body as a JSON object.
pub fn json_object(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::malformed("the body must be a JSON object"));
    }
    Ok(v)
}

fn check_model(common: &Common, served: &str) -> Result<(), ApiError> {
    check_model_name(common.model.as_deref(), served)
}

/// A request's `model` must be the one served.
pub fn check_model_name(model: Option<&str>, served: &str) -> Result<(), ApiError> {
    match model {
        None => Err(ApiError::invalid(
            "model",
            "model: required (this server serves `".to_string() + served + "`)",
        )),
        Some(m) if m == served => Ok(()),
        Some(m) => Err(ApiError::unknown_model(m, served)),
    }
}

fn check_common(c: &Common) -> Result<(), ApiError> {
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("n: {n} choices asked for; this server returns one choice per request (send {n} requests)"),
            ));
        }
    }
    if c.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid("best_of", "best_of: only 1 is supported"));
    }
    if c.echo {
        return Err(ApiError::invalid("echo", "echo: not supported"));
    }
    if c.suffix.is_some() {
        return Err(ApiError::invalid("suffix", "suffix: not supported"));
    }
    if c.tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t != &Value::Array(vec![]))
    {
        return Err(ApiError::invalid(
            "tools",
            "tools: tool calls are not supported",
        ));
    }
    if c.stream_options.is_some() && !c.stream {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options: only allowed with stream: true",
        ));
    }
    Ok(())
}

pub fn token_ids(v: &[Value], vocab: usize, field: &str) -> Result<Vec<u32>, ApiError> {
    v.iter()
        .map(|t| match t.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            _ => Err(ApiError::invalid(
                field,
                format!("{field}: token id {t} is not an integer in [0, {vocab})"),
            )),
        })
        .collect()
}

/// The prompt of a completion: a string, or token ids (a one-element list of either is
/// accepted too).
fn completion_prompt(prompt: Option<&Value>, model: &Model) -> Result<Vec<u32>, ApiError> {
    let vocab = model.config.vocab_size;
    let text = |s: &str| -> Result<Vec<u32>, ApiError> {
        let tok = model.tokenizer.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "prompt",
                "prompt: this model has no tokenizer; send the prompt as token ids",
            )
        })?;
        tok.encode(s, true)
            .map_err(|e| ApiError::invalid("prompt", format!("prompt: {e}")))
    };
    let ids = match prompt {
        None => return Err(ApiError::invalid("prompt", "prompt: required")),
        Some(Value::String(s)) => text(s)?,
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            token_ids(items, vocab, "prompt")?
        }
        Some(Value::Array(items)) if items.len() == 1 => match &items[0] {
            Value::String(s) => text(s)?,
            Value::Array(ids) => token_ids(ids, vocab, "prompt")?,
            _ => return Err(ApiError::invalid(
                "prompt",
                "prompt: expected a string, a list of token ids, or a one-element list of either",
            )),
        },
        Some(Value::Array(items)) if items.len() > 1 => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "prompt: {} prompts in one request; send one request per prompt",
                    items.len()
                ),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "prompt: expected a string or a list of token ids",
            ))
        }
    };
    if ids.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt: it has no tokens"));
    }
    Ok(ids)
}

/// A completion request.
pub fn completion(body: &Value, model: &Model, served: &str) -> Result<Parsed, ApiError> {
    let common: Common = from_value(body)?;
    check_model(&common, served)?;
    check_common(&common)?;
    let own: CompletionFields = from_value(body)?;
    let logprobs = match own.logprobs {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs: {k} must be in [0, {MAX_TOP_LOGPROBS}]"),
            ))
        }
    };
    let prompt = completion_prompt(own.prompt.as_ref(), model)?;
    Ok(Parsed {
        common,
        prompt,
        logprobs,
    })
}

fn message(v: &Value, i: usize) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let bad = |what: &str| ApiError::invalid(&param, format!("{param}: {what}"));
    let role = v
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("needs a string `role`"))?;
    let role = match role {
        "system" | "developer" => "system",
        "user" | "assistant" => role,
        other => {
            return Err(bad(&format!(
                "role `{other}` is not one of system, developer, user, assistant"
            )))
        }
    };
    let content = match v.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(bad(&format!(
                            "content part of type {} is not supported (text only)",
                            kind.unwrap_or("?")
                        )))
                    }
                }
            }
            text
        }
        None | Some(Value::Null) if role == "assistant" => String::new(),
        _ => return Err(bad("needs `content`: a string or a list of text parts")),
    };
    Ok(ChatMessage::new(role, &content))
}

/// A chat completion request, rendered through the model's chat template.
pub fn chat(body: &Value, model: &Model, served: &str) -> Result<Parsed, ApiError> {
    let common: Common = from_value(body)?;
    check_model(&common, served)?;
    check_common(&common)?;
    let own: ChatFields = from_value(body)?;
    let logprobs = match (own.logprobs, own.top_logprobs) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs: needs logprobs: true",
            ))
        }
        (true, None) => Some(0),
        (true, Some(k)) if (0..=MAX_TOP_LOGPROBS).contains(&k) => Some(k as usize),
        (true, Some(k)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs: {k} must be in [0, {MAX_TOP_LOGPROBS}]"),
            ))
        }
    };
    let messages = own
        .messages
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("messages", "messages: a non-empty list is required"))?
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let template = model
        .tokenizer_config
        .as_ref()
        .filter(|t| t.chat_template.is_some())
        .ok_or_else(|| {
            ApiError::invalid(
                "messages",
                "messages: this model has no chat template; use /v1/completions",
            )
        })?;
    let text = template.render_chat(&messages, true).map_err(|e| {
        ApiError::invalid(
            "messages",
            format!("messages: the chat template failed: {e}"),
        )
    })?;
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| ApiError::invalid("messages", "messages: this model has no tokenizer"))?;
    let prompt = tok
        .encode(&text, false)
        .map_err(|e| ApiError::invalid("messages", format!("messages: {e}")))?;
    Ok(Parsed {
        common,
        prompt,
        logprobs,
    })
}

fn stops(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid("stop", "stop: expected strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "stop: expected a string or a list of strings",
            ))
        }
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            "stop",
            format!("stop: at most {MAX_STOPS} strings"),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop: empty strings never match"));
    }
    Ok(list)
}

/// The generation settings of a parsed request, checked against the context.
pub fn sequence_params(
    parsed: &Parsed,
    defaults: &SamplingParams,
    eos: &[u32],
    max_context: usize,
    random_seed: u64,
) -> Result<SequenceParams, ApiError> {
    let c = &parsed.common;
    let (param, max_tokens) = match (c.max_completion_tokens, c.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    let p = parsed.prompt.len();
    if p >= max_context {
        return Err(ApiError::context_length(
            "prompt",
            format!("this model's maximum context length is {max_context} tokens, but the prompt has {p} (room for at least one new token is needed)"),
        ));
    }
    let max_new = match max_tokens {
        None => max_context - p,
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(param, format!("{param}: {m} must be at least 1")))
        }
        Some(m) if p as i64 + m > max_context as i64 => {
            return Err(ApiError::context_length(
                param,
                format!("this model's maximum context length is {max_context} tokens; the request asks for {} ({p} in the prompt, {m} in the completion): reduce {param} or the prompt", p as i64 + m),
            ))
        }
        Some(m) => m as usize,
    };
    let top_k = match c.top_k {
        None => defaults.top_k,
        Some(-1) | Some(0) => None,
        Some(k) if k > 0 => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k: {k} must be -1 (all) or at least 1"),
            ))
        }
    };
    let sampling = SamplingParams {
        temperature: c.temperature.unwrap_or(defaults.temperature),
        top_k,
        top_p: c.top_p.unwrap_or(defaults.top_p),
        min_p: c.min_p.unwrap_or(defaults.min_p),
        repetition_penalty: c.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        seed: c.seed.map_or(random_seed, |s| s as u64),
    };
    sampling.validate().map_err(|e| ApiError::from_model(&e))?;
    Ok(SequenceParams {
        max_new_tokens: max_new,
        sampling,
        eos_token_ids: eos.to_vec(),
        ignore_eos: c.ignore_eos,
        stop_strings: stops(c.stop.as_ref())?,
        return_logits: parsed.logprobs.is_some(),
    })
}

/// Sampling when a request says nothing: the model's generation config, else OpenAI's
/// default temperature of 1.
pub fn default_sampling(model: &Model) -> SamplingParams {
    let g = model.generation_config.clone().unwrap_or_default();
    let sampling = g.do_sample == Some(true);
    SamplingParams {
        temperature: if sampling {
            g.temperature.unwrap_or(1.0)
        } else {
            1.0
        },
        top_k: if sampling {
            g.top_k.filter(|&k| k > 0)
        } else {
            None
        },
        top_p: if sampling {
            g.top_p.unwrap_or(1.0)
        } else {
            1.0
        },
        repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
        ..SamplingParams::default()
    }
}
