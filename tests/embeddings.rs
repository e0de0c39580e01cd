//! Sentence embeddings against sentence-transformers' goldens (tests/fixtures/{bert,xlm-roberta},
//! made by scripts/make_encoder_fixtures.py) on the CPU and the emulated `neuron:0`: each text
//! alone, all texts in one padded batch of mixed lengths, every pooling mode, token-id inputs,
//! truncation at the model's limit and refusal without it.
//!
//! Tolerances are the acceptance bounds for f32: cosine similarity ≥ 0.99999 and max
//! abs error ≤ 1e-4 against the reference. Both sides compute in f32 and differ only in
//! summation order (matmul blocking, reductions), which moves these O(1) values by ~1e-6, so
//! a real error (a wrong mask, offset or norm) lands orders of magnitude outside them.

use serde_json::Value;
use std::path::PathBuf;
use switchyard::candle::CandleDevice;
use switchyard::models::{Embedder, EmbedderOptions, EncoderModel, ModelError, Pooling};
use switchyard::neuron::NeuronDevice;
use switchyard::Device;

const MIN_COSINE: f64 = 0.99999;
const MAX_ABS: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Golden {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
    pooling: Pooling,
    normalize: bool,
    embeddings: Vec<Vec<f32>>,
    by_pooling: Vec<(Pooling, Vec<Vec<f32>>)>,
}

fn golden(name: &str) -> Golden {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixture(name).join("golden.json")).unwrap()).unwrap();
    let vectors = |v: &Value| -> Vec<Vec<f32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    Golden {
        texts: v["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        ids: v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect(),
        pooling: Pooling::from_name(v["pooling"].as_str().unwrap()).unwrap(),
        normalize: v["normalize"].as_bool().unwrap(),
        embeddings: vectors(&v["embeddings"]),
        by_pooling: v["by_pooling"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, e)| (Pooling::from_name(k).unwrap(), vectors(e)))
            .collect(),
    }
}

fn assert_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}: number of vectors");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: text {i}: dimensions");
        let max_abs = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(g) * norm(w));
        assert!(
            cosine >= MIN_COSINE && max_abs <= MAX_ABS,
            "{what}: text {i}: cosine {cosine:.8}, max abs error {max_abs:e}"
        );
    }
}

fn neuron() -> NeuronDevice {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    NeuronDevice::open_with_library(0, Some(&lib)).expect("the emulated NeuronCore opens")
}

/// Static shapes small enough to cross buckets with the fixtures' six texts: batches of 1, 4
/// and 8 (the six texts pad to 8 rows), lengths of 8 and 24 tokens.
fn static_options() -> EmbedderOptions {
    EmbedderOptions {
        max_batch: 8,
        batch_buckets: Some(vec![1, 4]),
        token_buckets: Some(vec![8]),
        ..Default::default()
    }
}

fn check_goldens<D: Device>(open: impl Fn() -> D, options: EmbedderOptions, name: &str) {
    let g = golden(name);
    let model = EncoderModel::load(fixture(name).to_str().unwrap()).unwrap();
    let e = Embedder::new(open(), &model, &options).unwrap();
    let device = e.device().info().name.clone();
    assert_eq!((e.pooling(), e.normalizes()), (g.pooling, g.normalize));
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    assert_eq!(e.tokenize(&texts).unwrap(), g.ids, "{name}: token ids");
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| e.embed(&[t]).unwrap().remove(0))
        .collect();
    assert_close(&format!("{name} on {device}, alone"), &alone, &g.embeddings);
    let batched = e.embed(&texts).unwrap();
    assert_close(
        &format!("{name} on {device}, batched"),
        &batched,
        &g.embeddings,
    );
    let from_ids = e.embed_ids(&g.ids).unwrap();
    assert_close(&format!("{name} on {device}, ids"), &from_ids, &batched);
    for (pooling, want) in &g.by_pooling {
        let e = Embedder::new(
            open(),
            &model,
            &EmbedderOptions {
                pooling: Some(*pooling),
                normalize: Some(false),
                ..options.clone()
            },
        )
        .unwrap();
        let got = e.embed(&texts).unwrap();
        assert_close(
            &format!("{name} on {device}, {pooling} pooling"),
            &got,
            want,
        );
    }
}

#[test]
fn bert_matches_sentence_transformers_on_cpu() {
    check_goldens(CandleDevice::cpu, EmbedderOptions::default(), "bert");
}

#[test]
fn xlm_roberta_matches_sentence_transformers_on_cpu() {
    check_goldens(CandleDevice::cpu, EmbedderOptions::default(), "xlm-roberta");
}

