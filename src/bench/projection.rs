//! The benchmark's projection section: roofline projections of the devices named with
//! `--project`, and, for every device measured in the same run, its projection next to its
//! measurement (`--calibrate` carries the measured fractions over to the projections of the same
//! device class).

use super::{BenchOptions, BenchReport, DeviceRun, Test};
use crate::models::Model;
use crate::project::{
    project, this_cpu, DeviceClass, DeviceSpec, Efficiency, ModelCost, Projection, Workload,
};
use crate::runtime::DeviceKind;
use crate::DType;
use serde::Serialize;
use std::fmt::Write;

/// A measured device set next to its own projection.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationRow {
    /// The measured device.
    pub device: String,
    /// The spec row its projection uses, with its source.
    pub spec: String,
    /// The test (`pp512`, `tg128`).
    pub test: Test,
    /// Measured tokens per second (mean).
    pub measured_tokens_per_s: f64,
    /// Projected tokens per second at the efficiency assumed for its class.
    pub projected_tokens_per_s: f64,
    /// `measured / projected`.
    pub measured_over_projected: f64,
    /// `measured / roofline at the peaks`: the efficiency this device reached.
    pub achieved_fraction: f64,
}

/// Everything projected in one run.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionReport {
    /// The tests and batch sizes projected.
    pub workload: Workload,
    /// Whether measured fractions replaced the assumed efficiencies.
    pub calibrated: bool,
    /// Per target.
    pub targets: Vec<Projection>,
    /// Per measured device and test.
    pub calibration: Vec<CalibrationRow>,
    /// The spec rows used, with their sources.
    pub specs: Vec<DeviceSpec>,
    /// What could not be projected or calibrated, and why.
    pub notes: Vec<String>,
}

/// The dtype a target computes in: `--dtype`, else f32 on CPUs and bf16 on accelerators.
fn target_dtype(options: &BenchOptions, class: DeviceClass) -> DType {
    options.dtype.unwrap_or(match class {
        DeviceClass::Cpu => DType::F32,
        DeviceClass::Gpu | DeviceClass::Neuron => DType::BF16,
    })
}

fn unit() -> Efficiency {
    Efficiency {
        bandwidth: 1.0,
        compute: 1.0,
        layer_overhead_us: 0.0,
        source: "the peaks".into(),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| super::percentile(&v, 50.0))
}

/// The spec of a measured device and its class, or why there is none.
fn measured_spec(
    run: &DeviceRun,
    options: &BenchOptions,
    threads: usize,
) -> Result<(DeviceSpec, DeviceClass), String> {
    let info = run.info.as_ref().ok_or("not opened")?;
    if info.emulated {
        return Err("emulated: its speed is the emulator's, not a device's".into());
    }
    match info.kind {
        DeviceKind::Cpu => {
            let bw = run
                .bandwidth
                .as_ref()
                .ok_or("no bandwidth measurement")?
                .bytes_per_s;
            let spec = this_cpu(
                &info.description,
                threads,
                bw,
                info.memory_total,
                crate::candle::CpuKernels::default_for_this_cpu(),
            )
            .ok_or("no clock frequency in /proc/cpuinfo to estimate its compute peak")?;
            Ok((spec, DeviceClass::Cpu))
        }
        DeviceKind::Cuda | DeviceKind::Neuron => {
            let class = if info.kind == DeviceKind::Cuda {
                DeviceClass::Gpu
            } else {
                DeviceClass::Neuron
            };
            options
                .specs
                .detect(&info.description)
                .map(|s| (s.clone(), class))
                .ok_or_else(|| {
                    format!(
                        "no spec row detects '{}': add one with `detect` (--specs FILE)",
                        info.description
                    )
                })
        }
    }
}

fn test_value(p: &Projection, test: Test) -> Option<f64> {
    match test {
        Test::Pp(n) => p
            .prompts
            .iter()
            .find(|x| x.tokens == n)
            .map(|x| x.tokens_per_s),
        Test::Tg(n) => p
            .decodes
            .iter()
            .find(|x| x.tokens == n && x.batch == 1)
            .map(|x| x.aggregate_tokens_per_s),
    }
}

