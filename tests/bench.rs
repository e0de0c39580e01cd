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
