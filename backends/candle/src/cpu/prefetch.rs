//! How far ahead the f32 matrix-vector kernels ([`super::gemv`]) prefetch a panel's weights.
//!
//! Whether a software prefetch helps depends on the CPU's own prefetchers. Measured, f32
//! SmolLM2-135M decode on 2 threads, variants alternating in one run: on a Sapphire Rapids-class
//! Xeon, 1024 bytes ahead gave 54.7-58.0 t/s (512-bit kernel) against 49.6-51.4 without, and
//! 53.3-53.9 against 49.9-51.3 (256-bit kernel); on a Zen 3 EPYC (256-bit kernel, batch of one),
//! without gave 60.8-66.5 t/s against 50.1-52.9 at 1024 bytes (512: 51.2-55.0, 2048: 51.1-55.1,
//! both lines of each depth: 52.2-55.2). So AMD CPUs get none by default and others 1024 bytes;
//! `SWITCHYARD_CPU_PREFETCH=auto|off|BYTES` overrides it, so each setting can be measured and
//! tested anywhere.

use std::sync::OnceLock;

/// The environment variable that overrides the default.
pub const VAR: &str = "SWITCHYARD_CPU_PREFETCH";

/// The distance on CPUs whose hardware prefetcher leaves room for a software one.
const DEFAULT_AHEAD: usize = 1024;

/// The distance `SWITCHYARD_CPU_PREFETCH` asks for (`Ok(None)`: unset or `auto`), or an error
/// naming the value.
pub fn from_env() -> Result<Option<usize>, String> {
    let Ok(v) = std::env::var(VAR) else {
        return Ok(None);
    };
    match v.trim() {
        "" | "auto" => Ok(None),
        "off" => Ok(Some(0)),
        n => match n.parse::<usize>() {
            Ok(b) if b <= 1 << 16 => Ok(Some(b)),
            _ => Err(format!(
                "{VAR}={v:?}: expected auto, off or a distance in bytes up to 65536"
            )),
        },
    }
}

/// The default distance for a CPU of `vendor` (its CPUID vendor string).
pub fn default_for(vendor: &str) -> usize {
    if vendor.trim() == "AuthenticAMD" {
        0
    } else {
        DEFAULT_AHEAD
    }
}

/// The distance the kernels use in this process: a valid `SWITCHYARD_CPU_PREFETCH`, else the
/// default for this CPU's vendor (an invalid value is reported when the CPU device opens).
pub fn gemv_ahead() -> usize {
    static AHEAD: OnceLock<usize> = OnceLock::new();
    *AHEAD.get_or_init(|| {
        from_env()
            .ok()
            .flatten()
            .unwrap_or_else(|| default_for(&vendor()))
    })
}

/// This CPU's vendor string, e.g. `GenuineIntel` or `AuthenticAMD` (empty when unknown).
fn vendor() -> String {
    use sysinfo::{CpuRefreshKind, RefreshKind, System};
    let sys =
        System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()));
    sys.cpus()
        .first()
        .map(|c| c.vendor_id().to_string())
        .unwrap_or_default()
}

/// How the setting reads in `switchyard devices`.
pub fn describe() -> String {
    match gemv_ahead() {
        0 => format!("off ({VAR})"),
        b => format!("{b} bytes ahead ({VAR})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amd_gets_none_by_default_and_others_a_kilobyte() {
        assert_eq!(default_for("AuthenticAMD"), 0);
        assert_eq!(default_for("GenuineIntel"), 1024);
        assert_eq!(default_for(""), 1024);
    }
}
