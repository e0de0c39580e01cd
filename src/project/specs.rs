//! The device-spec table: peak bandwidth, compute, memory and price of devices a projection can
//! target, each with its source and date, plus the efficiency assumed per device class.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The table shipped with Switchyard (`src/project/device_specs.toml`).
pub const SHIPPED_SPECS: &str = include_str!("device_specs.toml");

/// A kind of device, for efficiencies and calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// A CPU (the whole instance is one device).
    Cpu,
    /// A GPU.
    Gpu,
    /// An AWS NeuronCore or Neuron chip.
    Neuron,
}

impl DeviceClass {
    /// `cpu`, `gpu`, `neuron`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Cpu => "cpu",
            DeviceClass::Gpu => "gpu",
            DeviceClass::Neuron => "neuron",
        }
    }
}

/// The share of the peaks a device class reaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    /// Of the peak memory bandwidth, in a decode step.
    pub bandwidth: f64,
    /// Of the peak compute, in a prompt.
    pub compute: f64,
    /// Fixed time each layer adds to every step, in microseconds (kernel launches of an eager
    /// runtime, synchronisation): what a roofline does not see, and what dominates small models
    /// on large devices.
    #[serde(default)]
    pub layer_overhead_us: f64,
    /// Where the figures come from (an assumption, or a measurement in this run).
    pub source: String,
}

/// One device a projection can target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The name used on the command line (`trn2`, `h100`).
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its class.
    pub class: DeviceClass,
    /// Device memory in GiB.
    pub memory_gib: f64,
    /// Peak memory bandwidth in GB/s (1e9 bytes per second).
    pub bandwidth_gbs: f64,
    /// Peak dense BF16 (and F16) TFLOP/s.
    pub bf16_tflops: f64,
    /// Peak dense FP8 TFLOP/s, where the device has it (listed, not used: no FP8 path yet).
    #[serde(default)]
    pub fp8_tflops: Option<f64>,
    /// Peak F32 TFLOP/s.
    pub f32_tflops: f64,
    /// Where the specifications come from.
    pub spec_source: String,
    /// When they were published.
    pub spec_date: String,
    /// The cloud instance the device is rented in.
    pub instance: String,
    /// How many of this device the instance holds.
    pub per_instance: u32,
    /// The instance's hourly price in USD, when known.
    #[serde(default)]
    pub instance_usd_per_hour: Option<f64>,
    /// Where the price comes from.
    #[serde(default)]
    pub price_source: Option<String>,
    /// When it was current.
    #[serde(default)]
    pub price_date: Option<String>,
    /// Substrings of a present device's description that identify it (for calibration).
    #[serde(default)]
    pub detect: Vec<String>,
}

impl DeviceSpec {
    /// Hourly price of one device, when the table has one.
    pub fn usd_per_hour(&self) -> Option<f64> {
        self.instance_usd_per_hour
            .map(|p| p / self.per_instance.max(1) as f64)
    }

    /// Peak bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.bandwidth_gbs * 1e9
    }

    /// Device memory in bytes.
    pub fn memory_bytes(&self) -> f64 {
        self.memory_gib * (1u64 << 30) as f64
    }
}

/// The table: efficiencies per class and the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecTable {
    /// Efficiency assumed per class.
    pub efficiency: BTreeMap<DeviceClass, Efficiency>,
    /// The devices.
    #[serde(rename = "target", default)]
    pub targets: Vec<DeviceSpec>,
}

impl SpecTable {
    /// The shipped table.
    pub fn shipped() -> SpecTable {
        Self::parse(SHIPPED_SPECS, "shipped device_specs.toml")
            .expect("the shipped spec table parses")
    }