/// Builds the section for `report`, measured with `options` on `model`.
pub fn build(
    options: &BenchOptions,
    model: &Model,
    report: &BenchReport,
) -> Result<ProjectionReport, super::BenchError> {
    let workload = Workload {
        prompt_sizes: options.prompt_sizes.clone(),
        gen_sizes: options.gen_sizes.clone(),
        batches: options.project_batches.clone(),
    };
    let batch1 = Workload {
        batches: vec![1],
        ..workload.clone()
    };
    let cost_in = |dtype: DType| ModelCost::new(&model.config, model.weights.as_ref(), dtype);
    let mut out = ProjectionReport {
        workload: workload.clone(),
        calibrated: options.calibrate,
        targets: Vec::new(),
        calibration: Vec::new(),
        specs: Vec::new(),
        notes: Vec::new(),
    };
    // Measured devices first: their achieved fractions calibrate their class.
    let mut achieved: Vec<(DeviceClass, Test, f64)> = Vec::new();
    for run in report.devices.iter().filter(|r| r.skipped.is_none()) {
        let (spec, class) = match measured_spec(run, options, report.threads) {
            Ok(s) => s,
            Err(why) => {
                out.notes
                    .push(format!("{}: not calibrated: {why}", run.display_name));
                continue;
            }
        };
        let dtype = run
            .dtype
            .as_deref()
            .and_then(|d| d.parse::<DType>().ok())
            .unwrap_or(DType::F32);
        let cost = cost_in(dtype)?;
        let assumed = project(&spec, options.specs.efficiency(class), &cost, &batch1, None);
        let peak = project(&spec, &unit(), &cost, &batch1, None);
        for r in &run.results {
            let (Some(p), Some(roof)) = (test_value(&assumed, r.test), test_value(&peak, r.test))
            else {
                continue;
            };
            let measured = r.tokens_per_s.mean;
            achieved.push((class, r.test, measured / roof));
            out.calibration.push(CalibrationRow {
                device: run.display_name.clone(),
                spec: format!("{} ({})", spec.name, spec.spec_source),
                test: r.test,
                measured_tokens_per_s: measured,
                projected_tokens_per_s: p,
                measured_over_projected: measured / p,
                achieved_fraction: measured / roof,
            });
        }
        out.specs.push(spec);
    }
    for name in &options.project {
        let spec = options
            .specs
            .target(name)
            .map_err(|e| anyhow::anyhow!("--project: {e}"))?
            .clone();
        let assumed = options.specs.efficiency(spec.class).clone();
        let efficiency = if options.calibrate {
            calibrated(&achieved, spec.class, &assumed)
        } else {
            assumed
        };
        let price = match options
            .price_overrides
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(&spec.name))
        {
            Some((_, usd)) => Some((*usd, "--price".to_string())),
            None => spec.usd_per_hour().map(|p| {
                (
                    p,
                    format!(
                        "{} ${}/h / {} ({}, {})",
                        spec.instance,
                        spec.instance_usd_per_hour.unwrap_or_default(),
                        spec.per_instance,
                        spec.price_source.as_deref().unwrap_or("no source"),
                        spec.price_date.as_deref().unwrap_or("no date")
                    ),
                )
            }),
        };
        if price.is_none() {
            out.notes.push(format!(
                "{}: no price in the spec table ({}): pass --price {}=USD_PER_HOUR for a cost",
                spec.name,
                spec.price_source.as_deref().unwrap_or("none given"),
                spec.name
            ));
        }
        let cost = cost_in(target_dtype(options, spec.class))?;
        out.targets
            .push(project(&spec, &efficiency, &cost, &workload, price));
        out.specs.push(spec);
    }
    Ok(out)
}

/// The efficiency of `class` measured in this run (median achieved fraction of its `tg` tests
/// for the bandwidth, of its `pp` tests for the compute), each falling back to `assumed` when no
/// device of the class measured it.
fn calibrated(
    achieved: &[(DeviceClass, Test, f64)],
    class: DeviceClass,
    assumed: &Efficiency,
) -> Efficiency {
    let of = |decode: bool| {
        median(
            achieved
                .iter()
                .filter(|(c, t, _)| *c == class && matches!(t, Test::Tg(_)) == decode)
                .map(|(_, _, f)| *f)
                .collect(),
        )
    };
    let (bw, compute) = (of(true), of(false));
    if bw.is_none() && compute.is_none() {
        return Efficiency {
            source: format!(
                "assumed (no {} device measured in this run to calibrate): {}",
                class.name(),
                assumed.source
            ),
            ..assumed.clone()
        };
    }
    let part = |v: Option<f64>, fallback: f64, what: &str| match v {
        Some(f) => format!("{what} {f:.2} measured"),
        None => format!("{what} {fallback:.2} assumed"),
    };
    Efficiency {
        bandwidth: bw.unwrap_or(assumed.bandwidth),
        compute: compute.unwrap_or(assumed.compute),
        // The measured fractions already include whatever overhead the device had.
        layer_overhead_us: 0.0,
        source: format!(
            "calibrated on the {} measured in this run: {}, {}",
            class.name(),
            part(bw, assumed.bandwidth, "bandwidth"),
            part(compute, assumed.compute, "compute")
        ),
    }
}

