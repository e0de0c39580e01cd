//! The command line: device listing and clean errors for bad device strings.

use std::process::Command;

fn switchyard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn devices_lists_the_cpu_with_its_info() {
    let (code, stdout, stderr) = switchyard(&["devices"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("cpu: "), "{stdout}");
    assert!(stdout.contains("shapes: dynamic"), "{stdout}");
    assert!(stdout.contains("quantized weights: q4_0"), "{stdout}");
    assert!(stdout.contains("cuda:0: unavailable:"), "{stdout}");
}

#[test]
fn unknown_device_is_a_clear_error() {
    let (code, stdout, stderr) = switchyard(&["conformance", "--device", "tpu:3"]);
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("unknown device 'tpu:3'") && stderr.contains("available devices are cpu"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, _, stderr) = switchyard(&["conformance", "--device", "cuda:1"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cuda:1 is unavailable")
            && (cfg!(feature = "cuda") || stderr.contains("--features cuda")),
        "{stderr}"
    );
}

fn switchyard_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn golden(arch: &str) -> serde_json::Value {
    let p = format!(
        "{}/tests/fixtures/{arch}/golden.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn generate_streams_text_and_reports_timings() {
    let (code, stdout, stderr) = switchyard(&[
        "generate",
        "--model",
        "tests/fixtures/llama",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "20",
        "--ignore-eos",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.trim().is_empty());
    assert!(
        stderr.contains("generated 20 tokens")
            && stderr.contains("tok/s")
            && stderr.contains("[cpu, f32]"),
        "{stderr}"
    );
}

#[test]
fn generate_json_matches_the_golden() {
    let g = golden("gemma2");
    let ids: Vec<String> = g["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let (code, stdout, stderr) = switchyard(&[
        "generate",
        "--model",
        "tests/fixtures/gemma2",
        "--format",
        "json",
        "--logits",
        "--temperature",
        "0",
        "--ignore-eos",
        "--max-new-tokens",
        "20",
        "--prompt-ids",
        &ids.join(","),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(v["prompt_ids"], g["prompt_ids"]);
    assert_eq!(v["generated_ids"], g["greedy_ids"]);
    assert!(v["text"].is_string() && v["timings"]["decode_ms"].as_array().unwrap().len() == 19);
    let logits = v["last_prompt_logits"].as_array().unwrap();
    let want = g["last_prompt_logits"].as_array().unwrap();
    assert_eq!(logits.len(), want.len());
    for (a, b) in logits.iter().zip(want) {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4);
    }
}

#[test]
fn generate_rejects_bad_requests_cleanly() {
    let cases: &[(&[&str], &str)] = &[
        (&["--prompt", "Hi", "--top-p", "1.5"], "invalid --top-p"),
        (
            &["--prompt", "Hi", "--temperature", "-1"],
            "invalid --temperature",
        ),
        (&["--prompt-ids", "1,x,3"], "invalid --prompt-ids entry 'x'"),
        (
            &[
                "--prompt",
                "Hello world! The quick brown fox",
                "--max-context",
                "4",
            ],
            "the prompt has 9 tokens but the context holds 4",
        ),
        (
            &["--prompt", "Hi", "--dtype", "f8"],
            "--dtype: unknown dtype 'f8'",
        ),
        (
            &["--prompt", "Hi", "--device", "tpu"],
            "unknown device 'tpu'",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["generate", "--model", "tests/fixtures/llama"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = switchyard(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    let (code, _, stderr) = switchyard(&[
        "generate",
        "--model",
        "tests/fixtures/missing",
        "--prompt",
        "Hi",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tests/fixtures/missing") && stderr.contains("no such file"),
        "{stderr}"
    );
}

#[test]
fn generate_resolves_hub_ids_through_the_local_cache() {
    let cache = tempfile::tempdir().unwrap();
    let snap = cache
        .path()
        .join("models--tiny-org--tiny-qwen/snapshots/0123abc");
    std::fs::create_dir_all(&snap).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2");
    for f in std::fs::read_dir(&fixture).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, snap.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir_all(cache.path().join("models--tiny-org--tiny-qwen/refs")).unwrap();
    std::fs::write(
        cache.path().join("models--tiny-org--tiny-qwen/refs/main"),
        "0123abc",
    )
    .unwrap();
    let env = [
        ("HF_HUB_CACHE", cache.path()),
        ("HF_HUB_OFFLINE", std::path::Path::new("1")),
    ];
    let (code, stdout, stderr) = switchyard_env(
        &[
            "generate",
            "--model",
            "tiny-org/tiny-qwen",
            "--prompt-ids",
            "1,2,3",
            "--max-new-tokens",
            "3",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"architecture\":\"qwen2\""), "{stdout}");
    let (code, _, stderr) = switchyard_env(
        &["generate", "--model", "tiny-org/absent", "--prompt", "Hi"],
        &env,
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not in the local Hugging Face cache") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
}

#[test]
fn bench_writes_json_and_a_plot_and_refuses_unwritable_paths() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("chart.svg");
    let plot_s = plot.to_str().unwrap();
    let args = [
        "bench",
        "--model",
        "tests/fixtures/qwen2",
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "-o",
        "json",
        "--plot",
        plot_s,
    ];
    let (code, stdout, stderr) = switchyard(&args);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json on stdout");
    assert_eq!(
        v["devices"][0]["results"][0]["samples"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));

    let (code, stdout, stderr) = switchyard(&[
        "bench",
        "--model",
        "tests/fixtures/qwen2",
        "-p",
        "8",
        "-n",
        "4",
        "--plot",
        "/nonexistent-dir/x.svg",
    ]);
    assert_eq!(code, 1);
    assert!(
        stdout.is_empty() && stderr.contains("--plot") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let (code, _, stderr) = switchyard(&[
        "bench",
        "--model",
        "tests/fixtures/qwen2",
        "--price",
        "cpu=abc",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--price cpu=abc"), "{stderr}");
}

#[test]
fn devices_lists_the_emulated_neuron_core_or_says_why_not() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let (code, stdout, stderr) = switchyard_env(&["devices"], &[("SWITCHYARD_NRT_LIB", &lib)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("neuron:0 (emulated): emulated NeuronCore 0 of 2 visible"),
        "{stdout}"
    );
    assert!(stdout.contains("shapes: static (bucketed)"), "{stdout}");
    let missing = std::path::Path::new("/nonexistent/libnrt.so.1");
    let (code, stdout, _) = switchyard_env(&["devices"], &[("SWITCHYARD_NRT_LIB", missing)]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("neuron:0: unavailable: the Neuron runtime library was not found (tried: /nonexistent/libnrt.so.1")
            && stdout.contains("SWITCHYARD_NRT_LIB"),
        "{stdout}"
    );
}

#[test]
fn neuron_runtime_failures_are_explained() {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    // nrt_init failing is how a machine without Neuron devices answers.
    let (_, stdout, _) = switchyard_env(
        &["devices"],
        &[
            ("SWITCHYARD_NRT_LIB", &lib),
            (
                "SWITCHYARD_NRT_FAULTS",
                std::path::Path::new("nrt_init:1:1"),
            ),
        ],
    );
    assert!(
        stdout.contains(
            "neuron:0: unavailable: no usable Neuron device: nrt_init returned status 1 (FAILURE)"
        ),
        "{stdout}"
    );
    // A library that is not libnrt.
    let libm = std::path::Path::new("/lib/x86_64-linux-gnu/libm.so.6");
    if libm.exists() {
        let (_, stdout, _) = switchyard_env(&["devices"], &[("SWITCHYARD_NRT_LIB", libm)]);
        assert!(
            stdout.contains("is not a usable libnrt: missing nrt_init, nrt_close"),
            "{stdout}"
        );
    }
}