#[test]
fn bert_matches_sentence_transformers_on_emulated_neuron() {
    check_goldens(neuron, static_options(), "bert");
}

#[test]
fn xlm_roberta_matches_sentence_transformers_on_emulated_neuron() {
    check_goldens(neuron, static_options(), "xlm-roberta");
}

#[test]
fn static_shapes_compile_every_bucket() {
    let model = EncoderModel::load(fixture("bert").to_str().unwrap()).unwrap();
    let e = Embedder::new(neuron(), &model, &static_options()).unwrap();
    // Batches 1, 4, 8 × lengths 8, 24 (the model's max_seq_length).
    assert_eq!((e.executables(), e.max_tokens()), (6, 24));
}

#[test]
fn long_inputs_are_truncated_or_refused() {
    let g = golden("bert");
    let long = g.texts.iter().find(|t| t.len() > 150).unwrap().as_str();
    let model = EncoderModel::load(fixture("bert").to_str().unwrap()).unwrap();
    let e = Embedder::new(CandleDevice::cpu(), &model, &EmbedderOptions::default()).unwrap();
    assert_eq!(e.tokenize(&[long]).unwrap()[0].len(), 24);
    let strict = Embedder::new(
        CandleDevice::cpu(),
        &model,
        &EmbedderOptions {
            truncate: false,
            ..Default::default()
        },
    )
    .unwrap();
    let err = strict.embed(&["short", long]).unwrap_err();
    assert!(
        matches!(err, ModelError::InputTooLong { index: 1, max_tokens: 24, tokens } if tokens > 24),
        "{err}"
    );
    let err = strict.embed_ids(&[vec![2; 30]]).unwrap_err();
    assert!(
        matches!(err, ModelError::InputTooLong { index: 0, .. }),
        "{err}"
    );
    // Bad ids and empty inputs are errors naming the input, not panics.
    let err = e.embed_ids(&[vec![2, 3], vec![]]).unwrap_err().to_string();
    assert!(err.contains("input 1 is empty"), "{err}");
    let err = e.embed_ids(&[vec![2, 100_000]]).unwrap_err().to_string();
    assert!(err.contains("token id 100000"), "{err}");
}

#[test]
fn a_plain_encoder_directory_needs_a_pooling_choice() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("bert").join(f), dir.path().join(f)).unwrap();
    }
    let model = EncoderModel::load(dir.path().to_str().unwrap()).unwrap();
    assert!(model.sentence.is_none());
    let err = Embedder::new(CandleDevice::cpu(), &model, &EmbedderOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--pooling") && err.contains("mean"), "{err}");
    let g = golden("bert");
    let e = Embedder::new(
        CandleDevice::cpu(),
        &model,
        &EmbedderOptions {
            pooling: Some(Pooling::Cls),
            max_tokens: Some(24),
            ..Default::default()
        },
    )
    .unwrap();
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let want = &g
        .by_pooling
        .iter()
        .find(|(p, _)| *p == Pooling::Cls)
        .unwrap()
        .1;
    assert_close("plain bert, cls", &e.embed(&texts).unwrap(), want);
}

/// llama.cpp's converter on the BERT fixture (scripts/convert_fixtures_gguf.py): the same token
/// ids from the file's WordPiece vocabulary and the same vectors from its tensors, on the CPU
/// and the emulated NeuronCore.
#[test]
fn a_bert_gguf_from_llama_cpp_gives_the_same_vectors() {
    let g = golden("bert");
    let file = fixture("bert").join("peer-f32.gguf");
    let path = file.to_str().unwrap();
    assert!(EncoderModel::is_encoder(path));
    let model = EncoderModel::load(path).unwrap();
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    for (device, options) in [
        ("cpu", EmbedderOptions::default()),
        ("neuron:0", static_options()),
    ] {
        let options = EmbedderOptions {
            // The file keeps the context length, not sentence-transformers' max_seq_length.
            max_tokens: Some(24),
            ..options
        };
        let e = match device {
            "cpu" => Embedder::new(CandleDevice::cpu(), &model, &options)
                .unwrap()
                .embed(&texts)
                .unwrap(),
            _ => Embedder::new(neuron(), &model, &options)
                .unwrap()
                .embed(&texts)
                .unwrap(),
        };
        assert_close(&format!("bert gguf on {device}"), &e, &g.embeddings);
    }
    let e = Embedder::new(
        CandleDevice::cpu(),
        &model,
        &EmbedderOptions {
            max_tokens: Some(24),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        e.tokenize(&texts).unwrap(),
        g.ids,
        "token ids from the GGUF vocabulary"
    );
    assert_eq!((e.pooling(), e.normalizes()), (Pooling::Mean, true));
}
