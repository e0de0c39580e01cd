//! The on-disk cache of compiled executables, keyed by the graph's fingerprint, the compile
//! options and the runtime/compiler version, so a NEFF (minutes to compile) is built once.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where compiled executables are kept.
pub struct CompileCache {
    dir: Option<PathBuf>,
    warned: AtomicBool,
}

/// The cache directory: `SWITCHYARD_NEURON_CACHE`, else `<user cache dir>/switchyard/neuron`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SWITCHYARD_NEURON_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    dirs::cache_dir().map(|d| d.join("switchyard").join("neuron"))
}

/// What a compiled graph's cache entry is keyed by.
///
/// The key is the SHA-256, in lower-case hex, of this text (format version 1), one field per
/// line, each line ending in `\n`:
///
/// ```text
/// switchyard compile-cache key v1
/// graph <the graph's fingerprint>
/// options <CompileOptions::cache_encoding(), e.g. "opt-level 2">
/// target <trn1 | trn1n | trn2 | inf2 | emulator>
/// compiler <"neuronx-cc " + its --version line, "neuronx-cc unknown", or the emulator's version>
/// ```
///
/// `switchyard compile` writes NEFFs under these keys and a Neuron device looks them up the same
/// way, so ahead-of-time and run-time compiles find each other exactly when graph, options,
/// target and compiler agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey<'a> {
    /// The graph's fingerprint.
    pub fingerprint: &'a str,
    /// The compile options.
    pub options: &'a switchyard_runtime::CompileOptions,
    /// The instance family compiled for (`emulator` for emulation artifacts).
    pub target: &'a str,
    /// The compiler and its version.
    pub compiler: &'a str,
}

impl CacheKey<'_> {
    /// The text that is hashed.
    pub fn encoding(&self) -> String {
        format!(
            "switchyard compile-cache key v1\ngraph {}\noptions {}\ntarget {}\ncompiler {}\n",
            self.fingerprint,
            self.options.cache_encoding(),
            self.target,
            self.compiler
        )
    }

    /// The key: SHA-256 of [`CacheKey::encoding`], in hex.
    pub fn hex(&self) -> String {
        Sha256::digest(self.encoding().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl CompileCache {
    /// A cache in `dir` (`None`: no caching).
    pub fn new(dir: Option<PathBuf>) -> CompileCache {
        CompileCache {
            dir,
            warned: AtomicBool::new(false),
        }
    }

    /// The directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether entries can be written there (the directory is created if needed).
    pub fn writable(&self) -> bool {
        let Some(d) = &self.dir else { return false };
        std::fs::create_dir_all(d).is_ok() && tempfile::NamedTempFile::new_in(d).is_ok()
    }

    /// One line for `switchyard devices`: where the cache is and whether it can be written.
    pub fn describe(&self) -> String {
        match &self.dir {
            Some(d) if self.writable() => d.display().to_string(),
            Some(d) => format!("{} (not writable: compiling without caching)", d.display()),
            None => "none (no cache directory)".into(),
        }
    }

    fn path(&self, key: &str, ext: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.{ext}")))
    }

    /// The cached bytes of `key`, if present; `valid` decides whether to trust them (a corrupt
    /// entry is removed and reported as absent, so it is rebuilt).
    pub fn get(&self, key: &str, ext: &str, valid: impl FnOnce(&[u8]) -> bool) -> Option<Vec<u8>> {
        let p = self.path(key, ext)?;
        let bytes = std::fs::read(&p).ok()?;
        if valid(&bytes) {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&p);
            None
        }
    }

    /// Stores `bytes` under `key` atomically (never a half-written entry). A cache that cannot be
    /// written is skipped with one warning: compiling still works.
    pub fn put(&self, key: &str, ext: &str, bytes: &[u8]) {
        let Some(p) = self.path(key, ext) else { return };
        let write = || -> std::io::Result<()> {
            let dir = p.parent().expect("cache files have a directory");
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(&p).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: the Neuron compile cache {} is not writable ({e}); compiling without caching",
                    p.parent().map(|d| d.display().to_string()).unwrap_or_default()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_validates_and_rebuilds() {
        let d = tempfile::tempdir().unwrap();
        let c = CompileCache::new(Some(d.path().join("sub")));
        assert!(c.writable());
        let options = switchyard_runtime::CompileOptions::default();
        let key = |compiler| {
            CacheKey {
                fingerprint: "fp",
                options: &options,
                target: "trn1",
                compiler,
            }
            .hex()
        };
        let k = key("neuronx-cc 2.19");
        assert_ne!(
            k,
            key("neuronx-cc 2.20"),
            "the compiler's version is in the key"
        );
        assert!(c.get(&k, "bin", |_| true).is_none());
        c.put(&k, "bin", b"good");
        assert_eq!(
            c.get(&k, "bin", |b| b == b"good").as_deref(),
            Some(&b"good"[..])
        );
        // A corrupt entry is dropped.
        assert!(c.get(&k, "bin", |_| false).is_none());
        assert!(c.get(&k, "bin", |_| true).is_none());
        // An unwritable location is skipped, not an error.
        let ro = CompileCache::new(Some(PathBuf::from("/proc/no-such-dir")));
        assert!(!ro.writable());
        ro.put(&k, "bin", b"x");
    }

    #[test]
    fn the_key_is_a_documented_text_not_a_debug_dump() {
        let options = switchyard_runtime::CompileOptions::default();
        let k = CacheKey {
            fingerprint: "abc",
            options: &options,
            target: "trn2",
            compiler: "neuronx-cc 2.19.0",
        };
        assert_eq!(
            k.encoding(),
            "switchyard compile-cache key v1\ngraph abc\noptions opt-level 2\ntarget trn2\ncompiler neuronx-cc 2.19.0\n"
        );
        let hex: String = Sha256::digest(k.encoding().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(k.hex(), hex);
        assert_eq!(k.hex().len(), 64);
    }
}
