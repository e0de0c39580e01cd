//! Broken model directories and bad requests get errors naming the file, tensor, key or option.

use std::path::{Path, PathBuf};
use switchyard_candle::CandleDevice;
use switchyard_models::{generate, Engine, EngineOptions, GenerateOptions, Model, ModelError};

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(arch)
}

/// A copy of a fixture in a temporary directory, to be broken by the test.
fn copy_fixture(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(arch)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    Model::load_dir(dir).unwrap_err().to_string()
}

fn engine_err(dir: &Path) -> String {
    let m = Model::load_dir(dir).unwrap();
    Engine::new(
        CandleDevice::cpu(),
        &m.config,
        m.weights.as_ref(),
        &EngineOptions::default(),
    )
    .err()
    .unwrap()
    .to_string()
}

#[test]
fn missing_and_corrupt_files() {
    let d = copy_fixture("llama");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("cannot read") && e.contains("config.json"),
        "{e}"
    );

    let d = copy_fixture("llama");
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );

    // Truncated weights file: header claims more than is there.
    let d = copy_fixture("llama");
    let st = d.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );

    // Corrupt header: a length larger than the file.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&st, &bad).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );

    // No weights at all.
    std::fs::remove_file(&st).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("no model.safetensors"), "{e}");

    // A sharded index pointing at the wrong shard.
    let d = copy_fixture("mistral");
    edit_json(&d.path().join("model.safetensors.index.json"), |v| {
        let map = v["weight_map"].as_object_mut().unwrap();
        let key = map
            .keys()
            .find(|k| map[*k] == "model-00001-of-00002.safetensors")
            .unwrap()
            .clone();
        map[&key] = "model-00002-of-00002.safetensors".into();
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("does not hold it"),
        "{e}"
    );
}

#[test]
fn config_problems_name_the_key() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "model_type",
            Box::new(|v| v["model_type"] = "mamba".into()),
            "unsupported model_type 'mamba': supported are llama",
        ),
        (
            "layers",
            Box::new(|v| v["num_hidden_layers"] = 0.into()),
            "num_hidden_layers",
        ),
        (
            "heads",
            Box::new(|v| v["num_key_value_heads"] = 3.into()),
            "num_key_value_heads",
        ),
        (
            "missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("hidden_size");
            }),
            "'hidden_size': missing",
        ),
        (
            "type",
            Box::new(|v| v["vocab_size"] = "many".into()),
            "'vocab_size': expected a non-negative integer",
        ),
        (
            "rope",
            Box::new(|v| v["rope_parameters"]["rope_type"] = "yarn".into()),
            "rope scaling 'yarn' is not supported",
        ),
    ];
    for (label, edit, expected) in cases {
        let d = copy_fixture("llama");
        let cfg = d.path().join("config.json");
        edit_json(&cfg, |v| edit(v));
        let e = load_err(d.path());
        assert!(
            e.contains(expected) && e.contains("config.json"),
            "{label}: {e}"
        );
    }
    // heads not dividing hidden (no head_dim given): GPT-2.
    let d = copy_fixture("gpt2");
    edit_json(&d.path().join("config.json"), |v| v["n_head"] = 5.into());
    let e = load_err(d.path());
    assert!(e.contains("5 heads do not divide hidden_size = 64"), "{e}");
}

#[test]
fn tensors_that_disagree_with_the_config() {
    // Config says a wider MLP than the weights have.
    let d = copy_fixture("llama");
    edit_json(&d.path().join("config.json"), |v| {
        v["intermediate_size"] = 100.into()
    });
    let e = engine_err(d.path());
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[128, 64]")
            && e.contains("[100, 64]"),
        "{e}"
    );

    // Config says untied, but there is no lm_head.
    let d = copy_fixture("llama");
    edit_json(&d.path().join("config.json"), |v| {
        v["tie_word_embeddings"] = false.into()
    });
    let e = engine_err(d.path());
    assert!(e.contains("tensor 'lm_head.weight' is missing"), "{e}");

    // An unsupported storage dtype (i16, same width as the f16 it replaces) in the header.
    let d = copy_fixture("qwen2");
    let st = d.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let i = header.find("\"F16\"").unwrap();
    let mut patched = bytes.clone();
    patched[8 + i..8 + i + 5].copy_from_slice(b"\"I16\"");
    std::fs::write(&st, &patched).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("unsupported dtype I16"),
        "{e}"
    );
}

#[test]
fn requests_beyond_the_context_and_bad_options() {
    let m = Model::load_dir(&fixture("llama")).unwrap();
    let opts = EngineOptions {
        max_context: Some(8),
        ..Default::default()
    };
    let engine = Engine::new(CandleDevice::cpu(), &m.config, m.weights.as_ref(), &opts).unwrap();
    let mut s = engine.new_session().unwrap();
    let prompt: Vec<u32> = (1..=9).collect();
    let e = generate(
        &engine,
        &mut s,
        None,
        &prompt,
        &GenerateOptions::default(),
        |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::PromptTooLong {
                tokens: 9,
                max_context: 8
            }
        ),
        "{e}"
    );
    assert_eq!(s.position(), 0, "nothing ran");

    let e = Engine::new(
        CandleDevice::cpu(),
        &m.config,
        m.weights.as_ref(),
        &EngineOptions {
            max_context: Some(100_000),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--max-context") && e.contains("512"), "{e}");

    let e = generate(
        &engine,
        &mut s,
        None,
        &[1, 600],
        &GenerateOptions::default(),
        |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("600 is outside the vocabulary (size 512)"),
        "{e}"
    );
}
