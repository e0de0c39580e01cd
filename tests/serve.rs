//! `switchyard serve` over HTTP, as clients see it: completions and chat, whole and streamed,
//! token-id prompts, stop strings, logprobs, every refusal as an OpenAI error body, the API
//! key, the bounded queue (429), cancellation by disconnecting, concurrent requests getting
//! exactly the tokens they get alone (cpu and emulated `neuron:0`), and shutdown on SIGTERM.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

mod common;

use common::{read, Server, MODEL};

fn completion(prompt: Value, max_tokens: usize) -> Value {
    json!({
        "model": "fixture", "prompt": prompt, "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": true,
    })
}

/// The text and usage of a streamed completion or chat.
fn streamed_text(events: &[String]) -> (String, Option<Value>, Option<String>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let mut text = String::new();
    let mut usage = None;
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for c in v["choices"].as_array().unwrap() {
            let piece = c["text"].as_str().or(c["delta"]["content"].as_str());
            text.push_str(piece.unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (text, usage, finish)
}

#[test]
fn completions_and_chat_whole_and_streamed() {
    let s = Server::start(&["--slots", "4"]);
    let (status, models) = s.get("/v1/models");
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "fixture");

    // The library's greedy completion of the same prompt is the reference.
    let mut g = switchyard::TextGenerator::load(MODEL, "cpu").unwrap();
    let reference = g
        .complete(
            "Once upon a time",
            &switchyard::TextOptions {
                max_new_tokens: Some(12),
                ignore_eos: true,
                sampling: Some(Default::default()),
                ..Default::default()
            },
        )
        .unwrap();
    let (status, whole) = s.post(
        "/v1/completions",
        &completion(json!("Once upon a time"), 12),
    );
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["text"], reference.text.as_str());
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["usage"]["completion_tokens"], 12);
    assert_eq!(whole["usage"]["prompt_tokens"], reference.prompt_tokens);
    assert_eq!(whole["usage"]["total_tokens"], reference.prompt_tokens + 12);

    // The same prompt as token ids, streamed with usage.
    let ids = g
        .model()
        .tokenizer
        .as_ref()
        .unwrap()
        .encode("Once upon a time", true)
        .unwrap();
    let mut body = completion(json!(ids), 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (text, usage, finish) = streamed_text(&s.stream("/v1/completions", &body));
    assert_eq!(text, reference.text);
    assert_eq!(usage.unwrap()["completion_tokens"], 12);
    assert_eq!(finish.as_deref(), Some("length"));

    // A stop string taken from the middle of the text ends it there, excluded.
    let stop: String = reference.text.chars().skip(5).take(3).collect();
    let cut = reference.text.find(&stop).unwrap();
    let mut body = completion(json!("Once upon a time"), 12);
    body["stop"] = json!([stop]);
    let (_, stopped) = s.post("/v1/completions", &body);
    assert_eq!(stopped["choices"][0]["text"], &reference.text[..cut]);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    // Chat: whole and streamed agree; the template's prompt is longer than the message.
    let chat = json!({
        "model": "fixture", "max_completion_tokens": 8, "temperature": 0, "ignore_eos": true,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    });
    let (status, whole) = s.post("/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert!(whole["usage"]["prompt_tokens"].as_u64().unwrap() > 4);
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let events = s.stream("/v1/chat/completions", &streamed);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (text, usage, finish) = streamed_text(&events);
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(usage.is_none(), "usage only when asked for");
    assert_eq!(finish.as_deref(), Some("length"));

    // Logprobs: the chosen token's log-probability, alternatives most likely first; greedy
    // chooses the most likely.
    let mut body = chat.clone();
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let (_, lp) = s.post("/v1/chat/completions", &body);
    let content = lp["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8);
    for c in content {
        let top = c["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let l: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(l[0] >= l[1] && l[1] >= l[2] && l[0] <= 0.0);
        assert_eq!(c["logprob"].as_f64().unwrap(), l[0]);
    }
    let mut body = completion(json!("Once upon a time"), 4);
    body["logprobs"] = json!(2);
    let (_, lp) = s.post("/v1/completions", &body);
    let l = &lp["choices"][0]["logprobs"];
    assert_eq!(l["token_logprobs"].as_array().unwrap().len(), 4);
    assert_eq!(l["top_logprobs"][0].as_object().unwrap().len(), 2);

    // Seeded sampling repeats itself.
    let sampled = json!({"model": "fixture", "prompt": "Hello", "max_tokens": 10,
        "temperature": 0.9, "top_p": 0.95, "top_k": 40, "seed": 11, "ignore_eos": true,
        "presence_penalty": 0.5, "frequency_penalty": 0.2, "repetition_penalty": 1.1});
    let a = s.post("/v1/completions", &sampled).1["choices"][0]["text"].clone();
    let b = s.post("/v1/completions", &sampled).1["choices"][0]["text"].clone();
    assert_eq!(a, b);
}

#[test]
fn bad_requests_get_openai_errors_and_4xx() {
    let s = Server::start(&[
        "--slots",
        "2",
        "--max-context",
        "64",
        "--max-body-bytes",
        "4096",
    ]);
    let expect = |status: u16, body: &str, want: u16, param: Option<&str>| {
        let (got, v) = s.post_raw("/v1/completions", body, &[]);
        assert_eq!(got, want, "{body} -> {v}");
        let e = &v["error"];
        assert!(e["message"].as_str().unwrap().len() > 5, "{v}");
        assert!(e["type"].is_string());
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{v}");
        }
        let _ = status;
    };
    expect(0, "{not json", 400, None);
    expect(0, "[1, 2]", 400, None);
    expect(
        0,
        r#"{"model": "other", "prompt": "x"}"#,
        404,
        Some("model"),
    );
    expect(0, r#"{"prompt": "x"}"#, 400, Some("model"));
    expect(0, r#"{"model": "fixture"}"#, 400, Some("prompt"));
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "n": 2}"#,
        400,
        Some("n"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "max_tokens": 0}"#,
        400,
        Some("max_tokens"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "max_tokens": 1000}"#,
        400,
        Some("max_tokens"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "temperature": -0.5}"#,
        400,
        Some("temperature"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "top_p": 0}"#,
        400,
        Some("top_p"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "frequency_penalty": 3}"#,
        400,
        Some("frequency_penalty"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "temperature": "hot"}"#,
        400,
        None,
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": [1, 999999]}"#,
        400,
        Some("prompt"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "stop": [""]}"#,
        400,
        Some("stop"),
    );
    expect(
        0,
        r#"{"model": "fixture", "prompt": "x", "logprobs": 50}"#,
        400,
        Some("logprobs"),
    );
    let long: Vec<u32> = (0..80).map(|i| 10 + i % 50).collect();
    expect(
        0,
        &json!({"model": "fixture", "prompt": long}).to_string(),
        400,
        Some("prompt"),
    );
    let huge = json!({"model": "fixture", "prompt": "x".repeat(5000)}).to_string();
    expect(0, &huge, 413, None);
    let (got, v) = s.post_raw(
        "/v1/chat/completions",
        r#"{"model": "fixture", "messages": [{"role": "robot", "content": "x"}]}"#,
        &[],
    );
    assert_eq!(
        (got, v["error"]["param"].as_str()),
        (400, Some("messages[0]"))
    );
    let (got, v) = s.post_raw("/v1/embeddings-nope", "{}", &[]);
    assert_eq!(got, 404, "{v}");
    // Still serving, and every refusal counted.
    let (status, _) = s.post("/v1/completions", &completion(json!("Hi"), 2));
    assert_eq!(status, 200);
    assert!(s.metric("switchyard:requests_total{outcome=\"invalid\"}") >= 16.0);
}

#[test]
fn api_key_guards_v1_but_not_health() {
    let s = Server::start_env(&[], &[("SWITCHYARD_API_KEY", "sekrit".into())]);
    let (status, v) = s.post_raw(
        "/v1/completions",
        &completion(json!("Hi"), 2).to_string(),
        &[],
    );
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(s.post_raw("/v1/completions", "{}", &wrong).0, 401);
    let (status, _) = read(ureq::get(&format!("{}/v1/models", s.base)).call());
    assert_eq!(status, 401);
    let right = [("Authorization", "Bearer sekrit")];
    let (status, v) = s.post_raw(
        "/v1/completions",
        &completion(json!("Hi"), 2).to_string(),
        &right,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(s.get("/health").0, 200);
    assert_eq!(s.get("/metrics").0, 200);
}

/// Opens a streamed completion and returns its reader once the headers arrived.
fn open_stream(s: &Server, max_tokens: usize) -> Result<Box<dyn Read + Send>, (u16, String)> {
    let body = json!({"model": "fixture", "prompt": [1, 2, 3], "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": true, "stream": true});
    match ureq::post(&format!("{}/v1/completions", s.base)).send_string(&body.to_string()) {
        Ok(r) => Ok(Box::new(r.into_reader())),
        Err(ureq::Error::Status(code, r)) => {
            let retry = r.header("retry-after").map(str::to_string);
            Err((code, format!("{retry:?} {}", r.into_string().unwrap())))
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_full_queue_answers_429_and_a_disconnect_frees_the_slot() {
    let s = Server::start_slow(&["--slots", "1", "--max-queue", "1", "--max-context", "256"]);
    // One running, one waiting: the third is refused with Retry-After.
    let running = open_stream(&s, 250).unwrap();
    let waiting = open_stream(&s, 250).unwrap();
    let (code, body) = open_stream(&s, 4).err().expect("the queue is full");
    assert_eq!(code, 429);
    assert!(
        body.starts_with("Some(\"1\")") && body.contains("rate_limit_exceeded"),
        "{body}"
    );
    // Admission into a slot is the scheduler's, between its steps: on a loaded machine all
    // three requests can be answered before it has taken the first one in.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.metric("switchyard:kv_slots_used") != 1.0 {
        assert!(Instant::now() < deadline, "{}", s.get("/metrics").1);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The running client goes away mid-generation (a model without a tokenizer streams no
    // text until the end); so does the waiting one.
    std::thread::sleep(Duration::from_millis(100));
    drop(running);
    drop(waiting);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.metric("switchyard:requests_total{outcome=\"cancelled\"}") < 2.0 {
        assert!(Instant::now() < deadline, "{}", s.get("/metrics").1);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.metric("switchyard:kv_slots_used"), 0.0);
    assert_eq!(s.metric("switchyard:num_requests_running"), 0.0);
    assert_eq!(s.metric("switchyard:num_requests_waiting"), 0.0);
    assert_eq!(
        s.metric("switchyard:requests_total{outcome=\"rejected\"}"),
        1.0
    );
    // And the slot serves the next request.
    let (status, v) = s.post("/v1/completions", &completion(json!([1, 2]), 3));
    assert_eq!(
        (status, v["usage"]["completion_tokens"].as_u64()),
        (200, Some(3))
    );
}

/// Requests of different prompts and lengths, first one at a time, then all at once (more than
/// the slots, so some queue and join mid-flight): each gets exactly its tokens alone.
fn concurrent_requests_match_alone(device: &str, env: &[(&str, String)]) {
    let s = Server::start_env(
        &[
            "--device",
            device,
            "--slots",
            "4",
            "--max-context",
            "128",
            "--buckets",
            "64,128",
            "--prefill-chunk",
            "16",
        ],
        env,
    );
    let words = [
        "Once", "upon", "a", "time", "in", "a", "land", "far", "away", "there",
    ];
    let bodies: Vec<Value> = (0..12)
        .map(|i| {
            let prompt = words[..1 + i % words.len()].join(" ");
            let mut b = completion(json!(prompt), 4 + (i * 7) % 29);
            b["stream"] = json!(i % 2 == 0);
            b
        })
        .collect();
    let run = |b: &Value| -> String {
        if b["stream"] == true {
            streamed_text(&s.stream("/v1/completions", b)).0
        } else {
            let (status, v) = s.post("/v1/completions", b);
            assert_eq!(status, 200, "{v}");
            v["choices"][0]["text"].as_str().unwrap().to_string()
        }
    };
    let alone: Vec<String> = bodies.iter().map(run).collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let run = &run;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(3 * i as u64));
                    run(b)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i} on {device}");
    }
    assert_eq!(s.metric("switchyard:kv_slots_used"), 0.0);
    assert_eq!(
        s.metric("switchyard:requests_total{outcome=\"length\"}"),
        24.0
    );
}

#[test]
fn concurrent_requests_match_alone_on_cpu() {
    concurrent_requests_match_alone("cpu", &[]);
}

#[test]
fn concurrent_requests_match_alone_on_emulated_neuron() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let cache = tempfile::tempdir().unwrap();
    concurrent_requests_match_alone(
        "neuron:0",
        &[
            ("SWITCHYARD_NRT_LIB", lib.display().to_string()),
            (
                "SWITCHYARD_NEURON_CACHE",
                cache.path().display().to_string(),
            ),
        ],
    );
}

#[test]
fn sigterm_ends_streams_with_a_final_event_and_exits_zero() {
    let s = Server::start_slow(&["--slots", "1", "--max-context", "256"]);
    let reader = open_stream(&s, 250).unwrap();
    let collect = std::thread::spawn(move || {
        BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(100));
    let (code, lines) = s.terminate();
    assert_eq!(code, 0, "{lines:?}");
    let events = collect.join().unwrap();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{last}"
    );
}
