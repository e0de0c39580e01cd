//! GGUF files a peer wrote: every fixture converted by llama.cpp's own `convert_hf_to_gguf.py`
//! (`scripts/convert_fixtures_gguf.py`, committed as `tests/fixtures/<arch>/peer-*.gguf`) loads in
//! Switchyard and computes what `transformers` computed for the checkpoint (the fixture's
//! golden): in f32, the last-prompt logits within 1e-4 and the 20 greedy tokens identical; in
//! q8_0, within the bound 8-bit activation rounding allows (derived below), and the greedy
//! tokens identical up to the first step where the golden's own top-2 margin is inside that
//! bound (past it, either token is a correct greedy choice). The embedded tokenizer encodes the
//! golden prompt to the golden ids.
//!
//! Mistral and Phi-3 are the fixtures GGUF cannot hold as they are: llama.cpp reads Mistral as
//! `llama`, with no sliding window (its converter drops `sliding_window`), and disables Phi-3's
//! window (it reads the key and warns); those files are compared with the checkpoint run without
//! the window.

use serde_json::Value;
use std::path::PathBuf;
use switchyard::candle::CandleDevice;
use switchyard::models::{Engine, EngineOptions, Model};

const ARCHS: [&str; 8] = [
    "llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(arch)
}

struct Golden {
    prompt: String,
    prompt_ids: Vec<u32>,
    logits: Vec<f32>,
    greedy: Vec<u32>,
    margins: Vec<f32>,
}

fn golden(arch: &str) -> Golden {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixture(arch).join("golden.json")).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    Golden {
        prompt: v["prompt"].as_str().unwrap().to_string(),
        prompt_ids: floats("prompt_ids").iter().map(|&x| x as u32).collect(),
        logits: floats("last_prompt_logits"),
        greedy: floats("greedy_ids").iter().map(|&x| x as u32).collect(),
        margins: floats("greedy_margins"),
    }
}

/// Last-prompt logits and 20 greedy tokens.
fn run(model: &Model, prompt: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let engine = Engine::new(
        CandleDevice::cpu(),
        &model.config,
        model.weights.as_ref(),
        &EngineOptions::default(),
    )
    .unwrap();
    let mut s = engine.new_session().unwrap();
    let logits = engine.prefill(&mut s, prompt).unwrap();
    let mut tok = switchyard::models::argmax(&logits);
    let mut out = vec![tok];
    for _ in 0..19 {
        tok = engine.decode_greedy(&mut s, tok).unwrap();
        out.push(tok);
    }
    (logits, out)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The reference a peer file must match: the golden, or for Mistral and Phi-3 the checkpoint
/// without its sliding window (what the file means to llama.cpp).
fn reference(arch: &str) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let g = golden(arch);
    if !matches!(arch, "mistral" | "phi3") {
        return (g.logits, g.greedy, g.margins);
    }
    let mut m = Model::load_dir(&fixture(arch)).unwrap();
    m.config.layer_windows = vec![None; m.config.num_layers];
    let (logits, greedy) = run(&m, &g.prompt_ids);
    // Margins along that run, for the quantized comparison.
    let engine = Engine::new(
        CandleDevice::cpu(),
        &m.config,
        m.weights.as_ref(),
        &EngineOptions::default(),
    )
    .unwrap();
    let mut s = engine.new_session().unwrap();
    let mut l = engine.prefill(&mut s, &g.prompt_ids).unwrap();
    let mut margins = Vec::new();
    for &t in &greedy {
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        margins.push(sorted[0] - sorted[1]);
        l = engine.decode(&mut s, t).unwrap();
    }
    (logits, greedy, margins)
}

#[test]
fn llamacpp_converted_f32_files_match_the_goldens() {
    for arch in ARCHS {
        let path = fixture(arch).join("peer-f32.gguf");
        let model = Model::load(path.to_str().unwrap()).unwrap();
        let g = golden(arch);
        let ids = model
            .tokenizer
            .as_ref()
            .unwrap()
            .encode(&g.prompt, true)
            .unwrap();
        assert_eq!(
            ids, g.prompt_ids,
            "{arch}: the embedded tokenizer's prompt ids"
        );
        let (want_logits, want_greedy, _) = reference(arch);
        let (logits, greedy) = run(&model, &ids);
        let err = max_diff(&logits, &want_logits);
        println!("{arch}: peer f32 GGUF, max abs logit error {err:.2e}, greedy identical");
        assert!(err <= 1e-4, "{arch}: {err:e} > 1e-4");
        assert_eq!(greedy, want_greedy, "{arch}: greedy tokens");
    }
}

/// q8_0 files against the f32 checkpoint: every quantized matmul rounds two operands to 8 bits
/// in blocks of 32 (its weights, stored q8_0, and its activations, as llama.cpp does), each
/// rounding an error of about 0.8% of the output's RMS (uniform, at most half a step of
/// `amax/127`; for blocks of 32 Gaussian values `amax ≈ 2.5σ`, so an RMS of `amax/(127·√12)`
/// ≈ 0.57%, rounded up). `n` matmuls in series make `2n` independent errors; the bound is four
/// standard deviations of their sum, `4·√(2n)·0.8%` of the largest logit. A greedy token may
/// differ from the golden only where the golden's two best logits are within twice the bound.
#[test]
fn llamacpp_converted_q8_0_files_match_the_goldens_within_the_derived_bound() {
    for arch in ARCHS {
        let path = fixture(arch).join("peer-q8_0.gguf");
        let model = Model::load(path.to_str().unwrap()).unwrap();
        let g = golden(arch);
        let (want_logits, want_greedy, margins) = reference(arch);
        let (logits, greedy) = run(&model, &g.prompt_ids);
        // Matmuls on the way to the logits: per layer the attention's (q, k, v, o, or fused
        // qkv and o) and the MLP's, and the head.
        let per_layer = match arch {
            "phi3" => 4,
            "gpt2" => 4,
            _ => 7,
        };
        let n = per_layer * model.config.num_layers + 1;
        let scale = want_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
        let bound = 4.0 * (2.0 * n as f32).sqrt() * 0.008 * scale;
        let err = max_diff(&logits, &want_logits);
        let agree = greedy
            .iter()
            .zip(&want_greedy)
            .take_while(|(a, b)| a == b)
            .count();
        let justified = agree == greedy.len() || margins[agree] <= 2.0 * bound;
        println!(
            "{arch}: peer q8_0 GGUF, max abs logit error {err:.3} (bound {bound:.3}, {:.1}% of the \
             largest logit); greedy identical for {agree}/20{}",
            100.0 * err / scale,
            if agree < 20 {
                format!(
                    ", then the golden's margin {:.3} is within 2 × the bound",
                    margins[agree]
                )
            } else {
                String::new()
            }
        );
        assert!(err <= bound, "{arch}: {err} > {bound}");
        assert!(
            justified,
            "{arch}: greedy tokens part at step {agree} where the golden's margin is {}",
            margins[agree]
        );
    }
}