fn gb(b: f64) -> String {
    format!("{:.2} GB", b / 1e9)
}

impl ProjectionReport {
    /// The section as markdown: projections, calibration, and the spec rows with sources.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.targets.is_empty() {
            s.push_str(
                "\nProjected from device specifications (roofline: not measured; every figure \
                 in this table is projected)\n\n",
            );
            s.push_str("| target (projected) | devices | dtype | test | batch | t/s | t/s per sequence | TTFT ms | bound | $/1M tok | efficiency bw / compute / µs per layer |\n");
            s.push_str("|---|---:|---|---|---:|---:|---:|---:|---|---:|---|\n");
            for p in &self.targets {
                let eff = format!(
                    "{:.2} / {:.2} / {:.0}",
                    p.efficiency.bandwidth, p.efficiency.compute, p.efficiency.layer_overhead_us
                );
                let devices = format!("{} ({} needed)", p.devices, gb(p.memory_needed_bytes));
                for x in &p.prompts {
                    let _ = writeln!(
                        s,
                        "| {} (projected) | {devices} | {} | pp{} | 1 | {:.1} | {:.1} | {:.2} | {} | | {eff} |",
                        p.target,
                        p.dtype.name(),
                        x.tokens,
                        x.tokens_per_s,
                        x.tokens_per_s,
                        x.ttft_s * 1e3,
                        x.bound.name()
                    );
                }
                for x in &p.decodes {
                    let _ = writeln!(
                        s,
                        "| {} (projected) | {devices} | {} | tg{} | {} | {:.1} | {:.1} | | {} | {} | {eff} |",
                        p.target,
                        p.dtype.name(),
                        x.tokens,
                        x.batch,
                        x.aggregate_tokens_per_s,
                        x.per_sequence_tokens_per_s,
                        x.bound.name(),
                        x.usd_per_million_tokens
                            .map(|c| format!("{c:.4}"))
                            .unwrap_or_else(|| "no price".into())
                    );
                }
            }
            s.push('\n');
            let mut seen = Vec::new();
            for p in &self.targets {
                if !seen.contains(&p.efficiency.source) {
                    let _ = writeln!(
                        s,
                        "- efficiency ({}): {}",
                        p.class.name(),
                        p.efficiency.source
                    );
                    seen.push(p.efficiency.source.clone());
                }
            }
            for p in &self.targets {
                if let (Some(usd), Some(src)) = (p.usd_per_hour, &p.price_source) {
                    let _ = writeln!(s, "- {}: ${usd:.4}/h from {src}", p.target);
                }
            }
        }
        if !self.calibration.is_empty() {
            s.push_str("\nProjection against measurement (same run)\n\n");
            s.push_str("| device | test | measured t/s | projected t/s | measured / projected | achieved fraction of the roofline |\n");
            s.push_str("|---|---|---:|---:|---:|---:|\n");
            for c in &self.calibration {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} | {:.1} | {:.2}× | {:.0}% |",
                    c.device,
                    c.test.label(),
                    c.measured_tokens_per_s,
                    c.projected_tokens_per_s,
                    c.measured_over_projected,
                    c.achieved_fraction * 100.0
                );
            }
        }
        if !self.specs.is_empty() {
            s.push_str("\nDevice specifications used\n\n");
            s.push_str("| device | what | memory GiB | bandwidth GB/s | BF16 TFLOP/s | FP8 TFLOP/s | F32 TFLOP/s | source (date) |\n");
            s.push_str("|---|---|---:|---:|---:|---:|---:|---|\n");
            for d in &self.specs {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} | {:.1} | {:.2} | {} | {:.2} | {} ({}) |",
                    d.name,
                    d.description,
                    d.memory_gib,
                    d.bandwidth_gbs,
                    d.bf16_tflops,
                    d.fp8_tflops.map(|f| format!("{f:.0}")).unwrap_or_default(),
                    d.f32_tflops,
                    d.spec_source,
                    d.spec_date
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }
}
