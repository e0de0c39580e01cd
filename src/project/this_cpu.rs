//! A spec row for the CPU this process runs on, so that its projection can be set next to its
//! measurement: bandwidth from the benchmark's probe, compute estimated from the kernel variant's
//! vector width, two FMA units per core and the clock `/proc/cpuinfo` reports.

use super::specs::{DeviceClass, DeviceSpec};
use crate::candle::CpuKernels;

/// f32 lanes of one vector instruction of `kernels`.
pub fn f32_lanes(kernels: CpuKernels) -> usize {
    match kernels {
        CpuKernels::Avx512 | CpuKernels::Avx512Vnni => 16,
        CpuKernels::Avx2 => 8,
        // candle's own kernels, compiled for the target's baseline (SSE2 on x86-64).
        CpuKernels::Portable => 4,
    }
}

/// The highest clock in MHz that `/proc/cpuinfo` reports, when it reports one.
pub fn clock_mhz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .reduce(f64::max)
}

/// The row for this CPU with `threads` compute threads, `bandwidth` bytes per second (the
/// probe's), `memory` bytes and the kernel variant in use; `None` without a clock.
pub fn this_cpu(
    description: &str,
    threads: usize,
    bandwidth: f64,
    memory: Option<u64>,
    kernels: CpuKernels,
) -> Option<DeviceSpec> {
    let mhz = clock_mhz()?;
    let flop_per_cycle = f32_lanes(kernels) * 2 * 2;
    let tflops = threads as f64 * flop_per_cycle as f64 * mhz * 1e6 / 1e12;
    Some(DeviceSpec {
        name: "cpu".into(),
        description: description.to_string(),
        class: DeviceClass::Cpu,
        memory_gib: memory.map_or(f64::INFINITY, |m| m as f64 / (1u64 << 30) as f64),
        bandwidth_gbs: bandwidth / 1e9,
        bf16_tflops: tflops,
        fp8_tflops: None,
        f32_tflops: tflops,
        spec_source: format!(
            "this machine: read bandwidth {:.1} GB/s measured by the probe; f32 peak estimated as \
             {threads} threads × {flop_per_cycle} flop/cycle ({} kernels: {} lanes × 2 FMA units × \
             2) × {:.2} GHz (/proc/cpuinfo)",
            bandwidth / 1e9,
            kernels.label(),
            f32_lanes(kernels),
            mhz / 1e3
        ),
        spec_date: "this run".into(),
        instance: "this machine".into(),
        per_instance: 1,
        instance_usd_per_hour: None,
        price_source: None,
        price_date: None,
        detect: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_peak_follows_the_kernel_variant() {
        let Some(mhz) = clock_mhz() else {
            // Not Linux: nothing to read, and `this_cpu` says so by returning None.
            assert!(this_cpu("x", 2, 1e10, None, CpuKernels::Portable).is_none());
            return;
        };
        let avx2 = this_cpu("x", 2, 40e9, Some(1 << 34), CpuKernels::Avx2).unwrap();
        let want = 2.0 * 32.0 * mhz * 1e6 / 1e12;
        assert!((avx2.f32_tflops / want - 1.0).abs() < 1e-12);
        let avx512 = this_cpu("x", 2, 40e9, None, CpuKernels::Avx512).unwrap();
        assert!((avx512.f32_tflops / avx2.f32_tflops - 2.0).abs() < 1e-12);
        assert_eq!(avx2.bandwidth_gbs, 40.0);
        assert_eq!(avx2.memory_gib, 16.0);
        assert!(avx2.spec_source.contains("avx2 kernels: 8 lanes"));
    }
}
