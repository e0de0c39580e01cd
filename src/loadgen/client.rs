//! One streamed request over the OpenAI completions API, timed token by token.

use super::workload::RequestSpec;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Instant;

/// Where to send requests.
#[derive(Clone)]
pub struct Target {
    pub http: reqwest::Client,
    /// `http://host:port`.
    pub base: String,
    pub model: String,
    pub api_key: Option<String>,
}

/// What one request measured.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Seconds from the start of its point to sending.
    pub start_s: f64,
    pub prompt_tokens: Option<usize>,
    pub output_tokens: usize,
    /// Seconds to the first generated text.
    pub ttft_s: Option<f64>,
    /// Seconds between consecutive chunks of text.
    pub itl_s: Vec<f64>,
    /// Seconds from sending to the end of the stream.
    pub e2e_s: f64,
    pub error: Option<String>,
}

impl RequestRecord {
    /// Time per output token after the first.
    pub fn tpot_s(&self) -> Option<f64> {
        match (self.ttft_s, self.output_tokens) {
            (Some(t), n) if n > 1 => Some((self.e2e_s - t) / (n - 1) as f64),
            _ => None,
        }
    }
}

/// The message of an OpenAI error body, else the body itself (shortened).
fn error_message(status: u16, body: &str) -> String {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("HTTP {status}: {msg}")
}

/// Sends `spec` and reads its stream to the end.
pub async fn send(target: &Target, spec: &RequestSpec, point_start: Instant) -> RequestRecord {
    let sent = Instant::now();
    let mut record = RequestRecord {
        start_s: (sent - point_start).as_secs_f64(),
        prompt_tokens: spec.prompt_tokens,
        output_tokens: 0,
        ttft_s: None,
        itl_s: Vec::new(),
        e2e_s: 0.0,
        error: None,
    };
    let body = json!({
        "model": target.model,
        "prompt": spec.prompt,
        "max_tokens": spec.max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut request = target
        .http
        .post(format!("{}/v1/completions", target.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = &target.api_key {
        request = request.bearer_auth(key);
    }
    let result = async {
        let response = request
            .send()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(error_message(status.as_u16(), &text));
        }
        let mut events = response.bytes_stream().eventsource();
        let mut chunks = 0usize;
        let mut last = sent;
        let mut usage_tokens = None;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| format!("stream: {e}"))?;
            if event.data.trim() == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(&event.data)
                .map_err(|e| format!("a stream event is not JSON ({e}): {}", event.data))?;
            if let Some(e) = v.get("error") {
                return Err(format!(
                    "in the stream: {}",
                    e["message"].as_str().unwrap_or("?")
                ));
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage_tokens = Some(n as usize);
                if let Some(p) = v["usage"]["prompt_tokens"].as_u64() {
                    record.prompt_tokens = Some(p as usize);
                }
            }
            let text = v["choices"][0]["text"].as_str().unwrap_or("");
            if !text.is_empty() {
                let now = Instant::now();
                if chunks == 0 {
                    record.ttft_s = Some((now - sent).as_secs_f64());
                } else {
                    record.itl_s.push((now - last).as_secs_f64());
                }
                last = now;
                chunks += 1;
            }
        }
        record.output_tokens = usage_tokens.unwrap_or(chunks);
        Ok(())
    }
    .await;
    record.e2e_s = sent.elapsed().as_secs_f64();
    if let Err(e) = result {
        record.error = Some(e);
    } else if record.output_tokens == 0 {
        record.error = Some("the stream ended without tokens".into());
    }
    record
}
