//! `neuronx-cc`: HLO modules to NEFFs, with the flags AWS's own LLM stack uses, written into the
//! compile cache the Neuron device reads.

use crate::cache::CompileCache;
use crate::hlo::HloModule;
use std::path::{Path, PathBuf};
use std::process::Command;
use switchyard_runtime::{CompileOptions, Error, Graph, Result};

/// The instance families `neuronx-cc --target` accepts.
pub const TARGETS: [&str; 4] = ["trn1", "trn1n", "trn2", "inf2"];

/// The instance family a NEFF is compiled for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(String);

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Target, String> {
        if TARGETS.contains(&s) {
            Ok(Target(s.to_string()))
        } else {
            Err(format!(
                "unknown Neuron target '{s}': expected one of {}",
                TARGETS.join(", ")
            ))
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The cache key of the NEFF for `graph` compiled for `target` with `options`: what
/// `NeuronDevice::compile` looks up on a real runtime and `switchyard compile` writes.
pub fn neff_key(
    graph: &Graph,
    options: &CompileOptions,
    target: &Target,
    compiler: Option<&Path>,
) -> String {
    crate::cache::CacheKey {
        fingerprint: &graph.fingerprint(),
        options,
        target: &target.to_string(),
        compiler: &compiler_version(compiler),
    }
    .hex()
}

/// `neuronx-cc` and its version as it enters a cache key: the first line `compiler --version`
/// prints (asked once per path), or `neuronx-cc unknown` when no compiler is given or it does
/// not answer.
pub fn compiler_version(compiler: Option<&Path>) -> String {
    static SEEN: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let Some(path) = compiler else {
        return "neuronx-cc unknown".into();
    };
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, v)) = seen.iter().find(|(p, _)| p == path) {
        return v.clone();
    }
    let version = Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        })
        .map_or_else(
            || "neuronx-cc unknown".into(),
            |v| format!("neuronx-cc {v}"),
        );
    seen.push((path.to_path_buf(), version.clone()));
    version
}

/// `neuronx-cc` on `PATH` (or `NEURONX_CC`), if any.
pub fn find_neuronx_cc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NEURONX_CC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("neuronx-cc"))
        .find(|p| p.is_file())
}

/// One compilation: an HLO module file to a NEFF for a target.
#[derive(Debug, Clone)]
pub struct CompileJob {
    /// The serialized `HloModuleProto`.
    pub hlo: PathBuf,
    /// Where the NEFF goes.
    pub neff: PathBuf,
    /// The instance family.
    pub target: Target,
    /// True for decode graphs (`-O2`); prefill graphs get `-O1`.
    pub decode: bool,
    /// Logical NeuronCore size on trn2 (`--lnc`).
    pub lnc: Option<u32>,
}

impl CompileJob {
    /// The arguments after `neuronx-cc`, writing to `output`.
    fn args(&self, output: &Path) -> Vec<String> {
        let mut a = vec![
            "compile".to_string(),
            self.hlo.display().to_string(),
            "--framework".into(),
            "XLA".into(),
            "--target".into(),
            self.target.to_string(),
            "--model-type".into(),
            "transformer".into(),
            "--auto-cast".into(),
            "none".into(),
            if self.decode { "-O2" } else { "-O1" }.into(),
        ];
        if self.target.0 == "trn2" {
            a.push("--lnc".into());
            a.push(self.lnc.unwrap_or(2).to_string());
        }
        a.push("--output".into());
        a.push(output.display().to_string());
        a
    }

