//! `switchyard generate` and `switchyard bench` on `neuron:0` through the libnrt emulator: the
//! same text as the CPU, the compile cache on disk (and a warning when it cannot be written), and
//! requests beyond the compiled buckets refused before any work.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(arch: &str) -> String {
    format!("{}/tests/fixtures/{arch}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with the emulator as libnrt and `cache` as the compile cache.
fn switchyard(args: &[&str], cache: &Path) -> (i32, String, String) {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_NRT_LIB", lib)
        .env("SWITCHYARD_NEURON_CACHE", cache)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn generate_args<'a>(model: &'a str, device: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--model",
        model,
        "--device",
        device,
        "--prompt",
        "Once upon a time, in a land far away",
        "--max-new-tokens",
        "40",
        "--temperature",
        "0",
        "--ignore-eos",
        "--max-context",
        "64",
        "--prefill-chunk",
        "8",
        "--buckets",
        "16,32",
    ]
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn generate_on_emulated_neuron_streams_the_cpu_text_and_fills_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for arch in ["llama", "gemma2", "gpt2"] {
        let model = fixture(arch);
        let (code, cpu, stderr) = switchyard(&generate_args(&model, "cpu"), &cache);
        assert_eq!(code, 0, "{stderr}");
        let (code, nrn, stderr) = switchyard(&generate_args(&model, "neuron:0"), &cache);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("[neuron:0 (emulated), f32]"), "{stderr}");
        assert!(!cpu.trim().is_empty());
        assert_eq!(
            cpu, nrn,
            "{arch}: the emulated NeuronCore streams the CPU's text"
        );
    }
    // Per model: a prefill and a decode executable for each of the buckets 16, 32 and 64.
    let compiled = entries(&cache);
    assert_eq!(compiled.len(), 3 * 6, "{compiled:?}");
    assert!(compiled.iter().all(|p| p.extension().unwrap() == "swemu"));
    // A second run compiles from the cache: nothing new is written.
    let stamps: Vec<_> = compiled
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let (code, _, stderr) = switchyard(&generate_args(&fixture("llama"), "neuron:0"), &cache);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entries(&cache), compiled);
    let again: Vec<_> = compiled
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(stamps, again);
}

#[test]
fn an_unwritable_cache_warns_and_still_compiles() {
    let cache = Path::new("/proc/switchyard-unwritable-cache");
    let (code, stdout, _) = switchyard(&["devices"], cache);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(
            "compile cache: /proc/switchyard-unwritable-cache (not writable: compiling without caching)"
        ),
        "{stdout}"
    );
    let model = fixture("llama");
    let (code, nrn, stderr) = switchyard(&generate_args(&model, "neuron:0"), cache);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "warning: the Neuron compile cache /proc/switchyard-unwritable-cache is not writable"
        ),
        "{stderr}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (_, cpu, _) = switchyard(&generate_args(&model, "cpu"), tmp.path());
    assert_eq!(cpu, nrn);
}

#[test]
fn requests_beyond_the_largest_bucket_fail_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("llama");
    let mut args = generate_args(&model, "neuron:0");
    let at = args.iter().position(|a| *a == "--max-new-tokens").unwrap();
    args[at + 1] = "100";
    let (code, stdout, stderr) = switchyard(&args, tmp.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "nothing generated: {stdout}");
    assert!(
        stderr.contains("plus 100 new tokens needs")
            && stderr.contains("the largest bucket compiled for neuron:0 (emulated) holds 64")
            && stderr.contains("buckets [16, 32, 64]"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A bucket beyond the context is refused with the flag's name.
    let mut args = generate_args(&model, "neuron:0");
    let at = args.iter().position(|a| *a == "--buckets").unwrap();
    args[at + 1] = "16,128";
    let (code, _, stderr) = switchyard(&args, tmp.path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--buckets")
            && stderr.contains("bucket 128 must be between 1 and the context (64)"),
        "{stderr}"
    );
}

#[test]
fn bench_shows_the_cpu_and_the_emulated_neuron_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("llama");
    let (code, stdout, stderr) = switchyard(
        &[
            "bench",
            "--model",
            &model,
            "--devices",
            "cpu,neuron:0",
            "-p",
            "16",
            "-n",
            "8",
            "-r",
            "2",
            "--prefill-chunk",
            "8",
        ],
        tmp.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    for row in [
        "| cpu | pp16 |",
        "| cpu | tg8 |",
        "| neuron:0 (emulated) | pp16 |",
        "| neuron:0 (emulated) | tg8 |",
    ] {
        assert!(stdout.contains(row), "{row} in\n{stdout}");
    }
    assert!(
        stdout.contains("- neuron:0 (emulated): load ")
            && stdout.contains("first call ")
            && stdout.contains("prefill chunk 8, KV buckets 16, 2 executables")
            && stdout.contains("emulated: no roofline or cost"),
        "{stdout}"
    );
}

#[test]
fn batched_bench_prints_cpu_and_emulated_neuron_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("batch.svg");
    let json = dir.path().join("batch.json");
    let model = fixture("llama");
    let common = [
        "bench",
        "--model",
        &model,
        "--devices",
        "cpu,neuron:0",
        "--batch",
        "1,3",
        "-p",
        "6",
        "-n",
        "4",
        "-r",
        "2",
        "--price",
        "cpu=0.09",
    ];
    let mut args = common.to_vec();
    args.extend(["--plot", plot.to_str().unwrap()]);
    let (code, out, err) = switchyard(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    for (device, b) in [
        ("cpu", 1),
        ("cpu", 3),
        ("neuron:0 (emulated)", 1),
        ("neuron:0 (emulated)", 3),
    ] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {device} | pp6+tg4 | {b} |")))
            .unwrap_or_else(|| panic!("no row for {device} B={b} in\n{out}"));
        let cost = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        assert_eq!(cost.is_empty(), device != "cpu", "{row}");
    }
    assert!(std::fs::read_to_string(&plot)
        .unwrap()
        .contains("against batch"));
    let mut args = common.to_vec();
    args.extend(["-o", "json", "--out", json.to_str().unwrap()]);
    let (code, _, err) = switchyard(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for d in report["devices"].as_array().unwrap() {
        let batches = d["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 2, "{d}");
        for b in batches {
            let size = b["batch"].as_u64().unwrap();
            let samples = b["samples"].as_array().unwrap();
            assert_eq!(samples.len(), 3, "one warm-up and two measured runs");
            for s in samples {
                assert_eq!(s["batch"].as_u64(), Some(size));
                assert_eq!(s["ttft_s"].as_array().unwrap().len() as u64, size);
                assert_eq!(s["gen_tokens"].as_u64(), Some(4 * size), "{s}");
            }
        }
    }
}
