//! `switchyard serve` started for one device of a run, and stopped after it.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A server child process.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The device as the server names it (`neuron:0 (emulated)`).
    pub device_label: String,
}

impl ServerProcess {
    /// Starts this binary's `serve` with `args` on a free port and waits until it is ready
    /// (loading and compiling may take minutes on some devices).
    pub fn start(args: &[String], timeout: Duration) -> Result<ServerProcess> {
        let exe = std::env::current_exe().context("finding this binary to start `serve`")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting `switchyard serve`")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        let mut base = None;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if base.is_none() {
                        if let Some(at) = line.find("http://") {
                            base = Some(
                                line[at..]
                                    .chars()
                                    .take_while(|c| !c.is_whitespace())
                                    .collect::<String>(),
                            );
                        }
                    }
                    if let Some(rest) = line.strip_prefix("ready: ") {
                        let device_label = rest.split(" with ").next().unwrap_or(rest).to_string();
                        let base = base.ok_or_else(|| anyhow!("the server printed no address"))?;
                        // The rest of its output is not needed; keep the pipe drained.
                        std::thread::spawn(move || for _ in rx {});
                        return Ok(ServerProcess {
                            child,
                            base,
                            device_label,
                        });
                    }
                    lines.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    bail!(
                        "`switchyard serve {}` was not ready within {} s:\n{}",
                        args.join(" "),
                        timeout.as_secs(),
                        lines.join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    bail!(
                        "`switchyard serve {}` exited ({status}):\n{}",
                        args.join(" "),
                        lines.join("\n")
                    );
                }
            }
        }
    }

    /// SIGTERM, then waits for it to exit.
    pub fn stop(mut self) -> Result<()> {
        #[cfg(unix)]
        {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let status = self.child.wait()?;
        if !status.success() {
            bail!("`switchyard serve` exited with {status} after SIGTERM");
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