    /// The command line to run by hand (on a machine with the Neuron SDK).
    pub fn command_line(&self) -> String {
        std::iter::once("neuronx-cc".to_string())
            .chain(self.args(&self.neff))
            .map(|a| {
                if a.contains([' ', '\'', '"']) {
                    format!("'{}'", a.replace('\'', "'\\''"))
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs `compiler` in a scratch directory next to the NEFF, its output going to `NEFF.log`,
    /// and moves the NEFF into place only when it succeeded (never a half-written NEFF).
    pub fn run(&self, compiler: &Path) -> Result<()> {
        let fail = |message: String| Error::Backend {
            device: format!("neuronx-cc ({})", self.target),
            message,
        };
        let dir = self
            .neff
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let work = tempfile::Builder::new()
            .prefix(".neuronx-cc-")
            .tempdir_in(dir)
            .map_err(|e| {
                fail(format!(
                    "cannot create a work directory in {}: {e}",
                    dir.display()
                ))
            })?;
        let out = work.path().join("out.neff");
        let log_path = self.neff.with_extension("log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| fail(format!("cannot write {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| fail(format!("cannot write {}: {e}", log_path.display())))?;
        let status = Command::new(compiler)
            .args(self.args(&out))
            .current_dir(work.path())
            .stdout(log)
            .stderr(log_err)
            .status()
            .map_err(|e| {
                fail(format!(
                    "cannot run {}: {e} (command: {})",
                    compiler.display(),
                    self.command_line()
                ))
            })?;
        if !status.success() || !out.is_file() {
            return Err(fail(format!(
                "{} (see {}); command: {}",
                if status.success() {
                    "exited 0 but wrote no NEFF".to_string()
                } else {
                    format!("failed with {status}")
                },
                log_path.display(),
                self.command_line()
            )));
        }
        std::fs::rename(&out, &self.neff).map_err(|e| {
            fail(format!(
                "cannot move the NEFF to {}: {e}",
                self.neff.display()
            ))
        })?;
        Ok(())
    }
}

/// Lowers `graph`, compiles it with `compiler` for `target` and stores the NEFF in `cache` under
/// [`neff_key`]; returns the NEFF's bytes. The HLO module is kept next to it for inspection.
pub fn compile_into_cache(
    graph: &Graph,
    options: &CompileOptions,
    target: &Target,
    cache: &CompileCache,
    compiler: &Path,
) -> Result<Vec<u8>> {
    let module: HloModule = crate::hlo::lower(graph)?;
    let key = neff_key(graph, options, target, Some(compiler));
    let dir = cache
        .dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let hlo = dir.join(format!("{key}.hlo.pb"));
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&hlo, module.to_bytes()))
        .map_err(|e| Error::Backend {
            device: "neuronx-cc".into(),
            message: format!("cannot write {}: {e}", hlo.display()),
        })?;
    let job = CompileJob {
        hlo,
        neff: dir.join(format!("{key}.neff")),
        target: target.clone(),
        decode: is_decode(graph),
        lnc: None,
    };
    job.run(compiler)?;
    std::fs::read(&job.neff).map_err(|e| Error::Backend {
        device: "neuronx-cc".into(),
        message: format!("cannot read {}: {e}", job.neff.display()),
    })
}

/// Decode graphs are named `<arch>.decode` by the model graph builder.
pub fn is_decode(graph: &Graph) -> bool {
    graph.name().ends_with(".decode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use switchyard_runtime::{DType, GraphBuilder, Shape, TensorSpec};

    /// A stand-in `neuronx-cc`: logs its arguments, then writes `--output` or fails.
    fn fake_compiler(dir: &Path, succeed: bool) -> PathBuf {
        let p = dir.join(if succeed { "cc-ok" } else { "cc-fail" });
        let body = if succeed {
            "echo \"$@\"\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --output ]; then echo NEFF > \"$2\"; fi; shift; done\n"
        } else {
            "echo \"$@\"\necho 'ERROR: unsupported op' >&2\nexit 3\n"
        };
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn graph(name: &str) -> Graph {
        let mut b = GraphBuilder::new(name);
        let x = b
            .input("x", TensorSpec::new(DType::F32, Shape::fixed(&[2, 2])))
            .unwrap();
        let y = b.add(x, x).unwrap();
        b.output("y", y).unwrap();
        b.finish().unwrap()
    }

    #[test]
    fn flags_follow_the_entry_and_target() {
        let job = CompileJob {
            hlo: "m.pb".into(),
            neff: "out/m.neff".into(),
            target: "trn2".parse().unwrap(),
            decode: true,
            lnc: None,
        };
        assert_eq!(
            job.command_line(),
            "neuronx-cc compile m.pb --framework XLA --target trn2 --model-type transformer --auto-cast none -O2 --lnc 2 --output out/m.neff"
        );
        let prefill = CompileJob {
            target: "inf2".parse().unwrap(),
            decode: false,
            ..job
        };
        assert!(prefill
            .command_line()
            .contains("--target inf2 --model-type transformer --auto-cast none -O1 --output"));
        assert!(!prefill.command_line().contains("--lnc"));
        assert!("trn3"
            .parse::<Target>()
            .unwrap_err()
            .contains("trn1, trn1n, trn2, inf2"));
        assert!(is_decode(&graph("llama.decode")) && !is_decode(&graph("llama.prefill")));
    }

    #[test]
    fn a_failing_compiler_leaves_no_neff_and_names_its_log() {
        let d = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(d.path().join("cache")));
        let g = graph("llama.decode");
        let target: Target = "trn1".parse().unwrap();
        let e = compile_into_cache(
            &g,
            &Default::default(),
            &target,
            &cache,
            &fake_compiler(d.path(), false),
        )
        .unwrap_err()
        .to_string();
        let key = neff_key(
            &g,
            &Default::default(),
            &target,
            Some(&fake_compiler(d.path(), false)),
        );
        let log = d.path().join("cache").join(format!("{key}.log"));
        assert!(e.contains(&log.display().to_string()), "{e}");
        assert!(e.contains("neuronx-cc compile") && e.contains("-O2"), "{e}");
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("unsupported op"));
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("cache"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".neff") || n.starts_with(".neuronx-cc-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(cache.get(&key, "neff", |_| true).is_none());

        let neff = compile_into_cache(
            &g,
            &Default::default(),
            &target,
            &cache,
            &fake_compiler(d.path(), true),
        )
        .unwrap();
        assert_eq!(neff, b"NEFF\n");
        // Another compiler (its `--version` answers differently) makes another key.
        let key = neff_key(
            &g,
            &Default::default(),
            &target,
            Some(&fake_compiler(d.path(), true)),
        );
        assert_eq!(cache.get(&key, "neff", |_| true).unwrap(), b"NEFF\n");
        let log =
            std::fs::read_to_string(d.path().join("cache").join(format!("{key}.log"))).unwrap();
        assert!(log.contains("--framework XLA --target trn1"), "{log}");
    }
}
