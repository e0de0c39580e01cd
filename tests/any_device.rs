//! `AnyDevice` runs graphs exactly like the device it wraps.

use switchyard::runtime::conformance::{all_cases, run_case, Outcome};
use switchyard::AnyDevice;

#[test]
fn any_device_cpu_runs_composite_cases() {
    let device = AnyDevice::open("CPU").unwrap();
    let cases = all_cases();
    let composite: Vec<_> = cases
        .iter()
        .filter(|c| c.name.starts_with("layer/"))
        .collect();
    assert!(composite.len() >= 3);
    for case in composite {
        let r = run_case(&device, case);
        assert_eq!(r.outcome, Outcome::Passed, "{}", case.name);
    }
}

#[test]
fn an_executable_runs_only_on_the_device_that_compiled_it() {
    use switchyard::neuron::NeuronDevice;
    use switchyard::{DType, Device, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};
    let mut b = GraphBuilder::new("double");
    let x = b.input("x", TensorSpec::new(DType::F32, [1, 2])).unwrap();
    let y = b.add(x, x).unwrap();
    b.output("y", y).unwrap();
    let graph = b.finish().unwrap();
    let host = HostTensor::from_f32(&[1, 2], &[1.0, 2.0]).unwrap();

    // Across backends: a CPU executable handed to a NeuronCore.
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let cpu = AnyDevice::open("cpu").unwrap();
    let neuron0 = AnyDevice::Neuron(NeuronDevice::open_with_library(0, Some(&lib)).unwrap());
    let exe = cpu.compile(&graph, &Default::default()).unwrap();
    let x0 = neuron0.upload(&host).unwrap();
    let err = neuron0
        .execute(&exe, ExecuteArgs::new().input("x", &x0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "executable compiled for cpu cannot run on neuron:0 (emulated): compile it on neuron:0 (emulated)"
    );

    // Within one backend: NeuronCore 0's executable on NeuronCore 1.
    let n0 = NeuronDevice::open_with_library(0, Some(&lib)).unwrap();
    let n1 = NeuronDevice::open_with_library(1, Some(&lib)).unwrap();
    let exe = n0.compile(&graph, &Default::default()).unwrap();
    let x1 = n1.upload(&host).unwrap();
    let err = n1
        .execute(&exe, ExecuteArgs::new().input("x", &x1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("compiled for neuron:0 cannot run on neuron:1"),
        "{err}"
    );
    // On its own device it runs.
    let x0 = n0.upload(&host).unwrap();
    let out = n0
        .execute(&exe, ExecuteArgs::new().input("x", &x0))
        .unwrap();
    assert_eq!(
        n0.download(&out[0]).unwrap().to_f32_vec().unwrap(),
        [2.0, 4.0]
    );
}
