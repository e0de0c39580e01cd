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
        stderr.contains("cuda:1 is unavailable") && stderr.contains("--features cuda"),
        "{stderr}"
    );
}
