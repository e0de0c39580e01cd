//! On a machine with a Neuron device and runtime, the real libnrt through the same backend.
//! These tests are `#[ignore]`d (there is no Trainium or Inferentia here); run them where one is:
//!
//! ```sh
//! cargo test -p switchyard-neuron --test hardware -- --ignored
//! ```
//!
//! and there they fail, never skip, when the device or its runtime is missing.

use switchyard_neuron::NeuronDevice;
use switchyard_runtime::{DType, Device, HostTensor};

/// The real NeuronCore 0; panics (the test fails) when there is none.
fn real_device() -> NeuronDevice {
    assert!(
        std::path::Path::new("/dev/neuron0").exists(),
        "no /dev/neuron0: these tests need Trainium or Inferentia"
    );
    match NeuronDevice::open(0) {
        Ok(d) if !d.info().emulated => d,
        Ok(_) => panic!("the runtime found is the emulator: unset SWITCHYARD_NRT_LIB"),
        Err(e) => panic!("/dev/neuron0 exists but the Neuron runtime did not open: {e}"),
    }
}

#[test]
#[ignore = "needs a Neuron device: cargo test -p switchyard-neuron --test hardware -- --ignored"]
fn hardware_tensor_round_trip_and_info() {
    let dev = real_device();
    let info = dev.info();
    assert!(info.memory_total.is_some_and(|m| m > 0), "{info}");
    let host = HostTensor::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let buf = dev.upload(&host).unwrap();
    assert_eq!(dev.download(&buf).unwrap(), host);
    let zero = dev.allocate(DType::I32, &[4]).unwrap();
    assert_eq!(
        dev.download(&zero).unwrap().to_i64_vec().unwrap(),
        vec![0; 4]
    );
}
