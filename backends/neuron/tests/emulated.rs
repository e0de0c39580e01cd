//! The Neuron backend against the libnrt emulator built in this workspace: the conformance suite
//! (same cases and tolerances as the CPU), lifecycle and leaks, every injected fault, and the
//! static-shape and signature checks.

use std::sync::{Mutex, MutexGuard};
use switchyard_neuron::NeuronDevice;
use switchyard_runtime::conformance::run_suite;
use switchyard_runtime::{
    DType, Device, Dim, Error, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec,
};

/// One runtime per process: tests that check its lifecycle or faults take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn device(index: usize) -> NeuronDevice {
    let lib = switchyard_neuron::emulator::workspace_emulator().expect("the emulator builds");
    NeuronDevice::open_with_library(index, Some(&lib)).expect("the emulated device opens")
}

#[test]
fn conformance_suite_passes_on_emulated_neuron() {
    let _g = serial();
    let dev = device(0);
    assert!(dev.info().emulated && dev.info().display_name() == "neuron:0 (emulated)");
    let report = run_suite(&dev);
    println!("{report}");
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .map(|c| format!("{}: {:?}", c.name, c.outcome))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Quantized matmuls have no Neuron lowering: those cases are skipped with the reason.
    assert!(
        report.skipped().iter().all(|c| c.quantized.is_some()),
        "only quantized cases are skipped"
    );
    let ran = report.ops_covered();
    assert_eq!(
        ran.len(),
        switchyard_runtime::graph::OP_NAMES.len(),
        "every op runs"
    );
}

fn kv_graph() -> switchyard_runtime::Graph {
    let mut b = GraphBuilder::new("kv");
    let c = b
        .state("cache", TensorSpec::new(DType::F32, [1, 4, 2]))
        .unwrap();
    let x = b
        .input("x", TensorSpec::new(DType::F32, [1, 1, 2]))
        .unwrap();
    let p = b.input("pos", TensorSpec::new(DType::I32, [1])).unwrap();
    let w = b.kv_write(c, x, p, 1).unwrap();
    b.update_state("cache", w).unwrap();
    let y = b.reduce(switchyard_runtime::ReduceOp::Sum, w, 1).unwrap();
    b.output("sum", y).unwrap();
    b.finish().unwrap()
}

#[test]
fn state_is_updated_in_place_across_calls() {
    let _g = serial();
    let dev = device(0);
    let exe = dev.compile(&kv_graph(), &Default::default()).unwrap();
    let mut cache = dev.allocate(DType::F32, &[1, 4, 2]).unwrap();
    for step in 0..4 {
        let x = dev
            .upload(&HostTensor::from_f32(&[1, 1, 2], &[step as f32 + 1.0, 10.0]).unwrap())
            .unwrap();
        let p = dev
            .upload(&HostTensor::from_i32(&[1], &[step]).unwrap())
            .unwrap();
        let out = dev
            .execute(
                &exe,
                ExecuteArgs::new()
                    .input("x", &x)
                    .input("pos", &p)
                    .state("cache", &mut cache),
            )
            .unwrap();
        let sum = dev.download(&out[0]).unwrap().to_f32_vec().unwrap();
        let n = (step + 1) as f32;
        assert_eq!(sum, vec![n * (n + 1.0) / 2.0, 10.0 * n], "step {step}");
    }
    assert_eq!(
        dev.download(&cache).unwrap().to_f32_vec().unwrap(),
        vec![1., 10., 2., 10., 3., 10., 4., 10.]
    );
}

/// Runs the `kv_graph` executable once at position 0 and returns its `sum` output.
fn run_kv_once(dev: &NeuronDevice, exe: &switchyard_neuron::NeuronExecutable) -> Vec<f32> {
    let mut cache = dev.allocate(DType::F32, &[1, 4, 2]).unwrap();
    let x = dev
        .upload(&HostTensor::from_f32(&[1, 1, 2], &[3.0, 4.0]).unwrap())
        .unwrap();
    let p = dev
        .upload(&HostTensor::from_i32(&[1], &[0]).unwrap())
        .unwrap();
    let args = ExecuteArgs::new()
        .input("x", &x)
        .input("pos", &p)
        .state("cache", &mut cache);
    let out = dev.execute(exe, args).unwrap();
    dev.download(&out[0]).unwrap().to_f32_vec().unwrap()
}

fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn compile_cache_reuses_entries_and_rebuilds_corrupt_ones() {
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("neuron-cache");
    let dev = device(0).with_compile_cache(Some(dir.clone()));
    assert_eq!(dev.compile_cache_dir(), Some(dir.as_path()));
    let shown = &dev.info().details;
    assert!(
        shown
            .iter()
            .any(|(k, v)| k == "compile cache" && v == &dir.display().to_string()),
        "{shown:?}"
    );
    let exe = dev.compile(&kv_graph(), &Default::default()).unwrap();
    assert_eq!(run_kv_once(&dev, &exe), vec![3.0, 4.0]);
    let entries = cache_entries(&dir);
    assert_eq!(
        entries.len(),
        1,
        "one entry per compiled graph: {entries:?}"
    );
    let entry = &entries[0];
    let good = std::fs::read(entry).unwrap();
    // A second compile of the same graph reads the entry and writes nothing new.
    let modified = std::fs::metadata(entry).unwrap().modified().unwrap();
    let again = dev.compile(&kv_graph(), &Default::default()).unwrap();
    assert_eq!(run_kv_once(&dev, &again), vec![3.0, 4.0]);
    assert_eq!(cache_entries(&dir), entries);
    assert_eq!(
        std::fs::metadata(entry).unwrap().modified().unwrap(),
        modified
    );
    // Garbage, a truncated entry and a valid artifact of another graph are all rebuilt.
    let mut other = GraphBuilder::new("other");
    let a = other.input("a", TensorSpec::new(DType::F32, [2])).unwrap();
    other.output("a_out", a).unwrap();
    let foreign =
        switchyard_neuron::artifact::EmulationArtifact::from_graph(&other.finish().unwrap())
            .unwrap()
            .to_bytes();
    for corrupt in [
        b"not a compiled graph".to_vec(),
        good[..good.len() / 2].to_vec(),
        foreign,
    ] {
        std::fs::write(entry, &corrupt).unwrap();
        let exe = dev.compile(&kv_graph(), &Default::default()).unwrap();
        assert_eq!(run_kv_once(&dev, &exe), vec![3.0, 4.0]);
        assert_eq!(std::fs::read(entry).unwrap(), good, "the entry was rebuilt");
    }
}

#[test]
fn an_unwritable_compile_cache_still_compiles() {
    let _g = serial();
    let dev = device(0).with_compile_cache(Some("/proc/switchyard-no-such-dir".into()));
    let line = &dev
        .info()
        .details
        .iter()
        .find(|(k, _)| k == "compile cache")
        .unwrap()
        .1;
    assert!(line.contains("not writable"), "{line}");
    let exe = dev.compile(&kv_graph(), &Default::default()).unwrap();
    assert_eq!(run_kv_once(&dev, &exe), vec![3.0, 4.0]);
}

#[test]
fn symbolic_graphs_and_foreign_artifacts_are_refused_clearly() {
    let _g = serial();
    let dev = device(0);
    let mut b = GraphBuilder::new("dyn");
    let x = b
        .input("x", TensorSpec::new(DType::F32, vec![Dim::sym("t", 8)]))
        .unwrap();
    let y = b.affine(x, 2.0, 0.0).unwrap();
    b.output("y", y).unwrap();
    let g = b.finish().unwrap();
    let err = dev
        .compile(&g, &Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("static-shape device") && err.contains("symbolic dimensions t"),
        "{err}"
    );

    // A real NEFF header (or anything not an emulation artifact) is INVALID, as a runtime says.
    let mut neff = vec![0u8; 2048];
    neff[..4].copy_from_slice(b"NEFF");
    let err = dev
        .load_artifact(&neff, &kv_graph().signature())
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeviceCall { call, code: 2, name, .. } if call == "nrt_load" && name == "INVALID"),
        "{err}"
    );

    // An artifact whose I/O does not match the expected signature: names and sizes are listed.
    let other = {
        let mut b = GraphBuilder::new("other");
        let x = b.input("x", TensorSpec::new(DType::F32, [3])).unwrap();
        b.output("y", x).unwrap();
        b.finish().unwrap()
    };
    let bytes = switchyard_neuron::artifact::EmulationArtifact::from_graph(&other)
        .unwrap()
        .to_bytes();
    let err = dev
        .load_artifact(&bytes, &kv_graph().signature())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not match the graph's signature") && err.contains("input0"),
        "{err}"
    );
}

