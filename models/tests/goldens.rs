//! Every architecture against its Hugging Face `transformers` golden (made by
//! `scripts/make_fixtures.py`), on the CPU in f32, from both config layouts: the prompt's token
//! ids, the logits at the last prompt position (max abs error <= 1e-4) and 20 greedy tokens
//! (identical); also through candle's own kernels only (`CandleDevice::cpu_portable`, the path
//! CUDA takes).

use serde_json::Value;
use std::path::PathBuf;
use switchyard_candle::CandleDevice;
use switchyard_models::{generate, Engine, EngineOptions, GenerateOptions, Model, ModelConfig};

const ARCHS: [&str; 8] = [
    "llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];
const LOGIT_TOLERANCE: f32 = 1e-4;

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(arch)
}

struct Golden {
    prompt: String,
    prompt_ids: Vec<u32>,
    logits: Vec<f32>,
    greedy: Vec<u32>,
}

fn golden(arch: &str) -> Golden {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixture(arch).join("golden.json")).unwrap()).unwrap();
    let ids = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    Golden {
        prompt: v["prompt"].as_str().unwrap().to_string(),
        prompt_ids: ids("prompt_ids"),
        logits: v["last_prompt_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect(),
        greedy: ids("greedy_ids"),
    }
}

#[test]
fn both_config_layouts_parse_to_the_same_config() {
    for arch in ARCHS {
        let dir = fixture(arch);
        let new = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let classic = ModelConfig::from_file(&dir.join("config.classic.json")).unwrap();
        assert_eq!(new, classic, "{arch}");
        let raw = std::fs::read_to_string(dir.join("config.classic.json")).unwrap();
        assert!(
            !raw.contains("rope_parameters") && raw.contains("torch_dtype"),
            "{arch}: classic layout"
        );
    }
}

#[test]
fn every_architecture_matches_its_golden_on_cpu() {
    goldens_on(CandleDevice::cpu);
}

/// The same goldens through candle's own kernels only: the path CUDA devices take.
#[test]
fn every_architecture_matches_its_golden_on_the_portable_path() {
    goldens_on(CandleDevice::cpu_portable);
}

fn goldens_on(device: fn() -> CandleDevice) {
    let mut report = Vec::new();
    for arch in ARCHS {
        let g = golden(arch);
        let model = Model::load_dir(&fixture(arch)).unwrap();
        let tok = model.tokenizer.as_ref().unwrap();
        assert_eq!(
            tok.encode(&g.prompt, true).unwrap(),
            g.prompt_ids,
            "{arch}: tokenizer"
        );
        for layout in ["config.json", "config.classic.json"] {
            let config = ModelConfig::from_file(&model.dir.join(layout)).unwrap();
            let engine = Engine::new(
                device(),
                &config,
                model.weights.as_ref(),
                &EngineOptions::default(),
            )
            .unwrap();
            let mut session = engine.new_session().unwrap();
            let opts = GenerateOptions {
                max_new_tokens: g.greedy.len(),
                ignore_eos: true,
                return_prompt_logits: true,
                ..Default::default()
            };
            let out = generate(
                &engine,
                &mut session,
                Some(tok),
                &g.prompt_ids,
                &opts,
                |_| std::ops::ControlFlow::Continue(()),
            )
            .unwrap();
            let logits = out.last_prompt_logits.unwrap();
            assert_eq!(logits.len(), g.logits.len());
            let err = logits
                .iter()
                .zip(&g.logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= LOGIT_TOLERANCE,
                "{arch} ({layout}): max abs logit error {err:.3e} > {LOGIT_TOLERANCE:e}"
            );
            assert_eq!(
                out.generated_ids, g.greedy,
                "{arch} ({layout}): greedy tokens"
            );
            if layout == "config.json" {
                report.push(format!(
                    "{arch}: max abs logit error {err:.2e}, {} greedy tokens identical",
                    g.greedy.len()
                ));
            }
        }
    }
    println!("{}", report.join("\n"));
}

/// Computing in f16 or bf16 on request stays close to the f32 golden: within 2% (f16) and 10%
/// (bf16) of the largest logit. These tiny random models have sharply peaked attention, which
/// amplifies rounding; the bounds are about twice the worst error measured.
#[test]
fn half_precision_compute_stays_close_to_the_f32_golden() {
    half_precision_on(CandleDevice::cpu);
}

/// Half precision through candle's own kernels (bf16 is the GPU default).
#[test]
fn half_precision_on_the_portable_path_stays_close_to_the_f32_golden() {
    half_precision_on(CandleDevice::cpu_portable);
}

fn half_precision_on(device: fn() -> CandleDevice) {
    use switchyard_runtime::DType;
    for (dtype, bound) in [(DType::F16, 0.02f32), (DType::BF16, 0.10)] {
        for arch in ARCHS {
            let g = golden(arch);
            let model = Model::load_dir(&fixture(arch)).unwrap();
            let opts = EngineOptions {
                dtype: Some(dtype),
                ..Default::default()
            };
            let engine =
                Engine::new(device(), &model.config, model.weights.as_ref(), &opts).unwrap();
            let mut session = engine.new_session().unwrap();
            let logits = engine.prefill(&mut session, &g.prompt_ids).unwrap();
            let scale = g.logits.iter().map(|x| x.abs()).fold(0f32, f32::max);
            let err = logits
                .iter()
                .zip(&g.logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= bound * scale,
                "{arch} in {dtype}: max abs error {err} > {bound} x {scale}"
            );
        }
    }
}
