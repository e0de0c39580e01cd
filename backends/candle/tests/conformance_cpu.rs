//! The conformance suite on the candle CPU device: every op and the composite graphs against the
//! reference interpreter, with the tolerances stated in `switchyard_runtime::conformance`.

use switchyard_candle::CandleDevice;
use switchyard_runtime::conformance::run_suite;

#[test]
fn cpu_passes_the_conformance_suite() {
    suite_on(CandleDevice::cpu());
}

/// Candle's own kernels only: the op path CUDA devices take, checked here without a GPU.
#[test]
fn the_portable_path_passes_the_conformance_suite() {
    suite_on(CandleDevice::cpu_portable());
}

fn suite_on(device: CandleDevice) {
    let report = run_suite(&device);
    println!("{report}");
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|c| format!("  {}: {:?}", c.name, c.outcome))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(report.skipped().is_empty(), "the CPU supports every case");
    assert_eq!(
        report.ops_covered().len(),
        switchyard_runtime::graph::OP_NAMES.len(),
        "every op runs on the CPU"
    );
}
