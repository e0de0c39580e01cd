//! `switchyard quantize`: write a model as a GGUF file llama.cpp loads.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use switchyard::models::Model;
use switchyard::DType;

#[derive(Args)]
pub struct QuantizeArgs {
    /// builtin:NAME, a model directory or a hub id.
    #[arg(long)]
    model: String,
    /// Storage type: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k.
    #[arg(long)]
    to: String,
    /// Output GGUF file.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let to: DType = a.to.parse().map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let model = Model::load(&a.model)?;
    let start = std::time::Instant::now();
    switchyard::quantize::quantize_to_gguf(&model, to, &a.out)?;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MB, {to}) in {:.1} s",
        a.out.display(),
        size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
