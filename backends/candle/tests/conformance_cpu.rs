//! The conformance suite on the candle CPU device: every op and the composite graphs against the
//! reference interpreter, with the tolerances stated in `switchyard_runtime::conformance`.

use switchyard_candle::{CandleDevice, CpuKernels};
use switchyard_runtime::conformance::run_suite;

/// Every kernel variant this CPU can execute, one test each, so an AVX-512 machine also checks
/// the AVX2 kernels an AVX2-only machine runs. A variant the CPU lacks fails to open, and the
/// test says so instead of passing.
fn variant(k: CpuKernels) {
    let fused_before = switchyard_candle::profile::fused_chains();
    match CandleDevice::cpu_with_kernels(k) {
        Ok(device) => suite_on(device),
        Err(e) => panic!("{k}: {e} (run with --skip {k} on such a CPU)"),
    }
    // The matrix-kernel variants run an encoder layer's chains fused (products with their
    // bias, residual or GELU; masked attention), so the suite checked those kernels too.
    if k != CpuKernels::Portable {
        assert!(
            switchyard_candle::profile::fused_chains() > fused_before,
            "{k}: no fused chain ran in the suite"
        );
    }
}

/// Candle's own kernels only: the op path CUDA devices take, checked here without a GPU.
#[test]
fn portable() {
    variant(CpuKernels::Portable);
}

#[test]
#[cfg_attr(not(target_arch = "x86_64"), ignore = "x86-64 kernels")]
fn avx2() {
    variant(CpuKernels::Avx2);
}

#[test]
#[cfg_attr(not(target_arch = "x86_64"), ignore = "x86-64 kernels")]
fn avx512() {
    if !CpuKernels::Avx512.runs_here() && std::env::var_os("SWITCHYARD_REQUIRE_AVX512").is_none() {
        // Not every CI machine has AVX-512; CI sets SWITCHYARD_REQUIRE_AVX512 where it must run.
        eprintln!(
            "not run: this CPU has no AVX-512 (set SWITCHYARD_REQUIRE_AVX512 to fail instead)"
        );
        return;
    }
    variant(CpuKernels::Avx512);
}

#[test]
#[cfg_attr(not(target_arch = "x86_64"), ignore = "x86-64 kernels")]
fn avx512_vnni() {
    if !CpuKernels::Avx512Vnni.runs_here()
        && std::env::var_os("SWITCHYARD_REQUIRE_AVX512").is_none()
    {
        eprintln!(
            "not run: this CPU has no AVX-512 VNNI (set SWITCHYARD_REQUIRE_AVX512 to fail instead)"
        );
        return;
    }
    variant(CpuKernels::Avx512Vnni);
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
