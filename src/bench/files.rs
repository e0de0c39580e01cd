//! Output files: checked before a long run, written atomically after it.

use std::path::Path;

/// Checks up front that `path` can be written (so a long run does not end in a failed write).
pub fn check_writable(path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "{}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    let probe = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("{}: cannot write in {}: {e}", path.display(), dir.display()))?;
    drop(probe);
    Ok(())
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, renamed over
/// the target, so readers never see half a file.
pub fn write_atomically(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", path.display()))?;
    tmp.write_all(contents.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Temporary files are created private; the result is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    Ok(())
}
