//! `switchyard compile`: the HLO modules a Neuron engine needs, and the neuronx-cc commands (or
//! their results when a compiler is installed; a stand-in script plays neuronx-cc here).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn fixture(arch: &str) -> String {
    format!("{}/tests/fixtures/{arch}", env!("CARGO_MANIFEST_DIR"))
}

fn switchyard(args: &[&str], neuronx_cc: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args).env("PATH", "/usr/bin:/bin");
    match neuronx_cc {
        Some(p) => cmd.env("NEURONX_CC", p),
        None => cmd.env_remove("NEURONX_CC"),
    };
    let out = cmd.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn compile_writes_hlo_per_entry_and_bucket_and_prints_the_commands() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("hlo");
    let cache = d.path().join("cache");
    let (code, stdout, stderr) = switchyard(
        &[
            "compile",
            "--model",
            &fixture("llama"),
            "--target",
            "trn1",
            "--max-context",
            "64",
            "--prefill-chunk",
            "16",
            "--buckets",
            "32",
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    for stem in ["prefill-kv32", "decode-kv32", "prefill-kv64", "decode-kv64"] {
        let pb = std::fs::read(out.join(format!("{stem}.hlo.pb"))).unwrap();
        assert!(pb.len() > 1000, "{stem}");
        let text = std::fs::read_to_string(out.join(format!("{stem}.hlo.txt"))).unwrap();
        assert!(text.contains("ENTRY %main"), "{stem}");
        assert!(
            text.contains("aliases parameter"),
            "{stem}: the KV cache is aliased"
        );
    }
    let commands: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("neuronx-cc compile"))
        .collect();
    assert_eq!(commands.len(), 4, "{stdout}");
    assert!(commands
        .iter()
        .all(|c| c
            .contains("--framework XLA --target trn1 --model-type transformer --auto-cast none")));
    assert_eq!(
        commands.iter().filter(|c| c.contains(" -O1 ")).count(),
        2,
        "prefill at -O1"
    );
    assert_eq!(
        commands.iter().filter(|c| c.contains(" -O2 ")).count(),
        2,
        "decode at -O2"
    );
    assert!(
        commands
            .iter()
            .all(|c| c.contains(&cache.display().to_string())),
        "NEFFs go to the cache"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let exes = manifest["executables"].as_array().unwrap();
    assert_eq!(exes.len(), 4);
    assert_eq!(exes[1]["inputs"][0]["name"], "input0");
    assert_eq!(
        exes[1]["aliases"].as_array().unwrap().len(),
        4,
        "2 layers x k/v"
    );
    let script = std::fs::read_to_string(out.join("compile.sh")).unwrap();
    assert_eq!(
        script
            .lines()
            .filter(|l| l.starts_with("neuronx-cc"))
            .count(),
        4
    );
    assert!(
        std::fs::metadata(out.join("compile.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
}

#[test]
fn compile_runs_neuronx_cc_into_the_cache_and_reports_its_failures() {
    let d = tempfile::tempdir().unwrap();
    let ok = d.path().join("cc-ok");
    std::fs::write(
        &ok,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --output ]; then echo NEFF > \"$2\"; fi; shift; done\n",
    )
    .unwrap();
    let bad = d.path().join("cc-bad");
    std::fs::write(
        &bad,
        "#!/bin/sh\necho 'Internal compiler error' >&2\nexit 70\n",
    )
    .unwrap();
    for p in [&ok, &bad] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cache = d.path().join("cache");
    let args = |out: &str| {
        vec![
            "compile".to_string(),
            "--model".into(),
            fixture("qwen2"),
            "--target".into(),
            "trn2".into(),
            "--max-context".into(),
            "32".into(),
            "--prefill-chunk".into(),
            "8".into(),
            "--out".into(),
            d.path().join(out).display().to_string(),
            "--cache".into(),
            cache.display().to_string(),
        ]
    };
    let a = args("ok");
    let (code, _, stderr) =
        switchyard(&a.iter().map(String::as_str).collect::<Vec<_>>(), Some(&ok));
    assert_eq!(code, 0, "{stderr}");
    let neffs: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "neff"))
        .collect();
    assert_eq!(
        neffs.len(),
        2,
        "one bucket (the context): prefill and decode"
    );

    let cache_before = std::fs::read_dir(&cache).unwrap().count();
    std::fs::remove_dir_all(&cache).unwrap();
    let a = args("bad");
    let (code, _, stderr) = switchyard(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&bad),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("2 of 2 compilations failed"), "{stderr}");
    assert!(
        stderr.contains(".log") && stderr.contains("--lnc 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    assert!(
        left.is_empty(),
        "no NEFF or scratch left: {left:?} (had {cache_before})"
    );
}

#[test]
fn compile_rejects_bad_targets_and_quantized_models_before_writing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("never");
    let (code, _, stderr) = switchyard(
        &[
            "compile",
            "--model",
            &fixture("llama"),
            "--target",
            "trn9",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--target") && stderr.contains("trn1, trn1n, trn2, inf2"),
        "{stderr}"
    );
    let (code, _, stderr) = switchyard(
        &[
            "compile",
            "--model",
            &fixture("llama"),
            "--target",
            "trn1",
            "--dtype",
            "q8_0",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("--dtype q8_0"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}
