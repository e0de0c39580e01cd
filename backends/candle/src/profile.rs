//! Opt-in per-op timings (`SWITCHYARD_PROFILE=1`): where a graph's time goes, by op kind; and a
//! count of the values ops had to read back from the device mid-graph and of the fused chains
//! run (always on).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

fn enabled_flag() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SWITCHYARD_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

static HOST_READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Integer tensors ops have read back from the device to the host mid-graph (ids to check,
/// offsets to write at) since the process started. Inputs from the host carry their values, so
/// an engine's steps add none; on a GPU each read would stall the stream.
pub fn host_reads() -> u64 {
    HOST_READS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count_host_read() {
    HOST_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

static FUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Chains of graph nodes run as one fused CPU kernel (a product with its epilogue, an attention
/// of activations) since the process started: how a test sees that the fused kernels ran.
pub fn fused_chains() -> u64 {
    FUSED.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count_fused_chain() {
    FUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

static TOTALS: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

/// True when per-op timing is switched on.
pub fn enabled() -> bool {
    enabled_flag()
}

/// Adds one execution of `op` taking `d`.
pub(crate) fn record(op: &'static str, d: Duration) {
    if let Ok(mut t) = TOTALS.lock() {
        let e = t.entry(op).or_default();
        e.0 += 1;
        e.1 += d;
    }
}

/// Per op kind: executions and total time, largest total first; empty unless enabled.
pub fn totals() -> Vec<(&'static str, u64, Duration)> {
    let mut v: Vec<_> = TOTALS
        .lock()
        .map(|t| t.iter().map(|(k, (n, d))| (*k, *n, *d)).collect())
        .unwrap_or_default();
    v.sort_by_key(|x| std::cmp::Reverse(x.2));
    v
}

/// A printable table of [`totals`].
pub fn report() -> String {
    let t = totals();
    let all: f64 = t.iter().map(|x| x.2.as_secs_f64()).sum();
    let mut s = format!(
        "{:<14} {:>9} {:>11} {:>7}\n",
        "op", "calls", "total ms", "share"
    );
    for (op, n, d) in t {
        s += &format!(
            "{:<14} {:>9} {:>11.1} {:>6.1}%\n",
            op,
            n,
            d.as_secs_f64() * 1e3,
            100.0 * d.as_secs_f64() / all.max(1e-12)
        );
    }
    s
}
