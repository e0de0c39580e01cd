//! Options several commands share, defined once and flattened into each.

use anyhow::Result;
use clap::Args;
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
