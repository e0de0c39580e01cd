//! The `switchyard` command line.

mod cli;

use clap::{Parser, Subcommand};

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
    /// Generate text with a model.
    Generate(Box<cli::generate::GenerateArgs>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => cli::devices(),
        Command::Conformance { device } => cli::conformance(&device),
        Command::Generate(args) => cli::generate::run(*args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
