//! One loaded model shared by several threads: each request gets exactly the tokens it gets
//! alone, and a stress run of 200 short generations finishes without deadlock. On the CPU and on
//! the emulated NeuronCore (whose runtime is process-wide).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use switchyard::models::{generate, Engine, EngineOptions, GenerateOptions, Model, SamplingParams};
use switchyard::{AnyDevice, Device};

fn model() -> Model {
    Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama")).unwrap()
}

/// Request `i`: its prompt and sampling (greedy and seeded sampling alternate).
fn request(i: usize) -> (Vec<u32>, GenerateOptions) {
    let prompt: Vec<u32> = (0..3 + i % 5)
        .map(|k| (7 + 13 * i + 31 * k) as u32 % 500 + 3)
        .collect();
    let sampling = if i.is_multiple_of(2) {
        SamplingParams::default()
    } else {
        SamplingParams {
            temperature: 0.9,
            top_k: Some(40),
            seed: 1000 + i as u64,
            ..Default::default()
        }
    };
    (
        prompt,
        GenerateOptions {
            max_new_tokens: 12,
            sampling,
            ignore_eos: true,
            ..Default::default()
        },
    )
}

fn run<D: Device>(engine: &Engine<D>, i: usize) -> Vec<u32> {
    let (prompt, options) = request(i);
    let mut session = engine.new_session().unwrap();
    generate(engine, &mut session, None, &prompt, &options, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
    .generated_ids
}

/// Runs `jobs` request indices on `threads` threads sharing `engine`; fails on a deadlock
/// (nothing finishing within `limit`).
fn shared<D>(
    engine: Arc<Engine<D>>,
    threads: usize,
    jobs: Vec<usize>,
    limit: Duration,
) -> Vec<(usize, Vec<u32>)>
where
    D: Device + Send + Sync + 'static,
    Engine<D>: Send + Sync,
{
    let (tx, rx) = mpsc::channel();
    let per_thread: Vec<Vec<usize>> = (0..threads)
        .map(|t| jobs.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|mine| {
            let engine = engine.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in mine {
                    tx.send((i, run(&engine, i))).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut out = Vec::with_capacity(jobs.len());
    for _ in 0..jobs.len() {
        out.push(
            rx.recv_timeout(limit)
                .expect("a generation finishes (no deadlock)"),
        );
    }
    for h in handles {
        h.join().unwrap();
    }
    out
}

fn check_device<D>(device: D, name: &str)
where
    D: Device + Send + Sync + 'static,
    Engine<D>: Send + Sync,
{
    let m = model();
    let options = EngineOptions {
        max_context: Some(64),
        prefill_chunk: Some(8),
        kv_buckets: Some(vec![32]),
        ..Default::default()
    };
    let engine = Arc::new(Engine::new(device, &m.config, m.weights.as_ref(), &options).unwrap());
    // Alone, one after another: the reference.
    let alone: Vec<Vec<u32>> = (0..20).map(|i| run(&engine, i)).collect();
    // Four threads at once.
    let got = shared(
        engine.clone(),
        4,
        (0..4).collect(),
        Duration::from_secs(120),
    );
    for (i, tokens) in &got {
        assert_eq!(tokens, &alone[*i], "{name}: request {i} on 4 threads");
    }
    // 200 short generations across the threads.
    let jobs: Vec<usize> = (0..200).map(|k| k % 20).collect();
    let got = shared(engine, 4, jobs, Duration::from_secs(120));
    assert_eq!(got.len(), 200);
    for (i, tokens) in &got {
        assert_eq!(tokens, &alone[*i], "{name}: stress request {i}");
    }
    eprintln!("{name}: 4 threads x 1 and 4 threads x 50 generations match the sequential tokens");
}

#[test]
fn a_shared_cpu_engine_gives_each_thread_its_own_tokens() {
    check_device(AnyDevice::open("cpu").unwrap(), "cpu");
}

#[test]
fn a_shared_emulated_neuron_engine_gives_each_thread_its_own_tokens() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let dev = switchyard::neuron::NeuronDevice::open_with_library(0, Some(&lib))
        .unwrap()
        .with_compile_cache(None);
    check_device(dev, "neuron:0 (emulated)");
}
