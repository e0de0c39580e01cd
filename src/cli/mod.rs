//! The `switchyard` subcommands.

pub mod bench;
pub mod bench_serve;
pub mod compile;
pub mod embed;
pub mod generate;
pub mod interrupt;
pub mod options;
pub mod quantize;
pub mod serve;
pub mod tokenize;

use anyhow::{bail, Result};
use std::io::Write;
use switchyard::{AnyDevice, Device};

/// `switchyard devices`.
pub fn devices(kernel_variants: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if kernel_variants {
        for k in switchyard::candle::CpuKernels::available() {
            writeln!(out, "{k}")?;
        }
        return Ok(());
    }
    for status in AnyDevice::probe_all() {
        match status.status {
            Ok(info) => write!(out, "{info}")?,
            Err(reason) => writeln!(out, "{}: unavailable: {reason}", status.name)?,
        }
    }
    Ok(())
}

/// `switchyard conformance`.
pub fn conformance(device: &str) -> Result<()> {
    let device = AnyDevice::open(device)?;
    let report = switchyard::runtime::conformance::run_suite(&device);
    writeln!(std::io::stdout().lock(), "{report}")?;
    let failed = report.failures().len();
    if failed > 0 {
        bail!(
            "{failed} conformance case(s) failed on {}",
            device.info().display_name()
        );
    }
    Ok(())
}
