//! The `switchyard` subcommands.

pub mod bench;
pub mod generate;
pub mod quantize;

use anyhow::{bail, Result};
use switchyard::{AnyDevice, Device};

/// `switchyard devices`.
pub fn devices() -> Result<()> {
    for status in AnyDevice::probe_all() {
        match status.status {
            Ok(info) => print!("{info}"),
            Err(reason) => println!("{}: unavailable: {reason}", status.name),
        }
    }
    Ok(())
}

/// `switchyard conformance`.
pub fn conformance(device: &str) -> Result<()> {
    let device = AnyDevice::open(device)?;
    let report = switchyard::runtime::conformance::run_suite(&device);
    println!("{report}");
    let failed = report.failures().len();
    if failed > 0 {
        bail!(
            "{failed} conformance case(s) failed on {}",
            device.info().display_name()
        );
    }
    Ok(())
}
