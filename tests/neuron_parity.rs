//! Token-for-token parity of the static-shape engine on `neuron:0` (the libnrt emulator) with the
//! CPU, for every fixture architecture (and Gemma 3 from a GGUF file too): prompts of 1 token, exactly one prefill chunk and one
//! chunk + 1, 40 greedy tokens crossing KV bucket boundaries, and last-prompt logits within 1e-4.

use std::ops::ControlFlow;
use std::path::PathBuf;
use switchyard::candle::CandleDevice;
use switchyard::models::{generate, Engine, EngineOptions, GenerateOptions, Model, Shapes};
use switchyard::neuron::NeuronDevice;
use switchyard::Device;

const ARCHS: [&str; 8] = [
    "llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];
const CHUNK: usize = 8;
const BUCKETS: [usize; 2] = [16, 32];
const MAX_CONTEXT: usize = 64;
const NEW_TOKENS: usize = 40;

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(arch)
}

/// The emulator's transfer counters are process-wide: tests here take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn neuron() -> NeuronDevice {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    NeuronDevice::open_with_library(0, Some(&lib)).expect("the emulated NeuronCore opens")
}

/// The engine under test on a Neuron device: chunks of 8, buckets 16, 32 and 64.
fn static_engine(device: NeuronDevice, model: &Model) -> Engine<NeuronDevice> {
    Engine::new(
        device,
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context: Some(MAX_CONTEXT),
            prefill_chunk: Some(CHUNK),
            kv_buckets: Some(BUCKETS.to_vec()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn greedy<D: Device>(engine: &Engine<D>, prompt: &[u32]) -> Vec<u32> {
    let opts = GenerateOptions {
        max_new_tokens: NEW_TOKENS,
        ignore_eos: true,
        ..Default::default()
    };
    let mut s = engine.new_session().unwrap();
    generate(engine, &mut s, None, prompt, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap()
    .generated_ids
}

/// Checks every fixture architecture on `open()`'s device against the CPU; returns one line per
/// architecture for the note.
fn parity(open: impl Fn() -> NeuronDevice) -> Vec<String> {
    let mut report = Vec::new();
    // Every fixture as a checkpoint directory, and Gemma 3 also as the f32 GGUF file llama.cpp's
    // converter wrote of it.
    let gemma3_gguf = fixture("gemma3").join("peer-f32.gguf");
    let sources = ARCHS
        .iter()
        .map(|a| (a.to_string(), fixture(a)))
        .chain([("gemma3 (GGUF)".to_string(), gemma3_gguf)]);
    for (arch, path) in sources {
        let model = Model::load(path.to_str().unwrap()).unwrap();
        let tok = model.tokenizer.as_ref().unwrap();
        let base = tok
            .encode(
                "Hello world! The quick brown fox jumps over the lazy dog.",
                true,
            )
            .unwrap();
        let cpu = Engine::new(
            CandleDevice::cpu(),
            &model.config,
            model.weights.as_ref(),
            &EngineOptions {
                max_context: Some(MAX_CONTEXT),
                ..Default::default()
            },
        )
        .unwrap();
        let nrn = static_engine(open(), &model);
        assert_eq!(
            nrn.shapes(),
            &Shapes::Static {
                chunk: CHUNK,
                buckets: vec![16, 32, 64]
            }
        );
        let mut worst = 0f32;
        for len in [1, CHUNK, CHUNK + 1] {
            let prompt: Vec<u32> = base.iter().cycle().take(len).copied().collect();
            let (mut a, mut b) = (cpu.new_session().unwrap(), nrn.new_session().unwrap());
            let la = cpu.prefill(&mut a, &prompt).unwrap();
            let lb = nrn.prefill(&mut b, &prompt).unwrap();
            let err = la
                .iter()
                .zip(&lb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= 1e-4,
                "{arch}, prompt of {len}: last-prompt logits differ by {err:e}"
            );
            worst = worst.max(err);
            let (ga, gb) = (greedy(&cpu, &prompt), greedy(&nrn, &prompt));
            assert_eq!(ga.len(), NEW_TOKENS);
            assert_eq!(ga, gb, "{arch}, prompt of {len}: greedy tokens differ");
            assert!(
                len + NEW_TOKENS > BUCKETS[1],
                "generation crosses the 16 and 32 buckets"
            );
        }
        report.push(format!(
            "{arch}: {} executables on {}, worst last-prompt logit difference {worst:.2e}",
            nrn.executable_fingerprints().len(),
            nrn.device().info().display_name()
        ));
    }
    report
}

#[test]
fn every_architecture_matches_the_cpu_on_emulated_neuron() {
    let _g = serial();
    let report = parity(|| {
        let dev = neuron();
        assert!(dev.info().emulated);
        dev
    });
    println!("{}", report.join("\n"));
}

/// The same parity on a real NeuronCore, whose runtime loads the NEFFs for these graphs from the
/// compile cache (or compiles them with neuronx-cc). Ignored here (no Trainium); where one is:
/// `cargo test --release --test neuron_parity -- --ignored real_neuron`, which fails, never
/// skips, when the device or its runtime is missing.
#[test]
#[ignore = "needs a Neuron device: cargo test --test neuron_parity -- --ignored real_neuron"]
fn every_architecture_matches_the_cpu_on_real_neuron() {
    assert!(
        std::path::Path::new("/dev/neuron0").exists(),
        "no /dev/neuron0: this test needs Trainium or Inferentia"
    );
    let dev = match NeuronDevice::open(0) {
        Ok(d) if !d.info().emulated => d,
        Ok(_) => panic!("the runtime found is the emulator: unset SWITCHYARD_NRT_LIB"),
        Err(e) => panic!("/dev/neuron0 exists but the Neuron runtime did not open: {e}"),
    };
    drop(dev);
    let report = parity(|| NeuronDevice::open(0).unwrap());
    println!("{}", report.join("\n"));
}

#[test]
fn requests_beyond_the_largest_bucket_are_refused_before_any_work() {
    let _g = serial();
    let model = Model::load_dir(&fixture("llama")).unwrap();
    let nrn = static_engine(neuron(), &model);
    let mut s = nrn.new_session().unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 61,
        ..Default::default()
    };
    let err = generate(&nrn, &mut s, None, &[1, 2, 3, 4, 5], &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("needs 65 positions")
            && err.contains("holds 64")
            && err.contains("neuron:0 (emulated)"),
        "{err}"
    );
    assert_eq!(s.position(), 0, "nothing ran");
    let bad = Engine::new(
        neuron(),
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context: Some(32),
            kv_buckets: Some(vec![16, 8]),
            ..Default::default()
        },
    );
    assert!(bad.err().unwrap().to_string().contains("--buckets"));
}

#[test]
fn only_token_ids_and_positions_cross_the_host_boundary_per_token() {
    let _g = serial();
    let model = Model::load_dir(&fixture("llama")).unwrap();
    let dev = neuron();
    let rt = dev.runtime().clone();
    let moved = || {
        rt.emulator_transferred_bytes()
            .expect("the emulator counts transfers")
    };
    let before = moved();
    let nrn = static_engine(dev, &model);
    let loaded = moved();
    assert!(
        loaded.0 - before.0 >= nrn.weight_bytes() as u64,
        "weights are uploaded once, at load"
    );
    let mut s = nrn.new_session().unwrap();
    let mut token = nrn.prefill_greedy(&mut s, &[1, 2, 3]).unwrap();
    // Each greedy decode step sends one token id and one position (4 bytes each) and reads back
    // one token id: no weights, no KV cache, no logits.
    for step in 0..30 {
        let at = moved();
        token = nrn.decode_greedy(&mut s, token).unwrap();
        let now = moved();
        assert_eq!(
            (now.0 - at.0, now.1 - at.1),
            (8, 4),
            "bytes (to the device, back) at greedy step {step}"
        );
    }
    // Asking for logits reads back exactly the vocabulary's f32 logits.
    let at = moved();
    nrn.decode(&mut s, token).unwrap();
    let now = moved();
    assert_eq!(
        (now.0 - at.0, now.1 - at.1),
        (8, 4 * model.config.vocab_size as u64)
    );
}
