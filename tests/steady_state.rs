//! What a steady-state decode step costs the device, counted by the libnrt emulator: with every
//! argument bound by position when the engine is built, and each executable's tensor sets and
//! output tensors kept from one step to the next, a step allocates no device tensor, builds no
//! tensor set, binds nothing by name, and only writes its token and position and reads its result.

use std::path::PathBuf;
use switchyard::models::{Engine, EngineOptions, Model};
use switchyard::neuron::NeuronDevice;
use switchyard::runtime::named_lookups;

const CALLS: [&str; 6] = [
    "nrt_tensor_allocate",
    "nrt_allocate_tensor_set",
    "nrt_add_tensor_to_tensor_set",
    "nrt_tensor_write",
    "nrt_tensor_read",
    "nrt_execute",
];

fn counts(device: &NeuronDevice) -> [u64; 6] {
    CALLS.map(|c| {
        device
            .runtime()
            .emulator_calls(c)
            .expect("the emulator counts calls")
    })
}

#[test]
fn a_steady_state_decode_step_allocates_nothing_and_looks_up_no_name() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let device = NeuronDevice::open_with_library(0, Some(&lib)).expect("emulated neuron:0");
    let model = Model::load(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llama")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let engine = Engine::new(
        device,
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context: Some(32),
            prefill_chunk: Some(8),
            kv_buckets: Some(vec![32]),
            ..Default::default()
        },
    )
    .unwrap();
    let mut session = engine.new_session().unwrap();
    let mut token = engine.prefill_greedy(&mut session, &[1, 2, 3]).unwrap();
    // The first decode step binds the decode executable's sets and allocates its outputs.
    token = engine.decode_greedy(&mut session, token).unwrap();
    let (before, lookups) = (counts(engine.device()), named_lookups());
    const STEPS: u64 = 5;
    for _ in 0..STEPS {
        token = engine.decode_greedy(&mut session, token).unwrap();
    }
    let after = counts(engine.device());
    let per_step: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| (a - b) / STEPS)
        .collect();
    assert_eq!(
        after.iter().zip(before).map(|(a, b)| a - b).sum::<u64>() % STEPS,
        0,
        "every step costs the same"
    );
    let table: Vec<String> = CALLS
        .iter()
        .zip(&per_step)
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    println!("per steady-state decode step: {}", table.join(", "));
    // No tensor allocated, no set built or changed; the token and position written, the token
    // read back, one execution.
    assert_eq!(per_step, [0, 0, 0, 2, 1, 1], "{table:?}");
    assert_eq!(named_lookups() - lookups, 0, "no parameter bound by name");

    // A second session binds its own cache once, then steps as cheaply.
    let mut other = engine.new_session().unwrap();
    let t = engine.prefill_greedy(&mut other, &[4, 5]).unwrap();
    let before = counts(engine.device());
    let t = engine.decode_greedy(&mut other, t).unwrap();
    let after = counts(engine.device());
    // Switching sessions rebinds the session's tensors: its cache (two state tensors per layer,
    // each under its input and its aliased output name) and its token and position inputs
    // (allocated on the session's first decode); no tensor set is built.
    let diff: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(diff[1], 0, "{diff:?}");
    assert_eq!(diff[2], 4 * model.config.num_layers as u64 + 2, "{diff:?}");
    let before = counts(engine.device());
    engine.decode_greedy(&mut other, t).unwrap();
    let after = counts(engine.device());
    let diff: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(diff, [0, 0, 0, 2, 1, 1], "then steps as cheaply");
}
