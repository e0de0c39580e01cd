//! What the host CPU is: model, threads, vector extensions, memory.

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

pub(crate) struct CpuDescription {
    pub description: String,
    pub threads: usize,
    pub memory_total: Option<u64>,
    pub memory_free: Option<u64>,
    pub details: Vec<(String, String)>,
}

fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    found.push($f);
                }
            )*};
        }
        probe!(
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avx512bf16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
    }
    found
}

pub(crate) fn describe() -> CpuDescription {
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let brand = sys
        .cpus()
        .first()
        .map(|c| c.brand().trim().to_string())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let logical = sys.cpus().len();
    let threads = candle_core::utils::get_num_threads();
    let simd = simd_features();
    let total = sys.total_memory();
    let available = sys.available_memory();
    CpuDescription {
        threads,
        description: format!("{brand}, {logical} logical CPUs, {threads} compute threads"),
        memory_total: (total > 0).then_some(total),
        memory_free: (available > 0).then_some(available),
        details: vec![
            ("compute threads".into(), threads.to_string()),
            (
                "simd".into(),
                if simd.is_empty() {
                    "none detected".into()
                } else {
                    simd.join(" ")
                },
            ),
        ],
    }
}

/// Bytes of the level-2 cache of one core, as Linux reports it for CPU 0; 512 KiB (the smallest
/// common on servers with AVX2: Zen 2 and 3) where it reports none.
pub(crate) fn l2_cache_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
            .ok()
            .and_then(|s| parse_cache_size(s.trim()))
            .unwrap_or(512 << 10)
    })
}

/// `"2048K"`, `"1M"` or plain bytes, as sysfs writes a cache size.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_sizes_as_sysfs_writes_them() {
        assert_eq!(super::parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(super::parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(super::parse_cache_size("65536"), Some(65536));
        assert_eq!(super::parse_cache_size("big"), None);
        assert_eq!(super::parse_cache_size("12Q"), None);
    }
}
