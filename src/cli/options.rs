//! Options several commands share, defined once and flattened into each.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use switchyard::bench::{write_atomically, PriceTable};
use switchyard::DType;

/// How a model is placed on a device: `generate`, `bench` and `compile` take these.
#[derive(Args, Clone, Debug, Default)]
pub struct EngineArgs {
    /// Compute dtype: f32, f16 or bf16 (default: f32 on the CPU, the checkpoint's elsewhere).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Quantize the model's matrices on load: q8_0, q4_k, q6_k, q4_0, ... (norms stay as they are).
    #[arg(long)]
    pub quantize: Option<String>,
    /// Static-shape devices (neuron): tokens per prefill call (default 128).
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// Static-shape devices (neuron): attended KV lengths to compile, comma-separated
    /// (default 512, 2048, ... up to the context, which is always added).
    #[arg(long, value_delimiter = ',')]
    pub buckets: Option<Vec<usize>>,
}

impl EngineArgs {
    /// `--dtype`, parsed.
    pub fn dtype(&self) -> Result<Option<DType>> {
        parse("--dtype", self.dtype.as_deref())
    }

    /// `--quantize`, parsed.
    pub fn quantize(&self) -> Result<Option<DType>> {
        parse("--quantize", self.quantize.as_deref())
    }
}

/// The one device a command runs on.
#[derive(Args, Clone, Debug)]
pub struct DeviceArg {
    /// The device: cpu, cuda:N, neuron:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn parse(flag: &str, value: Option<&str>) -> Result<Option<DType>> {
    value
        .map(|d| {
            d.parse::<DType>()
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        })
        .transpose()
}

/// What a device costs: `bench` and `bench serve` take these.
#[derive(Args, Clone, Debug, Default)]
pub struct PriceArgs {
    /// Hourly price of a device, DEVICE=USD (repeatable); overrides --instance.
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// Price table to use instead of the shipped one (TOML, see src/bench/prices.toml).
    #[arg(long = "prices")]
    pub price_table: Option<PathBuf>,
    /// The instance type this runs on, for prices from the table.
    #[arg(long)]
    pub instance: Option<String>,
}

impl PriceArgs {
    /// The price table, and the `--price` overrides as (lower-case device, USD per hour).
    pub fn resolve(&self) -> Result<(PriceTable, Vec<(String, f64)>)> {
        let mut overrides = Vec::new();
        for p in &self.prices {
            let Some((dev, usd)) = p.split_once('=') else {
                bail!("--price {p}: expected DEVICE=USD_PER_HOUR, e.g. cpu=0.09");
            };
            let usd: f64 = usd
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .with_context(|| format!("--price {p}: '{usd}' is not a positive USD per hour"))?;
            overrides.push((dev.trim().to_ascii_lowercase(), usd));
        }
        let table = match &self.price_table {
            Some(path) => {
                PriceTable::from_file(path).map_err(|e| anyhow::anyhow!("--prices: {e}"))?
            }
            None => PriceTable::shipped(),
        };
        Ok((table, overrides))
    }
}

/// Writes a report to `out` atomically (an interrupted or failed run never leaves a
/// half-written file), else to stdout.
pub fn write_report(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            write_atomically(path, text).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
            eprintln!("wrote {}", path.display());
        }
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?,
    }
    Ok(())
}
