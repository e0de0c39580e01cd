//! A `switchyard serve` process for the HTTP tests, and a few requests against it.
#![allow(dead_code)] // each test binary uses its own part

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama");

pub struct Server {
    child: Child,
    pub base: String,
    stderr: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    /// Starts the binary on a free port and waits until `/health` says ready.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_env(extra, &[])
    }

    pub fn start_env(extra: &[&str], env: &[(&str, String)]) -> Server {
        Self::start_model(MODEL, extra, env)
    }

    /// A slow model (real SmolLM2-135M shape, generated weights, token-id prompts only), for
    /// tests that need a request still running a while after it starts.
    pub fn start_slow(extra: &[&str]) -> Server {
        Self::start_model("builtin:smollm2-135m", extra, &[])
    }

    pub fn start_model(model: &str, extra: &[&str], env: &[(&str, String)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args([
            "serve",
            "--model",
            model,
            "--port",
            "0",
            "--served-model-name",
            "fixture",
        ])
        .args(extra)
        .env_remove("SWITCHYARD_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address");
        let at = first.find("http://").expect("an address in the first line") + 7;
        let addr: String = first[at..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        let s = Server {
            child,
            base: format!("http://{addr}"),
            stderr: std::sync::Mutex::new(rx),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while s.get("/health").0 != 200 {
            assert!(Instant::now() < deadline, "never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        read(ureq::get(&format!("{}{path}", self.base)).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), &[])
    }

    pub fn post_raw(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = ureq::post(&format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let (status, text) = read(r.send_string(body));
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
        (status, v)
    }

    /// A streamed request: the `data:` payloads up to and including `[DONE]`.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = ureq::post(&format!("{}{path}", self.base))
            .send_string(&body.to_string())
            .expect("a streamed request is accepted");
        assert_eq!(r.content_type(), "text/event-stream");
        BufReader::new(r.into_reader())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn terminate(mut self) -> (i32, Vec<String>) {
        // `kill` sends SIGTERM, as an orchestrator stopping a replica would.
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let lines = self.stderr.lock().unwrap().try_iter().collect();
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}
