//! OpenAI response bodies, whole and as stream chunks, for completions and chat completions.

use super::scheduler::{Done, TokenLogprob, TokenOut};
use serde_json::{json, Value};
use switchyard::models::Tokenizer;

/// Which endpoint a response belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completion,
    Chat,
}

/// What every body of one request repeats.
pub struct Envelope<'a> {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: &'a str,
    pub tokenizer: Option<&'a Tokenizer>,
}

fn usage(d: &Done) -> Value {
    json!({
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
    })
}

impl Envelope<'_> {
    fn piece(&self, token: u32) -> String {
        self.tokenizer
            .and_then(|t| t.decode(&[token], false).ok())
            .unwrap_or_else(|| format!("<{token}>"))
    }

    /// Chat's logprob entry for one token.
    fn chat_logprob(&self, token: u32, lp: &TokenLogprob) -> Value {
        let entry = |t: u32, logprob: f32| {
            let s = self.piece(t);
            json!({ "token": s, "logprob": logprob, "bytes": s.as_bytes() })
        };
        let mut e = entry(token, lp.logprob);
        e["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
        e
    }

    /// Completions' logprobs object for `tokens`, whose text starts at `offset`.
    fn completion_logprobs(&self, tokens: &[&TokenOut], mut offset: usize) -> Value {
        let mut names = Vec::new();
        let mut lps = Vec::new();
        let mut tops = Vec::new();
        let mut offsets = Vec::new();
        for t in tokens {
            let Some(lp) = &t.logprob else { continue };
            names.push(self.piece(t.token));
            lps.push(lp.logprob);
            let top: serde_json::Map<String, Value> = lp
                .top
                .iter()
                .map(|&(id, l)| (self.piece(id), json!(l)))
                .collect();
            tops.push(top);
            offsets.push(offset);
            offset += t.text.len();
        }
        json!({
            "tokens": names,
            "token_logprobs": lps,
            "top_logprobs": tops,
            "text_offset": offsets,
        })
    }

    fn head(&self, object: &str) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
        })
    }

    /// The whole response of a request that did not stream.
    pub fn whole(&self, tokens: &[TokenOut], done: &Done, want_logprobs: bool) -> Value {
        let text: String = tokens.iter().map(|t| t.text.as_str()).collect();
        let refs: Vec<&TokenOut> = tokens.iter().collect();
        let finish = done.finish_reason.as_str();
        let mut body = match self.endpoint {
            Endpoint::Completion => {
                let mut b = self.head("text_completion");
                let logprobs = want_logprobs.then(|| self.completion_logprobs(&refs, 0));
                b["choices"] = json!([{
                    "index": 0,
                    "text": text,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }]);
                b
            }
            Endpoint::Chat => {
                let mut b = self.head("chat.completion");
                let logprobs = want_logprobs.then(|| {
                    let content: Vec<Value> = tokens
                        .iter()
                        .filter_map(|t| t.logprob.as_ref().map(|lp| self.chat_logprob(t.token, lp)))
                        .collect();
                    json!({ "content": content })
                });
                b["choices"] = json!([{
                    "index": 0,
                    "message": { "role": "assistant", "content": text },
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }]);
                b
            }
        };
        body["usage"] = usage(done);
        body
    }

    /// The first chunk of a chat stream: the assistant's role.
    pub fn role_chunk(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            let mut b = self.head("chat.completion.chunk");
            b["choices"] = json!([{
                "index": 0,
                "delta": { "role": "assistant", "content": "" },
                "logprobs": null,
                "finish_reason": null,
            }]);
            b
        })
    }

    /// A chunk carrying one token's text; `offset` is where its text starts in the whole.
    pub fn token_chunk(&self, t: &TokenOut, offset: usize) -> Value {
        match self.endpoint {
            Endpoint::Completion => {
                let mut b = self.head("text_completion");
                let logprobs = t
                    .logprob
                    .as_ref()
                    .map(|_| self.completion_logprobs(&[t], offset));
                b["choices"] = json!([{
                    "index": 0,
                    "text": t.text,
                    "logprobs": logprobs,
                    "finish_reason": null,
                }]);
                b
            }
            Endpoint::Chat => {
                let mut b = self.head("chat.completion.chunk");
                let logprobs = t
                    .logprob
                    .as_ref()
                    .map(|lp| json!({ "content": [self.chat_logprob(t.token, lp)] }));
                b["choices"] = json!([{
                    "index": 0,
                    "delta": { "content": t.text },
                    "logprobs": logprobs,
                    "finish_reason": null,
                }]);
                b
            }
        }
    }

    /// The chunk that ends the choice.
    pub fn finish_chunk(&self, done: &Done) -> Value {
        let finish = done.finish_reason.as_str();
        match self.endpoint {
            Endpoint::Completion => {
                let mut b = self.head("text_completion");
                b["choices"] = json!([{
                    "index": 0, "text": "", "logprobs": null, "finish_reason": finish,
                }]);
                b
            }
            Endpoint::Chat => {
                let mut b = self.head("chat.completion.chunk");
                b["choices"] = json!([{
                    "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish,
                }]);
                b
            }
        }
    }

    /// The last chunk when the client asked for `stream_options.include_usage`.
    pub fn usage_chunk(&self, done: &Done) -> Value {
        let object = match self.endpoint {
            Endpoint::Completion => "text_completion",
            Endpoint::Chat => "chat.completion.chunk",
        };
        let mut b = self.head(object);
        b["choices"] = json!([]);
        b["usage"] = usage(done);
        b
    }
}
