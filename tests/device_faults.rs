//! Every libnrt status, injected by the emulator into every call the Neuron backend makes while
//! an engine loads and while it serves: a typed error naming the call and status, then either the
//! next request succeeds with the right tokens or the device reports itself unusable; never a
//! crash, never wrong tokens, nothing left alive on the device. And device memory running out at
//! load is reported with the sizes involved.

use std::process::Command;
use switchyard::models::{generate, Engine, EngineOptions, GenerateOptions, Model};
use switchyard::neuron::NeuronDevice;

/// The calls the backend makes.
const CALLS: &[&str] = &[
    "nrt_tensor_allocate",
    "nrt_tensor_write",
    "nrt_tensor_memset",
    "nrt_load",
    "nrt_get_model_tensor_info",
    "nrt_allocate_tensor_set",
    "nrt_add_tensor_to_tensor_set",
    "nrt_execute",
    "nrt_tensor_read",
];

/// Every error status libnrt defines.
const STATUSES: &[(u32, &str)] = &[
    (1, "FAILURE"),
    (2, "INVALID"),
    (3, "INVALID_HANDLE"),
    (4, "RESOURCE"),
    (5, "TIMEOUT"),
    (6, "HW_ERROR"),
    (7, "QUEUE_FULL"),
    (9, "LOAD_NOT_ENOUGH_NC"),
    (10, "UNSUPPORTED_NEFF_VERSION"),
    (11, "FAIL_HOST_MEM_ALLOC"),
    (13, "UNINITIALIZED"),
    (14, "CLOSED"),
    (15, "QUEUE_EMPTY"),
    (101, "EXEC_UNIT_UNRECOVERABLE"),
    (1002, "EXEC_BAD_INPUT"),
    (1003, "EXEC_COMPLETED_WITH_NUM_ERR"),
    (1004, "EXEC_COMPLETED_WITH_ERR"),
    (1005, "EXEC_NC_BUSY"),
    (1006, "EXEC_OOB"),
    (1100, "COLL_PENDING"),
    (1200, "EXEC_HW_ERR"),
];

fn options() -> EngineOptions {
    EngineOptions {
        max_context: Some(32),
        prefill_chunk: Some(8),
        kv_buckets: Some(vec![16]),
        ..Default::default()
    }
}

fn request(engine: &Engine<NeuronDevice>) -> Result<Vec<u32>, String> {
    let mut session = engine.new_session().map_err(|e| e.to_string())?;
    let options = GenerateOptions {
        max_new_tokens: 6,
        ignore_eos: true,
        ..Default::default()
    };
    generate(
        engine,
        &mut session,
        None,
        &[1, 17, 42, 99],
        &options,
        |_| std::ops::ControlFlow::Continue(()),
    )
    .map(|g| g.generated_ids)
    .map_err(|e| e.to_string())
}

#[test]
fn every_status_in_every_call_is_reported_and_recovered_from() {
    let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama")).unwrap();
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let open = || {
        NeuronDevice::open_with_library(0, Some(&lib))
            .unwrap()
            .with_compile_cache(None)
    };
    let load =
        |dev: NeuronDevice| Engine::new(dev, &model.config, model.weights.as_ref(), &options());
    let reference = request(&load(open()).unwrap()).unwrap();
    let rt = open().runtime().clone();
    let live = |what: &str| {
        for (kind, name) in [(0, "tensors"), (1, "models"), (2, "tensor sets")] {
            assert_eq!(
                rt.emulator_live_objects(kind),
                Some(0),
                "{what}: {name} left alive"
            );
        }
    };
    let (mut injected, mut load_faults, mut serve_faults, mut unusable, mut recovered) =
        (0, 0, 0, 0, 0);
    for call in CALLS {
        for &(code, name) in STATUSES {
            let what = format!("{call} -> {code} {name}");
            let mentions = |e: &str| e.contains(call) && e.contains(name);

            // While the engine loads: weights upload, executables load.
            rt.emulator_set_faults(&format!("{call}:1:{code}")).unwrap();
            injected += 1;
            let loaded = load(open());
            rt.emulator_set_faults("").unwrap();
            match loaded {
                Err(e) => {
                    let e = e.to_string();
                    assert!(mentions(&e), "{what} at load: {e}");
                    load_faults += 1;
                }
                Ok(engine) => assert_eq!(
                    request(&engine).unwrap(),
                    reference,
                    "{what}: not hit at load"
                ),
            }
            live(&what);

            // While it serves: the fault hits the request, the next request recovers or the
            // device says it is unusable.
            let engine = load(open()).unwrap();
            rt.emulator_set_faults(&format!("{call}:1:{code}")).unwrap();
            injected += 1;
            let first = request(&engine);
            rt.emulator_set_faults("").unwrap();
            match first {
                Err(e) => {
                    assert!(mentions(&e), "{what} while serving: {e}");
                    serve_faults += 1;
                    match request(&engine) {
                        Ok(tokens) => {
                            assert_eq!(tokens, reference, "{what}: wrong tokens after recovery");
                            recovered += 1;
                        }
                        Err(e) => {
                            assert!(e.contains("unusable after") && mentions(&e), "{what}: {e}");
                            unusable += 1;
                        }
                    }
                }
                Ok(tokens) => assert_eq!(tokens, reference, "{what}: wrong tokens"),
            }
            drop(engine);
            live(&what);
        }
    }
    eprintln!(
        "{injected} faults injected ({} calls x {} statuses x load/serve): {load_faults} failed a load, {serve_faults} failed a request ({recovered} recovered on the next request, {unusable} left the device unusable)",
        CALLS.len(),
        STATUSES.len()
    );
    // Loading allocates, writes weights, loads executables and reads their tensor info; serving
    // allocates, clears and writes tensors, builds tensor sets, executes and reads back.
    assert_eq!(
        load_faults,
        4 * STATUSES.len(),
        "faults reaching the load path"
    );
    assert_eq!(
        serve_faults,
        7 * STATUSES.len(),
        "faults reaching the serving path"
    );
}

#[test]
fn running_out_of_device_memory_at_load_names_the_sizes() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["generate", "--device", "neuron:0", "--model"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama"))
        .args([
            "--prompt",
            "Hello",
            "--max-context",
            "32",
            "--prefill-chunk",
            "8",
        ])
        .env("SWITCHYARD_NRT_LIB", lib)
        .env("SWITCHYARD_NEURON_CACHE", cache.path())
        .env("SWITCHYARD_NRT_EMU_MEM_LIMIT", "200K")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("out of device memory")
            && stderr.contains("bytes for weight '")
            && stderr.contains("of 204800 bytes of device memory in use"),
        "{stderr}"
    );
}
