//! Finding the libnrt emulator built in this workspace (for tests and development).

use std::path::PathBuf;

/// File name of the emulator library.
pub const EMULATOR_FILE: &str = "libswitchyard_nrt_emulator.so";

/// The emulator library in the target directory of the running executable (a test or example
/// binary of this workspace), building it with cargo first if it is not there yet.
pub fn workspace_emulator() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the running executable: {e}"))?;
    // Tests run from target/<profile>/deps, examples from target/<profile>/examples, binaries
    // from target/<profile>.
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?
        .to_path_buf();
    if profile_dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        profile_dir.pop();
    }
    let lib = profile_dir.join(EMULATOR_FILE);
    if lib.is_file() {
        return Ok(lib);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "switchyard-nrt-emulator"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo to build the emulator: {e}"))?;
    if !status.success() || !lib.is_file() {
        return Err(format!(
            "building the emulator did not produce {}",
            lib.display()
        ));
    }
    Ok(lib)
}
