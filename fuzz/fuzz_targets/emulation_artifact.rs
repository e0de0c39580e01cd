//! Emulation artifacts (what the libnrt emulator's `nrt_load` reads) with arbitrary bytes:
//! decoded or refused, never a panic; a decoded graph's fingerprint and signature are computed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_neuron::artifact::EmulationArtifact;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = EmulationArtifact::from_bytes(data) {
        let _ = a.graph.fingerprint();
        let _ = a.graph.signature();
    }
});
