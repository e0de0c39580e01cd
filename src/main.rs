//! The `switchyard` command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use switchyard::{AnyDevice, Device};

/// Switchyard: one model, every accelerator.
#[derive(Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the devices this build can see, with their capabilities.
    Devices,
    /// Run the conformance suite (every op and composite graphs against the reference
    /// interpreter) on a device.
    Conformance {
        /// The device: cpu, cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

fn devices() -> Result<()> {
    for status in AnyDevice::probe_all() {
        match status.status {
            Ok(info) => print!("{info}"),
            Err(reason) => println!("{}: unavailable: {reason}", status.name),
        }
    }
    Ok(())
}

fn conformance(device: &str) -> Result<()> {
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices(),
        Command::Conformance { device } => conformance(&device).context("conformance"),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
