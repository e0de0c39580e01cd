//! The benchmark on a fixture model: every sample recorded, outputs well-formed, bad options
//! refused before anything runs.

use switchyard::bench::{run, BenchOptions, Test};

fn tiny() -> BenchOptions {
    BenchOptions {
        model: "tests/fixtures/llama".into(),
        devices: vec!["cpu".into(), "cuda:0".into()],
        prompt_sizes: vec![8, 16],
        gen_sizes: vec![4],
        repetitions: 3,
        warmup: 1,
        price_overrides: vec![("cpu".into(), 0.09)],
        ..Default::default()
    }
}

#[test]
fn measures_every_sample_and_reports_them() {
    let mut steps = 0;
    let report = run(&tiny(), |p| {
        if let switchyard::bench::Progress::Step(_) = p {
            steps += 1;
        }
    })
    .unwrap();
    assert_eq!(steps, 2 * 3 * 4, "two devices x three tests x four runs");
    assert_eq!(report.devices.len(), 2);
    let cuda = &report.devices[1];
    // Without the `cuda` feature the reason is the build; with it (CI's stub run), the driver.
    assert!(
        cuda.skipped
            .as_deref()
            .is_some_and(|r| cfg!(feature = "cuda") || r.contains("no CUDA support")),
        "{:?}",
        cuda.skipped
    );
    let cpu = &report.devices[0];
    assert!(cpu.skipped.is_none());
    assert_eq!(cpu.results.len(), 3);
    for r in &cpu.results {
        assert_eq!(r.samples.len(), 4);
        assert_eq!(r.samples.iter().filter(|s| s.warmup).count(), 1);
        assert!(r.tokens_per_s.mean > 0.0 && r.tokens_per_s.stdev >= 0.0);
        let c = r.usd_per_million_tokens.unwrap();
        assert!((c - 0.09 / 3600.0 / r.tokens_per_s.mean * 1e6).abs() < 1e-9);
        match r.test {
            Test::Pp(n) => {
                assert!(r.ttft_s.is_some() && r.latency_p50_p90_p99_s.is_none());
                assert!(r
                    .samples
                    .iter()
                    .all(|s| s.tokens == n && s.ttft_s.unwrap() <= s.seconds + 1e-9));
            }
            Test::Tg(n) => {
                let [p50, p90, p99] = r.latency_p50_p90_p99_s.unwrap();
                assert!(p50 <= p90 && p90 <= p99);
                assert!(r.samples.iter().all(|s| s.token_latencies_s.len() == n));
                assert!(r.roofline_fraction.unwrap() > 0.0);
                assert!(r.bytes_per_token.unwrap() >= cpu.weight_bytes as f64);
            }
        }
    }

    let md = report.markdown();
    assert!(
        md.contains("| device | test | t/s |")
            && md.contains("| cpu | pp16 |")
            && md.contains("| cpu | tg4 |"),
        "{md}"
    );
    assert!(md.contains("| cuda:0 | skipped:"), "{md}");
    assert!(md
        .lines()
        .next()
        .unwrap()
        .contains("model: tests/fixtures/llama"));

    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    let samples = json["devices"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["samples"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(samples, 12, "every sample is in the json");
    assert_eq!(
        report.jsonl().lines().count(),
        12 + 1,
        "one line per sample, one for the skipped device"
    );
    for line in report.jsonl().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert_eq!(report.csv().lines().count(), 12 + 1);
    let svg = switchyard::bench::svg(&report).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("cpu tg4") && svg.contains("generation (tg)"));
}

#[test]
fn bad_options_are_refused_before_running() {
    let err = |o: BenchOptions| run(&o, |_| {}).unwrap_err().to_string();
    let e = err(BenchOptions {
        prompt_sizes: vec![0],
        ..tiny()
    });
    assert!(e.contains("-p 0") && e.contains("between 1 and"), "{e}");
    let e = err(BenchOptions {
        gen_sizes: vec![100_000],
        ..tiny()
    });
    assert!(e.contains("-n 100000") && e.contains("512"), "{e}");
    let e = err(BenchOptions {
        devices: vec!["cpu".into(), "tpu:0".into()],
        ..tiny()
    });
    assert!(e.contains("unknown device 'tpu:0'"), "{e}");
    let e = err(BenchOptions {
        price_overrides: vec![("neuron:0".into(), 1.0)],
        ..tiny()
    });
    assert!(e.contains("neuron:0 is not in this run"), "{e}");
    let e = err(BenchOptions {
        instance: Some("z1.mega".into()),
        ..tiny()
    });
    assert!(e.contains("--instance z1.mega"), "{e}");
    let e = err(BenchOptions {
        model: "builtin:nope".into(),
        ..tiny()
    });
    assert!(e.contains("no such built-in model"), "{e}");
}

#[test]
fn projections_are_labelled_priced_and_set_against_the_measured_cpu() {
    use switchyard::project::{ModelCost, Projection};
    let options = BenchOptions {
        model: "builtin:smollm2-135m".into(),
        devices: vec!["cpu".into()],
        prompt_sizes: vec![16],
        gen_sizes: vec![8],
        repetitions: 1,
        warmup: 0,
        project: vec!["h100".into(), "trn2".into(), "c7a.large".into()],
        project_batches: vec![1, 8],
        price_overrides: vec![("trn2".into(), 40.0)],
        ..Default::default()
    };
    let report = run(&options, |_| {}).unwrap();
    let p = report.projection.as_ref().unwrap();
    assert!(!p.calibrated);
    let names: Vec<&str> = p.targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(names, ["h100", "trn2", "c7a.large"]);
    let target = |n: &str| -> &Projection { p.targets.iter().find(|t| t.target == n).unwrap() };
    for t in &p.targets {
        assert!(t.projected);
        assert_eq!(t.prompts.len(), 1);
        assert_eq!(t.decodes.len(), 2, "one per batch size");
    }
    // Accelerators compute in bf16, the CPU instance in f32 (the engine's CPU default).
    assert_eq!(target("h100").dtype, switchyard::DType::BF16);
    assert_eq!(target("c7a.large").dtype, switchyard::DType::F32);
    // Prices: the table's for the H100 ($98.32 / 8), the flag's for trn2.
    let h100 = target("h100");
    assert!((h100.usd_per_hour.unwrap() - 98.32 / 8.0).abs() < 1e-9);
    let trn2 = target("trn2").decodes[0].clone();
    let want = 40.0 / 3600.0 / trn2.aggregate_tokens_per_s * 1e6;
    assert!((trn2.usd_per_million_tokens.unwrap() - want).abs() < 1e-9);
    // The CPU measured in the same run sits next to its own projection, both tests.
    let cal: Vec<_> = p.calibration.iter().filter(|c| c.device == "cpu").collect();
    assert_eq!(cal.len(), 2);
    for c in &cal {
        assert!(c.measured_tokens_per_s > 0.0 && c.projected_tokens_per_s > 0.0);
        let ratio = c.measured_tokens_per_s / c.projected_tokens_per_s;
        assert!((c.measured_over_projected - ratio).abs() < 1e-12);
        assert!(c.spec.contains("measured by the probe"), "{}", c.spec);
    }
    // Every projected row is labelled in every output.
    let md = report.markdown();
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| h100 |") || l.starts_with("| trn2 |"))
        .collect();
    assert_eq!(rows.len(), 2, "the spec rows, with sources: {md}");
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| h100") || l.starts_with("| trn2"))
        .filter(|l| !rows.contains(l))
        .collect();
    assert_eq!(rows.len(), 6, "{md}");
    assert!(rows.iter().all(|l| l.contains(" (projected) |")), "{md}");
    assert!(md.contains("Projection against measurement"));
    assert!(md.contains("NVIDIA H100 datasheet"), "sources are printed");
    let csv = report.csv();
    let projected: Vec<&str> = csv.lines().filter(|l| l.contains("(projected)")).collect();
    assert_eq!(projected.len(), 9);
    assert!(projected.iter().all(|l| l.contains(",true,")));
    assert!(csv
        .lines()
        .skip(1)
        .filter(|l| !l.contains("(projected)"))
        .all(|l| l.ends_with(",false,1")));
    for line in report.jsonl().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let labelled = v["device"].as_str().unwrap().ends_with("(projected)");
        assert_eq!(v["projected"].as_bool(), Some(labelled), "{line}");
    }
    assert!(switchyard::bench::svg(&report)
        .unwrap()
        .contains("against batch"));
    // The cost model under the projection is the engine's graph: the CPU's f32 weights.
    let model = switchyard::models::Model::load("builtin:smollm2-135m").unwrap();
    let cost = ModelCost::new(
        &model.config,
        model.weights.as_ref(),
        switchyard::DType::F32,
    )
    .unwrap();
    assert_eq!(cost.resident_bytes as usize, report.devices[0].weight_bytes);
}

