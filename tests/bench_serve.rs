//! `switchyard bench serve`: the load generator against servers it starts (cpu and emulated
//! `neuron:0`) and against a running server by URL; every request accounted for, the Neuron
//! server labelled emulated and without cost, the chart written, bad options refused.

use serde_json::Value;
use std::process::{Command, Stdio};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama");

fn bench(args: &[&str]) -> (i32, String, String) {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bench", "serve", "--model", MODEL])
        .args(args)
        .env("SWITCHYARD_NRT_LIB", lib)
        .env("SWITCHYARD_NEURON_CACHE", cache.path())
        .env_remove("SWITCHYARD_API_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_points(server: &Value, prompts: u64, output_len: u64) {
    for p in server["points"].as_array().unwrap() {
        assert_eq!(p["completed"], prompts, "{p}");
        assert_eq!(p["failed"], 0);
        let requests = p["requests"].as_array().unwrap();
        assert_eq!(requests.len() as u64, prompts);
        for r in requests {
            assert_eq!(
                r["output_tokens"], output_len,
                "ignore_eos makes lengths exact"
            );
            assert!(r["error"].is_null());
            let (ttft, e2e) = (r["ttft_s"].as_f64().unwrap(), r["e2e_s"].as_f64().unwrap());
            assert!(ttft > 0.0 && ttft <= e2e);
        }
        // Output tokens/s is the tokens over the point's duration.
        let tps = p["output_tokens_per_s"].as_f64().unwrap();
        let expect = (prompts * output_len) as f64 / p["duration_s"].as_f64().unwrap();
        assert!((tps - expect).abs() <= 1e-6 * expect, "{tps} vs {expect}");
    }
}

#[test]
fn devices_side_by_side_with_the_neuron_one_emulated_and_unpriced() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("serve.svg");
    let (code, stdout, stderr) = bench(&[
        "--devices",
        "cpu,neuron:0",
        "--concurrency",
        "1,4",
        "--input-len",
        "24",
        "--output-len",
        "6",
        "--num-prompts",
        "6",
        "--warmup",
        "1",
        "--price",
        "cpu=0.05",
        "--slo-tpot",
        "1s",
        "-o",
        "json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["label"], "cpu");
    assert_eq!(servers[0]["emulated"], false);
    assert!(
        servers[0]["points"][0]["usd_per_million_output_tokens"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(servers[1]["label"], "neuron:0 (emulated)");
    assert_eq!(servers[1]["emulated"], true);
    assert!(servers[1]["price"].is_null());
    assert!(servers[1]["points"][0]["usd_per_million_output_tokens"].is_null());
    for s in servers {
        check_points(s, 6, 6);
        let loads: Vec<&Value> = s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["load"])
            .collect();
        assert_eq!(loads[0]["concurrency"], 1);
        assert_eq!(loads[1]["concurrency"], 4);
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("neuron:0 (emulated)") && svg.contains("SLO"));
}

#[test]
fn a_running_server_by_url_with_poisson_arrivals() {
    // Any OpenAI-compatible server: here a `switchyard serve` started by hand.
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--model",
            MODEL,
            "--port",
            "0",
            "--slots",
            "4",
            "--served-model-name",
            "m",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let at = line.find("http://").unwrap();
    let url: String = line[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, stdout, stderr) = bench(&[
        "--url",
        &url,
        "--request-rate",
        "50,inf",
        "--input-len",
        "16",
        "--output-len",
        "5",
        "--num-prompts",
        "10",
        "--warmup",
        "0",
        "-o",
        "json",
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let server = &report["servers"][0];
    assert_eq!(server["label"], url.as_str());
    assert_eq!(server["points"][0]["load"]["rate"], 50.0);
    check_points(server, 10, 5);
    // At 50 requests/s the ten arrivals spread over time; at inf they all start at once.
    let starts = |i: usize| -> Vec<f64> {
        server["points"][i]["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["start_s"].as_f64().unwrap())
            .collect()
    };
    assert!(starts(0).iter().cloned().fold(0.0, f64::max) > 0.02);
    assert!(starts(1).iter().cloned().fold(0.0, f64::max) < 0.5);
}

#[test]
fn bad_options_are_refused_by_name() {
    for (args, needle) in [
        (
            vec!["--concurrency", "0", "--devices", "cpu"],
            "--concurrency 0",
        ),
        (
            vec!["--request-rate", "0", "--devices", "cpu"],
            "--request-rate 0",
        ),
        (
            vec!["--slo-ttft", "fast", "--devices", "cpu"],
            "--slo-ttft fast",
        ),
        (vec!["--concurrency", "1"], "--devices"),
        (vec!["--price", "cpu", "--devices", "cpu"], "--price cpu"),
    ] {
        let (code, _, stderr) = bench(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = bench(&["--url", "http://127.0.0.1:9", "--concurrency", "1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
}
