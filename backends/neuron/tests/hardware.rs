//! On a machine with a Neuron device and runtime, the real libnrt through the same backend.
//! Elsewhere these tests print why they did not run.

use switchyard_neuron::NeuronDevice;
use switchyard_runtime::{DType, Device, HostTensor};

fn real_device() -> Option<NeuronDevice> {
    if !std::path::Path::new("/dev/neuron0").exists() {
        println!("skipped: no /dev/neuron0 on this machine (real Neuron hardware tests run on Trainium/Inferentia)");
        return None;
    }
    match NeuronDevice::open(0) {
        Ok(d) if !d.info().emulated => Some(d),
        Ok(_) => {
            println!("skipped: the runtime found is the emulator (unset SWITCHYARD_NRT_LIB for hardware tests)");
            None
        }
        Err(e) => {
            println!("skipped: /dev/neuron0 exists but the runtime did not initialize: {e}");
            None
        }
    }
}

#[test]
fn hardware_tensor_round_trip_and_info() {
    let Some(dev) = real_device() else { return };
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
