//! Long runs keep memory flat: 5,000 generated tokens in one session, and 100 load / generate /
//! drop cycles on the CPU and on the emulated NeuronCore (where the emulator's live-object counts
//! catch device-side leaks). One test, so nothing else in this process moves the resident size.

use std::path::Path;
use switchyard::models::{generate, Engine, EngineOptions, GenerateOptions, Model};
use switchyard::neuron::NeuronDevice;
use switchyard::{AnyDevice, Device};

/// Resident memory of this process (bytes), from /proc.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The llama fixture with an 8k context.
fn long_context_model(dir: &Path) -> Model {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["max_position_embeddings"] = 8192.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    Model::load(&dir.display().to_string()).unwrap()
}

fn gen<D: Device>(engine: &Engine<D>, tokens: usize) -> Vec<u32> {
    let mut session = engine.new_session().unwrap();
    let options = GenerateOptions {
        max_new_tokens: tokens,
        ignore_eos: true,
        ..Default::default()
    };
    generate(engine, &mut session, None, &[1, 15, 27], &options, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
    .generated_ids
}

/// Bound on resident growth over a long run, after warm-up: allocator slack, not per-token
/// growth (5,000 tokens leaking even 2 KiB each would exceed it).
const GROWTH_BOUND: u64 = 8 << 20;

#[test]
fn long_runs_keep_memory_flat_and_leak_nothing_on_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let model = long_context_model(dir.path());

    // 5,000 tokens in one session (the KV cache is allocated once, at the full context).
    let engine = Engine::new(
        AnyDevice::open("cpu").unwrap(),
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context: Some(5200),
            ..Default::default()
        },
    )
    .unwrap();
    gen(&engine, 200);
    let before = rss();
    let out = gen(&engine, 5000);
    let after = rss();
    assert_eq!(out.len(), 5000);
    eprintln!(
        "5,000 tokens: resident {:.1} MiB before, {:.1} MiB after",
        mib(before),
        mib(after)
    );
    assert!(
        after <= before + GROWTH_BOUND,
        "resident memory grew {:.1} MiB over 5,000 tokens",
        mib(after.saturating_sub(before))
    );
    drop(engine);

    // 100 load / generate / drop cycles on the CPU.
    let options = EngineOptions {
        max_context: Some(128),
        prefill_chunk: Some(16),
        kv_buckets: Some(vec![64]),
        ..Default::default()
    };
    let cycle_cpu = || {
        let e = Engine::new(
            AnyDevice::open("cpu").unwrap(),
            &model.config,
            model.weights.as_ref(),
            &options,
        )
        .unwrap();
        gen(&e, 16)
    };
    let reference = cycle_cpu();
    for _ in 0..5 {
        cycle_cpu();
    }
    let before = rss();
    for _ in 0..100 {
        assert_eq!(cycle_cpu(), reference);
    }
    let after = rss();
    eprintln!(
        "100 cpu cycles: resident {:.1} MiB before, {:.1} MiB after",
        mib(before),
        mib(after)
    );
    assert!(
        after <= before + GROWTH_BOUND,
        "resident memory grew {:.1} MiB over 100 load/generate/drop cycles",
        mib(after.saturating_sub(before))
    );

    // The same on the emulated NeuronCore; every tensor, model and tensor set is freed.
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let anchor = NeuronDevice::open_with_library(1, Some(&lib)).unwrap();
    let rt = anchor.runtime().clone();
    let cycle_neuron = || {
        let dev = NeuronDevice::open_with_library(0, Some(&lib))
            .unwrap()
            .with_compile_cache(None);
        let e = Engine::new(dev, &model.config, model.weights.as_ref(), &options).unwrap();
        gen(&e, 16)
    };
    assert_eq!(
        cycle_neuron(),
        reference,
        "the emulated device agrees with the CPU"
    );
    for _ in 0..5 {
        cycle_neuron();
    }
    let before = rss();
    for i in 0..100 {
        assert_eq!(cycle_neuron(), reference);
        for (kind, what) in [(0, "tensors"), (1, "models"), (2, "tensor sets")] {
            assert_eq!(
                rt.emulator_live_objects(kind),
                Some(0),
                "cycle {i}: {what} left alive on the device"
            );
        }
    }
    let after = rss();
    eprintln!(
        "100 emulated neuron cycles: resident {:.1} MiB before, {:.1} MiB after; 0 live device objects after each",
        mib(before),
        mib(after)
    );
    assert!(
        after <= before + GROWTH_BOUND,
        "resident memory grew {:.1} MiB over 100 emulated cycles",
        mib(after.saturating_sub(before))
    );
}