#[test]
fn calibration_carries_the_measured_cpu_fraction_to_cpu_targets_only() {
    let options = BenchOptions {
        model: "builtin:smollm2-135m".into(),
        devices: vec!["cpu".into()],
        prompt_sizes: vec![16],
        gen_sizes: vec![8],
        repetitions: 1,
        warmup: 0,
        project: vec!["c7i.large".into(), "l4".into()],
        calibrate: true,
        ..Default::default()
    };
    let report = run(&options, |_| {}).unwrap();
    let p = report.projection.unwrap();
    let cpu: Vec<_> = p.calibration.iter().collect();
    let (tg, pp) = (
        cpu.iter().find(|c| matches!(c.test, Test::Tg(_))).unwrap(),
        cpu.iter().find(|c| matches!(c.test, Test::Pp(_))).unwrap(),
    );
    let c7i = &p.targets[0];
    assert!((c7i.efficiency.bandwidth - tg.achieved_fraction).abs() < 1e-12);
    assert!((c7i.efficiency.compute - pp.achieved_fraction).abs() < 1e-12);
    assert!(c7i.efficiency.source.starts_with("calibrated on the cpu"));
    // No GPU was measured: the L4 keeps the assumed efficiency, and says so.
    let l4 = &p.targets[1];
    assert_eq!(l4.efficiency.bandwidth, 0.75);
    assert!(l4.efficiency.source.contains("no gpu device measured"));
}

