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
