//! Which of this crate's CPU kernel variants run: chosen once per device, from the CPU's
//! features, and capped on request so that one machine can run (and test) every variant its
//! CPU can execute — an AVX-512 machine also runs the AVX2 kernels an AVX2-only user gets.
//!
//! `SWITCHYARD_CPU_KERNELS=portable|avx2|avx512|avx512-vnni` caps the default CPU device;
//! [`crate::CandleDevice::cpu_with_kernels`] picks a variant explicitly.

use std::fmt;

/// A set of CPU kernels, ordered: each level includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuKernels {
    /// None of this crate's kernels: candle's own CPU code (compiled for the baseline of the
    /// target), the path every non-CPU candle device takes too.
    Portable,
    /// AVX2 + FMA + F16C: the matrix-vector, quantized-dot, matrix-product, attention and
    /// activation kernels on 256-bit vectors.
    Avx2,
    /// AVX-512 (F, BW, VL): 512-bit matrix products and matrix-vector products.
    Avx512,
    /// AVX-512 VNNI: one-instruction integer dot products for quantized weights.
    Avx512Vnni,
}

impl CpuKernels {
    /// Every variant, lowest first.
    pub const ALL: [CpuKernels; 4] = [
        CpuKernels::Portable,
        CpuKernels::Avx2,
        CpuKernels::Avx512,
        CpuKernels::Avx512Vnni,
    ];

    /// The name used in `SWITCHYARD_CPU_KERNELS`, reports and `switchyard devices`.
    pub fn label(self) -> &'static str {
        match self {
            CpuKernels::Portable => "portable",
            CpuKernels::Avx2 => "avx2",
            CpuKernels::Avx512 => "avx512",
            CpuKernels::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The variant named `s` (a [`label`](Self::label)).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == s.trim())
    }

    /// Whether this CPU can execute the variant's instructions.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            let avx512 = avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            match self {
                CpuKernels::Portable => true,
                CpuKernels::Avx2 => avx2,
                CpuKernels::Avx512 => avx512,
                CpuKernels::Avx512Vnni => avx512 && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == CpuKernels::Portable
        }
    }

    /// Every variant this CPU can execute, lowest first.
    pub fn available() -> Vec<CpuKernels> {
        Self::ALL.into_iter().filter(|k| k.runs_here()).collect()
    }

    /// The best variant this CPU can execute.
    pub fn best() -> CpuKernels {
        *Self::available().last().expect("portable always runs")
    }

    /// The variant `SWITCHYARD_CPU_KERNELS` asks for, `Ok(None)` when it is unset or `auto`, and
    /// an error naming the value when it is unknown or this CPU cannot execute it.
    pub fn from_env() -> Result<Option<CpuKernels>, String> {
        let Ok(v) = std::env::var("SWITCHYARD_CPU_KERNELS") else {
            return Ok(None);
        };
        if v.trim().is_empty() || v.trim() == "auto" {
            return Ok(None);
        }
        let names = || {
            Self::ALL
                .iter()
                .map(|k| k.label())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let k = Self::parse(&v).ok_or_else(|| {
            format!(
                "SWITCHYARD_CPU_KERNELS={v}: unknown kernel variant (expected auto, {})",
                names()
            )
        })?;
        if !k.runs_here() {
            return Err(format!(
                "SWITCHYARD_CPU_KERNELS={v}: this CPU cannot execute the {v} kernels (it runs: {})",
                Self::available()
                    .iter()
                    .map(|k| k.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Some(k))
    }

    /// The variant the default CPU device uses: `SWITCHYARD_CPU_KERNELS` when it is valid, else
    /// the best one (the facade reports an invalid value as an error before opening a device).
    pub fn default_for_this_cpu() -> CpuKernels {
        Self::from_env().ok().flatten().unwrap_or_else(Self::best)
    }
}

/// A kernel variant checked to run on this CPU: the only way a kernel learns which instructions
/// it may use, so every `unsafe` call of a `#[target_feature]` function rests on that check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(CpuKernels);

impl Isa {
    /// candle's own kernels only (runs everywhere).
    pub(crate) const PORTABLE: Isa = Isa(CpuKernels::Portable);

    /// `k`, when this CPU can execute it.
    pub(crate) fn new(k: CpuKernels) -> Option<Isa> {
        k.runs_here().then_some(Isa(k))
    }

    /// Every variant this CPU runs (for tests that cover them all).
    #[cfg(test)]
    pub(crate) fn all_here() -> Vec<Isa> {
        CpuKernels::available().into_iter().map(Isa).collect()
    }

    /// The variant.
    pub(crate) fn kernels(self) -> CpuKernels {
        self.0
    }

    /// Any of this crate's kernels at all.
    pub(crate) fn any(self) -> bool {
        self.0 > CpuKernels::Portable
    }

    /// AVX2, FMA and F16C may be used.
    pub(crate) fn avx2(self) -> bool {
        self.0 >= CpuKernels::Avx2
    }

    /// AVX-512 F/BW/VL may be used.
    pub(crate) fn avx512(self) -> bool {
        self.0 >= CpuKernels::Avx512
    }

    /// AVX-512 VNNI may be used.
    pub(crate) fn vnni(self) -> bool {
        self.0 >= CpuKernels::Avx512Vnni
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for CpuKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_levels_are_ordered() {
        for k in CpuKernels::ALL {
            assert_eq!(CpuKernels::parse(k.label()), Some(k));
        }
        let vnni = Isa(CpuKernels::Avx512Vnni);
        assert!(vnni.avx2() && vnni.avx512() && vnni.vnni());
        assert!(!Isa(CpuKernels::Avx2).avx512() && Isa(CpuKernels::Avx2).avx2());
        assert!(!Isa::PORTABLE.avx2() && !Isa::PORTABLE.any());
        for k in CpuKernels::ALL {
            assert_eq!(Isa::new(k).is_some(), k.runs_here());
        }
        assert_eq!(CpuKernels::available()[0], CpuKernels::Portable);
        assert!(CpuKernels::best().runs_here());
        assert_eq!(CpuKernels::parse("sse9"), None);
    }
}