#[test]
fn projection_options_are_checked() {
    let base = || BenchOptions {
        model: "builtin:smollm2-135m".into(),
        devices: vec![],
        prompt_sizes: vec![16],
        gen_sizes: vec![8],
        ..Default::default()
    };
    let err = |o: BenchOptions| run(&o, |_| {}).unwrap_err().to_string();
    assert!(err(base()).contains("no --devices and no --project"));
    let e = err(BenchOptions {
        project: vec!["tpu9".into()],
        ..base()
    });
    assert!(
        e.contains("--project: unknown projection target 'tpu9'"),
        "{e}"
    );
    let e = err(BenchOptions {
        project: vec!["h100".into()],
        project_batches: vec![0],
        ..base()
    });
    assert!(e.contains("--project-batch"), "{e}");
    let e = err(BenchOptions {
        project: vec!["h100".into()],
        price_overrides: vec![("l4".into(), 1.0)],
        ..base()
    });
    assert!(e.contains("--price l4=1: l4 is not in this run"), "{e}");
    // Projection alone measures nothing and needs no device.
    let r = run(
        &BenchOptions {
            project: vec!["h100".into()],
            ..base()
        },
        |_| {},
    )
    .unwrap();
    assert!(r.devices.is_empty() && r.projection.unwrap().targets.len() == 1);
}
