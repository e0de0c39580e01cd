//! Hourly prices per device, for the cost column.

use crate::runtime::DeviceKind;
use serde::Deserialize;
use std::path::Path;

/// The price table shipped with Switchyard (`src/bench/prices.toml`).
pub const SHIPPED_PRICES: &str = include_str!("prices.toml");

/// One cloud instance type and its hourly price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Instance {
    /// Instance type (`trn1.2xlarge`).
    pub name: String,
    /// On-demand price in USD per hour.
    pub usd_per_hour: f64,
    /// GPUs on the instance.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// NeuronCores on the instance.
    #[serde(default)]
    pub neuron_cores: Option<u32>,
    /// Where the price comes from.
    pub source: String,
    /// When it was current.
    pub date: String,
}

/// A table of instance prices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PriceTable {
    /// The instances.
    #[serde(rename = "instance", default)]
    pub instances: Vec<Instance>,
}

/// The price charged to one device in a run, with where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DevicePrice {
    /// USD per hour for this device.
    pub usd_per_hour: f64,
    /// How the price was set (flag, or instance with its source and date).
    pub source: String,
}

impl PriceTable {
    /// The shipped table.
    pub fn shipped() -> PriceTable {
        Self::parse(SHIPPED_PRICES, "shipped prices.toml").expect("the shipped price table parses")
    }

    /// A table from TOML text; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<PriceTable, String> {
        let t: PriceTable = toml::from_str(text).map_err(|e| format!("{what}: {e}"))?;
        for i in &t.instances {
            if !(i.usd_per_hour.is_finite() && i.usd_per_hour > 0.0) {
                return Err(format!(
                    "{what}: instance {}: usd_per_hour must be positive",
                    i.name
                ));
            }
        }
        Ok(t)
    }

    /// A table from a TOML file.
    pub fn from_file(path: &Path) -> Result<PriceTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The price of `device` (of `kind`) on `instance`: the whole instance for the CPU, one GPU's
    /// or one NeuronCore's share otherwise. `Err` explains why there is none.
    pub fn device_price(
        &self,
        instance: &str,
        device: &str,
        kind: DeviceKind,
    ) -> Result<DevicePrice, String> {
        let i = self.instance(instance).ok_or_else(|| {
            let names: Vec<&str> = self.instances.iter().map(|i| i.name.as_str()).collect();
            format!(
                "unknown instance '{instance}' (the price table has {})",
                names.join(", ")
            )
        })?;
        let share = match kind {
            DeviceKind::Cpu => Some(1),
            DeviceKind::Cuda => i.gpus,
            DeviceKind::Neuron => i.neuron_cores,
        };
        match share {
            Some(n) if n > 0 => Ok(DevicePrice {
                usd_per_hour: i.usd_per_hour / n as f64,
                source: format!(
                    "{} ${}/h{} ({}, {})",
                    i.name,
                    i.usd_per_hour,
                    if n > 1 {
                        format!(" / {n}")
                    } else {
                        String::new()
                    },
                    i.source,
                    i.date
                ),
            }),
            _ => Err(format!("instance {} has no {device}", i.name)),
        }
    }
}

/// Dollars per million tokens at `tokens_per_s` on a device costing `usd_per_hour`.
pub fn usd_per_million_tokens(usd_per_hour: f64, tokens_per_s: f64) -> f64 {
    usd_per_hour / 3600.0 / tokens_per_s * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_and_shares() {
        let t = PriceTable::shipped();
        assert!(t
            .instances
            .iter()
            .all(|i| !i.source.is_empty() && !i.date.is_empty()));
        let p = t
            .device_price("trn1.2xlarge", "neuron:0", DeviceKind::Neuron)
            .unwrap();
        assert!((p.usd_per_hour - 0.67).abs() < 1e-9);
        assert_eq!(
            t.device_price("trn1.2xlarge", "cpu", DeviceKind::Cpu)
                .unwrap()
                .usd_per_hour,
            1.34
        );
        assert!(t
            .device_price("trn1.2xlarge", "cuda:0", DeviceKind::Cuda)
            .unwrap_err()
            .contains("has no cuda:0"));
        assert!(t
            .device_price("x9.huge", "cpu", DeviceKind::Cpu)
            .unwrap_err()
            .contains("unknown instance 'x9.huge'"));
        // AWS's own formula: $1.34/h at 100 tokens/s is $3.72 per million tokens.
        assert!((usd_per_million_tokens(1.34, 100.0) - 3.7222).abs() < 1e-3);
        assert!(PriceTable::parse(
            "[[instance]]\nname='x'\nusd_per_hour=-1\nsource='s'\ndate='d'",
            "t"
        )
        .is_err());
    }
}
