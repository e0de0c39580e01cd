//! Resolving `--model`: a local directory, or a Hugging Face hub id (`org/name`) found in the local
//! hub cache (the `HF_HOME` layout) or, when online, downloaded into it.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// Where the hub cache lives: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    dirs::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// True when `HF_HUB_OFFLINE` asks for no network access.
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
}

fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The snapshot directory of `id` in the cache at `cache`, if a complete one is there: the
/// revision `refs/main` points to, or the only snapshot when there is no ref.
pub fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let by_ref = std::fs::read_to_string(repo.join("refs").join("main"))
        .ok()
        .map(|r| snapshots.join(r.trim()));
    let dir = match by_ref {
        Some(d) => d,
        None => {
            let mut all: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            if all.len() != 1 {
                return None;
            }
            all.pop()?
        }
    };
    dir.join("config.json").is_file().then_some(dir)
}

/// Resolves a `--model` argument to a directory (or file) on disk, using the cache location and
/// offline setting from the environment.
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    resolve_model_with(arg, hub_cache_dir().as_deref(), offline())
}

/// [`resolve_model`] with an explicit hub cache directory and offline flag.
pub fn resolve_model_with(arg: &str, cache: Option<&Path>, offline: bool) -> Result<PathBuf> {
    let path = Path::new(arg);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if !looks_like_hub_id(arg) {
        return Err(ModelError::Resolve {
            model: arg.to_string(),
            message: "no such file or directory (and not a Hugging Face hub id like org/name)"
                .into(),
        });
    }
    if let Some(dir) = cache.and_then(|c| cached_snapshot(c, arg)) {
        return Ok(dir);
    }
    let where_ = cache
        .map(|c| c.display().to_string())
        .unwrap_or_else(|| "(no home directory)".into());
    if offline {
        return Err(ModelError::Resolve {
            model: arg.to_string(),
            message: format!(
                "not in the local Hugging Face cache ({where_}) and HF_HUB_OFFLINE is set"
            ),
        });
    }
    download(arg, &where_)
}

#[cfg(feature = "hub-download")]
fn download(id: &str, cache: &str) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let fail = |what: &str, e: &dyn std::fmt::Display| ModelError::Resolve {
        model: id.to_string(),
        message: format!(
            "not in the local Hugging Face cache ({cache}) and downloading {what} failed: {e}"
        ),
    };
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| fail("(client)", &e))?;
    let repo = api.model(id.to_string());
    let config = repo
        .get("config.json")
        .map_err(|e| fail("config.json", &e))?;
    for optional in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let _ = repo.get(optional);
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let json = crate::error::read_json(&index)?;
            let mut shards: Vec<String> = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for shard in shards {
                repo.get(&shard).map_err(|e| fail(&shard, &e))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors")
                .map_err(|e| fail("model.safetensors", &e))?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(not(feature = "hub-download"))]
fn download(id: &str, cache: &str) -> Result<PathBuf> {
    Err(ModelError::Resolve {
        model: id.to_string(),
        message: format!(
            "not in the local Hugging Face cache ({cache}), and this build cannot download (built without the `hub-download` feature)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lay_out(cache: &Path, id: &str, rev: &str, with_ref: bool) -> PathBuf {
        let repo = cache.join(format!("models--{}", id.replace('/', "--")));
        let snap = repo.join("snapshots").join(rev);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        if with_ref {
            std::fs::create_dir_all(repo.join("refs")).unwrap();
            std::fs::write(repo.join("refs").join("main"), format!("{rev}\n")).unwrap();
        }
        snap
    }

    #[test]
    fn resolves_through_the_cache_and_explains_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let snap = lay_out(cache, "org/model", "abc123", true);
        // A second, older snapshot: refs/main decides.
        lay_out(cache, "org/model", "old999", false);
        assert_eq!(
            resolve_model_with("org/model", Some(cache), true).unwrap(),
            snap
        );
        // Without a ref, a single snapshot is used.
        let only = lay_out(cache, "org/other", "fff000", false);
        assert_eq!(
            resolve_model_with("org/other", Some(cache), true).unwrap(),
            only
        );
        // Offline and not cached: a clear error naming the cache.
        let err = resolve_model_with("org/missing", Some(cache), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("org/missing")
                && err.contains("HF_HUB_OFFLINE")
                && err.contains(&cache.display().to_string()),
            "{err}"
        );
        // Neither a path nor an id.
        let err = resolve_model_with("./nope/x/y", Some(cache), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file or directory"), "{err}");
    }

    #[test]
    fn hub_ids() {
        assert!(looks_like_hub_id("HuggingFaceTB/SmolLM2-135M"));
        assert!(!looks_like_hub_id("../x"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("./model"));
    }
}
