//! `/v1/embeddings` of `switchyard serve` on the encoder fixtures: the vectors
//! sentence-transformers gives (tests/fixtures/*/golden.json), for a string, a list, token ids
//! and base64; concurrent requests batched together getting what they get alone; every refusal
//! as an OpenAI error body; the generator and embedding endpoints refusing each other's models;
//! the emulated `neuron:0`.

use base64::Engine as _;
use serde_json::{json, Value};

mod common;

use common::Server;

const BERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bert");

fn golden(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/{name}/golden.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i, "{d}");
            assert_eq!(d["object"], "embedding");
            match &d["embedding"] {
                Value::String(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap()
                    .chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                list => list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            }
        })
        .collect()
}

/// Max abs error ≤ 1e-4 against sentence-transformers (the bound tests/embeddings.rs derives).
fn assert_golden(got: &[Vec<f32>], want: &Value) {
    let want: Vec<Vec<f32>> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err <= 1e-4, "input {i}: max abs error {err:e}");
    }
}

fn start(model: &str, extra: &[&str], env: &[(&str, String)]) -> Server {
    Server::start_model(model, extra, env)
}

fn embeddings_match_the_goldens(s: &Server, name: &str) {
    let g = golden(name);
    let texts = g["texts"].clone();
    let (status, v) = s.post(
        "/v1/embeddings",
        &json!({"model": "fixture", "input": texts}),
    );
    assert_eq!(status, 200, "{v}");
    assert_golden(&vectors(&v), &g["embeddings"]);
    let tokens: usize = g["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_array().unwrap().len())
        .sum();
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": tokens, "total_tokens": tokens})
    );
    assert_eq!(
        (v["object"].as_str(), v["model"].as_str()),
        (Some("list"), Some("fixture"))
    );
    // One string; token ids; base64.
    let (_, one) = s.post(
        "/v1/embeddings",
        &json!({"model": "fixture", "input": texts[1]}),
    );
    assert_golden(&vectors(&one), &json!([g["embeddings"][1]]));
    let (_, ids) = s.post(
        "/v1/embeddings",
        &json!({"model": "fixture", "input": g["ids"]}),
    );
    assert_golden(&vectors(&ids), &g["embeddings"]);
    let (_, b64) = s.post(
        "/v1/embeddings",
        &json!({"model": "fixture", "input": g["ids"][2], "encoding_format": "base64"}),
    );
    assert!(b64["data"][0]["embedding"].is_string(), "{b64}");
    assert_golden(&vectors(&b64), &json!([g["embeddings"][2]]));
}

#[test]
fn embeddings_on_cpu_match_sentence_transformers() {
    let s = start(BERT, &[], &[]);
    embeddings_match_the_goldens(&s, "bert");
    // Many requests at once are batched together and each gets its own vectors.
    let g = golden("bert");
    let n = g["texts"].as_array().unwrap().len();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (s, g) = (&s, &g);
                scope.spawn(move || {
                    let (status, v) = s.post(
                        "/v1/embeddings",
                        &json!({"model": "fixture", "input": [g["texts"][i % n], g["texts"][(i + 1) % n]]}),
                    );
                    assert_eq!(status, 200, "{v}");
                    assert_golden(
                        &vectors(&v),
                        &json!([g["embeddings"][i % n], g["embeddings"][(i + 1) % n]]),
                    );
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(
        s.metric("switchyard:requests_total{outcome=\"embedded\"}"),
        28.0
    );
}

#[test]
fn embeddings_on_emulated_neuron_match_sentence_transformers() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let cache = tempfile::tempdir().unwrap();
    let s = start(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xlm-roberta"),
        &["--device", "neuron:0", "--slots", "8"],
        &[
            ("SWITCHYARD_NRT_LIB", lib.display().to_string()),
            (
                "SWITCHYARD_NEURON_CACHE",
                cache.path().display().to_string(),
            ),
        ],
    );
    embeddings_match_the_goldens(&s, "xlm-roberta");
}

#[test]
fn bad_embedding_requests_get_openai_errors() {
    let s = start(BERT, &["--no-truncate"], &[]);
    let long = "word ".repeat(100);
    for (body, param, needle) in [
        (json!({"input": "x"}), "model", "required"),
        (json!({"model": "other", "input": "x"}), "model", "other"),
        (json!({"model": "fixture"}), "input", "required"),
        (json!({"model": "fixture", "input": []}), "input", "empty"),
        (
            json!({"model": "fixture", "input": ["a", ""]}),
            "input",
            "input 1 is empty",
        ),
        (
            json!({"model": "fixture", "input": [1, "a"]}),
            "input",
            "expected a string",
        ),
        (
            json!({"model": "fixture", "input": [[1, 2], [99999]]}),
            "input",
            "99999",
        ),
        (
            json!({"model": "fixture", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
            "hex",
        ),
        (
            json!({"model": "fixture", "input": "x", "dimensions": 8}),
            "dimensions",
            "32-dimensional",
        ),
        (
            json!({"model": "fixture", "input": ["ok", long]}),
            "input",
            "at most 24",
        ),
        (
            json!({"model": "fixture", "input": vec!["a"; 2049]}),
            "input",
            "at most 2048",
        ),
    ] {
        let (status, v) = s.post("/v1/embeddings", &body);
        // An unknown model is a 404, as OpenAI answers it.
        let want = if needle == "other" { 404 } else { 400 };
        assert_eq!(status, want, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // The model's own size is accepted.
    let (status, _) = s.post(
        "/v1/embeddings",
        &json!({"model": "fixture", "input": "x", "dimensions": 32}),
    );
    assert_eq!(status, 200);
    // An encoder does not complete text, and a text generator makes no embeddings.
    let (status, v) = s.post(
        "/v1/completions",
        &json!({"model": "fixture", "prompt": "x"}),
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/embeddings"),
        "{v}"
    );
    let generator = Server::start(&[]);
    let (status, v) = generator.post("/v1/embeddings", &json!({"model": "fixture", "input": "x"}));
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no embeddings"),
        "{v}"
    );
    // The malformed one never reached the worker, and the valid one did.
    assert_eq!(
        s.metric("switchyard:requests_total{outcome=\"embedded\"}"),
        1.0
    );
}
