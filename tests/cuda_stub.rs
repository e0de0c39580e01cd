//! A `cuda` build on a machine without an NVIDIA driver: with the link-time libcuda stub that
//! `scripts/cuda-toolchain.sh` makes on `LD_LIBRARY_PATH` (as `.ci/run` does), `cuda:0` is
//! unavailable with the reason, and every command says so cleanly: no crash, no panic.
//!
//! ```sh
//! eval "$(scripts/cuda-toolchain.sh)"
//! LD_LIBRARY_PATH=$CUDA_ROOT/lib/stubs:$CUDA_ROOT/lib SWITCHYARD_EXPECT_CUDA_STUB=1 \
//!     cargo test --release --features cuda --test cuda_stub
//! ```
#![cfg(feature = "cuda")]

use std::process::Command;
use switchyard::{AnyDevice, Error};

/// Whether this run is the stub run (a real GPU machine skips these checks).
fn stub_run() -> bool {
    std::env::var("SWITCHYARD_EXPECT_CUDA_STUB").is_ok_and(|v| v == "1")
}

fn switchyard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("the binary starts");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const STUB_REASON: &str = "the libcuda found is the link-time stub, not a driver: this machine has no NVIDIA driver (cuInit returned CUDA_ERROR_STUB_LIBRARY)";

#[test]
fn cuda_device_is_unavailable_with_the_stub_reason() {
    match AnyDevice::open("cuda:0") {
        Ok(d) => {
            // A machine with a GPU: the device opens and says what it is.
            assert!(!stub_run(), "the stub opened a device: {:?}", d);
            let info = switchyard::Device::info(&d);
            assert_eq!(info.kind, switchyard::runtime::DeviceKind::Cuda);
            assert!(info.memory_total.is_some_and(|m| m > 0), "{info}");
        }
        Err(Error::DeviceUnavailable { device, reason }) => {
            assert_eq!(device, "cuda:0");
            if stub_run() {
                assert_eq!(reason, STUB_REASON);
            }
        }
        Err(other) => panic!("expected DeviceUnavailable, got {other}"),
    }
}

#[test]
#[ignore = "needs the libcuda stub: SWITCHYARD_EXPECT_CUDA_STUB=1 with it on LD_LIBRARY_PATH, -- --ignored"]
fn every_command_reports_the_missing_gpu_cleanly() {
    assert!(
        stub_run(),
        "set SWITCHYARD_EXPECT_CUDA_STUB=1 with the stub on LD_LIBRARY_PATH"
    );
    let (code, stdout, stderr) = switchyard(&["devices"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("cuda:0: unavailable: {STUB_REASON}")),
        "{stdout}"
    );
    assert!(
        stdout.starts_with("cpu: "),
        "the CPU is still listed: {stdout}"
    );

    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama");
    let (code, stdout, stderr) = switchyard(&[
        "generate",
        "--device",
        "cuda:0",
        "--model",
        model,
        "--prompt-ids",
        "1,2,3",
    ]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("cuda:0 is unavailable") && stderr.contains("CUDA_ERROR_STUB_LIBRARY"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (code, _, stderr) = switchyard(&["conformance", "--device", "cuda:0"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("CUDA_ERROR_STUB_LIBRARY") && !stderr.contains("panicked"),
        "{stderr}"
    );

    // The benchmark goes on with the devices it has and says why cuda:0 has no row.
    let (code, stdout, stderr) = switchyard(&[
        "bench",
        "--model",
        model,
        "--devices",
        "cpu,cuda:0",
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("| cpu | pp8 |"), "{stdout}");
    assert!(
        stdout.contains("| cuda:0 | skipped: the libcuda found is the link-time stub"),
        "{stdout}"
    );
}