#[test]
fn lifecycle_has_no_leaks() {
    let _g = serial();
    {
        let dev = device(0);
        let rt = dev.runtime().clone();
        for _ in 0..50 {
            let exe = dev.compile(&kv_graph(), &Default::default()).unwrap();
            let mut cache = dev.allocate(DType::F32, &[1, 4, 2]).unwrap();
            let x = dev
                .upload(&HostTensor::from_f32(&[1, 1, 2], &[1.0, 2.0]).unwrap())
                .unwrap();
            let p = dev
                .upload(&HostTensor::from_i32(&[1], &[0]).unwrap())
                .unwrap();
            dev.execute(
                &exe,
                ExecuteArgs::new()
                    .input("x", &x)
                    .input("pos", &p)
                    .state("cache", &mut cache),
            )
            .unwrap();
        }
        // Everything made in the loop is gone; only the device itself holds the runtime.
        for (kind, what) in [
            (0, "tensors"),
            (1, "models"),
            (2, "tensor sets"),
            (3, "tensor infos"),
        ] {
            assert_eq!(rt.emulator_live_objects(kind), Some(0), "leaked {what}");
        }
    }
    // The runtime closed with the last device and opens again.
    let dev = device(1);
    assert_eq!(dev.info().name, "neuron:1");
    let err = NeuronDevice::open_with_library(2, None)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("only 2 NeuronCore(s) are visible"), "{err}");
}

#[test]
fn every_injected_fault_surfaces_as_a_typed_error() {
    let _g = serial();
    let mut dev = device(0);
    let rt = dev.runtime().clone();
    let graph = kv_graph();
    let cases: &[(&str, u32, &str)] = &[
        ("nrt_tensor_allocate", 4, "RESOURCE"),
        ("nrt_tensor_write", 6, "HW_ERROR"),
        ("nrt_load", 9, "LOAD_NOT_ENOUGH_NC"),
        ("nrt_get_model_tensor_info", 1, "FAILURE"),
        ("nrt_allocate_tensor_set", 4, "RESOURCE"),
        ("nrt_add_tensor_to_tensor_set", 2, "INVALID"),
        ("nrt_execute", 1002, "EXEC_BAD_INPUT"),
        ("nrt_execute", 5, "TIMEOUT"),
        ("nrt_execute", 101, "EXEC_UNIT_UNRECOVERABLE"),
        ("nrt_tensor_read", 6, "HW_ERROR"),
    ];
    for &(call, code, name) in cases {
        rt.emulator_set_faults(&format!("{call}:1:{code}")).unwrap();
        let result = (|| -> Result<(), Error> {
            let exe = dev.compile(&graph, &Default::default())?;
            let mut cache = dev.allocate(DType::F32, &[1, 4, 2])?;
            let x = dev.upload(&HostTensor::from_f32(&[1, 1, 2], &[1.0, 2.0])?)?;
            let p = dev.upload(&HostTensor::from_i32(&[1], &[0])?)?;
            let out = dev.execute(
                &exe,
                ExecuteArgs::new()
                    .input("x", &x)
                    .input("pos", &p)
                    .state("cache", &mut cache),
            )?;
            dev.download(&out[0])?;
            Ok(())
        })();
        rt.emulator_set_faults("").unwrap();
        match result {
            Err(Error::DeviceCall {
                call: c,
                code: k,
                name: n,
                ..
            }) => {
                assert_eq!((c.as_str(), k, n.as_str()), (call, code as i64, name));
            }
            // Device memory running out is reported with the sizes.
            Err(Error::DeviceOutOfMemory {
                call: c, detail, ..
            }) if call == "nrt_tensor_allocate" && code == 4 => {
                assert_eq!(c, call);
                assert!(detail.starts_with("status 4 RESOURCE"), "{detail}");
            }
            other => panic!("{call}:{code}: expected a typed error, got {other:?}"),
        }
        if matches!(code, 6 | 101) {
            // A hardware or unrecoverable execution error makes the core unusable: later calls
            // are refused with the reason, and a fresh device is needed.
            let err = dev
                .compile(&graph, &Default::default())
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("unusable after") && err.contains(call) && err.contains(name),
                "{err}"
            );
            dev = device(0);
        }
        // After the fault, the device works again and nothing leaked.
        let exe = dev.compile(&graph, &Default::default()).unwrap();
        drop(exe);
        assert_eq!(
            rt.emulator_live_objects(0),
            Some(0),
            "{call}: tensors leaked"
        );
        assert_eq!(
            rt.emulator_live_objects(1),
            Some(0),
            "{call}: models leaked"
        );
        assert_eq!(rt.emulator_live_objects(2), Some(0), "{call}: sets leaked");
    }
}

#[test]
fn out_of_device_memory_is_reported() {
    let _g = serial();
    let dev = device(0);
    let limit = dev.info().memory_total.unwrap();
    let err = dev
        .allocate(DType::U8, &[limit as usize + 1])
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeviceOutOfMemory { call, requested, .. }
            if call == "nrt_tensor_allocate" && *requested == limit + 1),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("{} bytes", limit + 1))
            && text.contains(&format!("of {limit} bytes")),
        "{text}"
    );
}
