//! Ctrl-C (SIGINT) during `generate` and `bench`: the command stops after the current step,
//! flushes what it has, exits with 130, and a benchmark's report file is whole (written atomically).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The llama fixture with room for a generation far longer than any test waits for.
fn long_context_model(dir: &Path) -> PathBuf {
    let to = dir.join("llama-long");
    std::fs::create_dir_all(&to).unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let cfg = to.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["max_position_embeddings"] = 65536.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    to
}

fn sigint(child: &Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT failed");
}

/// Waits for the child to exit (at most `limit`), killing it if it does not.
fn wait(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("did not stop within {limit:?} of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_during_generate_flushes_the_text_and_exits_130() {
    let d = tempfile::tempdir().unwrap();
    let model = long_context_model(d.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["generate", "--model"])
        .arg(&model)
        .args([
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "60000",
            "--max-context",
            "60000",
            "--ignore-eos",
            "--temperature",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once text is streaming.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while seen.len() < 200 {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "generation ended before it could be interrupted");
        seen.extend_from_slice(&buf[..n]);
    }
    sigint(&child);
    let code = wait(&mut child, Duration::from_secs(30));
    stdout.read_to_end(&mut seen).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("stopped: interrupted (Ctrl-C)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        seen.ends_with(b"\n"),
        "the partial text is flushed and ended"
    );
    let generated: usize = stderr
        .split("generated ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the timing line reports the tokens generated");
    assert!(generated > 0 && generated < 60000, "{stderr}");
}

/// Starts the benchmark, sends Ctrl-C after `after`, and checks what holds however far it got:
/// exit code 130, a whole JSON report marked interrupted, no temporary file left. Returns how
/// many samples the first test's result kept (`None`: stopped before its first repetition).
fn interrupted_bench(after: Duration) -> Option<usize> {
    let d = tempfile::tempdir().unwrap();
    let model = long_context_model(d.path());
    let out = d.path().join("report.json");
    std::fs::write(&out, "previous contents").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bench", "--model"])
        .arg(&model)
        .args([
            "-p", "16", "-n", "", "-r", "100000", "--warmup", "0", "-o", "json", "--out",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    sigint(&child);
    let code = wait(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code, 130, "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).expect("a whole JSON file");
    assert_eq!(report["interrupted"], true);
    let leftovers = std::fs::read_dir(d.path())
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.starts_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary file left behind");
    let results = report["devices"][0]["results"].as_array()?;
    let samples = results.first()?["samples"].as_array().unwrap().len();
    Some(samples)
}

#[test]
fn ctrl_c_during_bench_writes_the_partial_report_whole_and_exits_130() {
    // A Ctrl-C that lands before the first repetition is measured (the model still loading on a
    // busy machine) rightly leaves no result; then the stop is tried again later, up to 30 s
    // after the start. Each try checks the exit code, the whole file and the cleanup.
    for after in [3, 10, 30] {
        if let Some(samples) = interrupted_bench(Duration::from_secs(after)) {
            assert!(samples > 0 && samples < 100000, "{samples} samples");
            return;
        }
        eprintln!("Ctrl-C after {after} s came before the first measured repetition; again later");
    }
    panic!("no repetition of pp16 was measured within 30 s of the start");
}
