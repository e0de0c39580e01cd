//! `switchyard embed` as a user runs it: texts on standard input or in a file, jsonl, json and
//! npy out, the vectors sentence-transformers gives (tests/fixtures/bert/golden.json, max abs
//! error ≤ 1e-4 as tests/embeddings.rs derives it), and a refused input failing the run without
//! leaving a partial file.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

const BERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bert");

fn golden() -> Value {
    serde_json::from_slice(&std::fs::read(format!("{BERT}/golden.json")).unwrap()).unwrap()
}

fn embed(args: &[&str], stdin: &str) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["embed", "--model", BERT])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A run that refuses its options exits before reading standard input; the pipe it closed
    // is then no failure of the test, which judges the run by its exit code and messages.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_golden(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err <= 1e-4, "line {}: max abs error {err:e}", i + 1);
    }
}

#[test]
fn embeds_lines_as_jsonl_json_and_npy() {
    let g = golden();
    let texts: Vec<&str> = g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want: Vec<Vec<f32>> = serde_json::from_value(g["embeddings"].clone()).unwrap();
    let input = texts.join("\n") + "\n";

    let (code, out, err) = embed(&["--batch-size", "4"], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["tokens"], g["ids"][i].as_array().unwrap().len());
    }
    let got: Vec<Vec<f32>> = lines
        .iter()
        .map(|l| serde_json::from_value(l["embedding"].clone()).unwrap())
        .collect();
    assert_golden(&got, &want);

    let (code, out, err) = embed(&["-o", "json"], &input);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_slice(&out).unwrap();
    let got: Vec<Vec<f32>> = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert_golden(&got, &want);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("texts.txt");
    std::fs::write(&file, &input).unwrap();
    let npy = dir.path().join("out.npy");
    let (code, _, err) = embed(
        &[
            "--input",
            file.to_str().unwrap(),
            "-o",
            "npy",
            "--output",
            npy.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&npy).unwrap();
    let array = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(array.shape(), &[texts.len() as u64, 32]);
    let flat: Vec<f32> = array.into_vec().unwrap();
    let got: Vec<Vec<f32>> = flat.chunks(32).map(<[f32]>::to_vec).collect();
    assert_golden(&got, &want);
}

#[test]
fn a_refused_input_fails_the_run_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let long = "word ".repeat(100);
    let (code, _, err) = embed(
        &["--no-truncate", "--output", out.to_str().unwrap()],
        &format!("fine\n{long}\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("line 2") && err.contains("limit of 24"),
        "{err}"
    );
    assert!(!out.exists());
    // Bad options name themselves.
    let (code, _, err) = embed(&["--pooling", "median"], "x\n");
    assert_eq!(code, 1);
    assert!(err.contains("--pooling median"), "{err}");
    let (code, _, err) = embed(&[], "");
    assert_eq!(code, 1);
    assert!(err.contains("no lines"), "{err}");
}