    /// A table from TOML text; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<SpecTable, String> {
        let t: SpecTable = toml::from_str(text).map_err(|e| format!("{what}: {e}"))?;
        for class in [DeviceClass::Cpu, DeviceClass::Gpu, DeviceClass::Neuron] {
            let e = t
                .efficiency
                .get(&class)
                .ok_or_else(|| format!("{what}: [efficiency.{}] is missing", class.name()))?;
            if !(e.layer_overhead_us.is_finite() && e.layer_overhead_us >= 0.0) {
                return Err(format!(
                    "{what}: efficiency.{}.layer_overhead_us = {}: expected microseconds (>= 0)",
                    class.name(),
                    e.layer_overhead_us
                ));
            }
            for (field, v) in [("bandwidth", e.bandwidth), ("compute", e.compute)] {
                if !(v > 0.0 && v <= 1.0) {
                    return Err(format!(
                        "{what}: efficiency.{}.{field} = {v}: expected a fraction in (0, 1]",
                        class.name()
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for s in &t.targets {
            if !seen.insert(s.name.as_str()) {
                return Err(format!("{what}: target {} is listed twice", s.name));
            }
            let positive = [
                ("memory_gib", s.memory_gib),
                ("bandwidth_gbs", s.bandwidth_gbs),
                ("bf16_tflops", s.bf16_tflops),
                ("f32_tflops", s.f32_tflops),
            ];
            for (field, v) in positive {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "{what}: target {}: {field} = {v}: expected a positive number",
                        s.name
                    ));
                }
            }
            if s.per_instance == 0 {
                return Err(format!(
                    "{what}: target {}: per_instance must be at least 1",
                    s.name
                ));
            }
            if let Some(p) = s.instance_usd_per_hour {
                if !(p.is_finite() && p > 0.0) {
                    return Err(format!(
                        "{what}: target {}: instance_usd_per_hour = {p}: expected a positive price",
                        s.name
                    ));
                }
            }
            if s.spec_source.trim().is_empty() || s.spec_date.trim().is_empty() {
                return Err(format!(
                    "{what}: target {}: spec_source and spec_date are required",
                    s.name
                ));
            }
        }
        Ok(t)
    }

    /// A table from a TOML file.
    pub fn from_file(path: &Path) -> Result<SpecTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The target called `name` (case-insensitive), or an error listing the known ones.
    pub fn target(&self, name: &str) -> Result<&DeviceSpec, String> {
        let want = name.trim().to_ascii_lowercase();
        self.targets
            .iter()
            .find(|t| t.name.to_ascii_lowercase() == want)
            .ok_or_else(|| {
                format!(
                    "unknown projection target '{name}' (the spec table has {})",
                    self.names().join(", ")
                )
            })
    }

    /// The target whose `detect` strings match a present device's description.
    pub fn detect(&self, description: &str) -> Option<&DeviceSpec> {
        self.targets
            .iter()
            .find(|t| t.detect.iter().any(|d| description.contains(d.as_str())))
    }

    /// Every target name, in table order.
    pub fn names(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.name.as_str()).collect()
    }

    /// The efficiency assumed for `class`.
    pub fn efficiency(&self, class: DeviceClass) -> &Efficiency {
        self.efficiency
            .get(&class)
            .expect("parse checks every class has one")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_names_every_required_target_with_sources() {
        let t = SpecTable::shipped();
        for name in [
            "trn1",
            "trn1-core",
            "trn2",
            "trn2-core",
            "inf2",
            "inf2-core",
            "h100",
            "h200",
            "l4",
            "a10g",
            "c7i.large",
            "c7a.large",
        ] {
            let s = t.target(name).unwrap();
            assert!(!s.spec_source.is_empty() && !s.spec_date.is_empty());
            assert!(s.price_source.as_deref().is_some_and(|p| !p.is_empty()));
        }
        // Per-core rows are the chip divided by its cores.
        let (chip, core) = (t.target("trn2").unwrap(), t.target("trn2-core").unwrap());
        assert!((chip.bandwidth_gbs / 8.0 - core.bandwidth_gbs).abs() < 1e-9);
        assert!((chip.memory_gib / 8.0 - core.memory_gib).abs() < 1e-9);
        // Price per device: trn1.2xlarge ($1.34) holds one chip and two cores.
        assert_eq!(t.target("trn1").unwrap().usd_per_hour(), Some(1.34));
        assert_eq!(t.target("trn1-core").unwrap().usd_per_hour(), Some(0.67));
        assert_eq!(t.target("H100").unwrap().name, "h100");
        assert_eq!(
            t.detect("NVIDIA H100 80GB HBM3, compute capability 9.0, 132 SMs")
                .map(|s| s.name.as_str()),
            Some("h100")
        );
        assert!(t.detect("Intel(R) Xeon(R) Processor").is_none());
    }

    #[test]
    fn bad_tables_are_refused_with_the_field() {
        let shipped = SHIPPED_SPECS;
        let err = SpecTable::shipped().target("x9").unwrap_err();
        assert!(err.contains("unknown projection target 'x9'") && err.contains("trn2"));
        let bad = shipped.replace("bandwidth_gbs = 820\n", "bandwidth_gbs = -1\n");
        let err = SpecTable::parse(&bad, "t.toml").unwrap_err();
        assert!(
            err.contains("t.toml: target trn1: bandwidth_gbs = -1"),
            "{err}"
        );
        let bad = shipped.replace("bandwidth = 0.75", "bandwidth = 1.5");
        let err = SpecTable::parse(&bad, "t.toml").unwrap_err();
        assert!(err.contains("efficiency.gpu.bandwidth = 1.5"), "{err}");
        let bad = shipped.replace("[efficiency.neuron]", "[efficiency.tpu]");
        assert!(SpecTable::parse(&bad, "t.toml").is_err());
        let twice = format!(
            "{shipped}\n[[target]]\nname = \"h100\"\ndescription = \"x\"\nclass = \"gpu\"\n\
             memory_gib = 1\nbandwidth_gbs = 1\nbf16_tflops = 1\nf32_tflops = 1\n\
             spec_source = \"s\"\nspec_date = \"d\"\ninstance = \"i\"\nper_instance = 1\n"
        );
        let err = SpecTable::parse(&twice, "t.toml").unwrap_err();
        assert!(err.contains("target h100 is listed twice"), "{err}");
    }
}
