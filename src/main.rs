//! The `switchyard` command line.

// Inference allocates and frees large activation buffers every step; mimalloc reuses them instead
// of returning pages to the kernel and faulting zeroed ones back in (which cost a fifth of
// prefill time with the system allocator). Built without its huge-page advice (feature `no_thp`):
// that rounded small allocations up to resident 2 MiB pages; the packed f32 weights ask for huge
// pages themselves (switchyard-candle's cpu/huge_pages.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod loadgen;
mod serve;

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
    Devices {
        /// Print only the CPU kernel variants this CPU runs, one per line (values for
        /// SWITCHYARD_CPU_KERNELS), for scripts that test every variant.
        #[arg(long)]
        kernel_variants: bool,
    },
    /// Run the conformance suite (every op and composite graphs against the reference
    /// interpreter) on a device.
    Conformance {
        #[command(flatten)]
        device: cli::options::DeviceArg,
    },
    /// Generate text with a model.
    Generate(Box<cli::generate::GenerateArgs>),
    /// Measure tokens per second, latency, roofline efficiency and cost on each device, side by
    /// side (the default model is built in: no download).
    Bench(Box<cli::bench::BenchArgs>),
    /// Write a model as a GGUF file (f32/f16/bf16 or a llama.cpp block-quantized type).
    Quantize(cli::quantize::QuantizeArgs),
    /// Tokenize a text with a model's tokenizer (only the tokenizer is loaded).
    Tokenize(cli::tokenize::TokenizeArgs),
    /// Serve a model over the OpenAI HTTP API (completions, chat, streaming) with continuous
    /// batching, Prometheus metrics and a health check.
    Serve(Box<cli::serve::ServeArgs>),
    /// Sentence embeddings with an encoder (BERT, RoBERTa, XLM-RoBERTa), one text per input
    /// line, as jsonl, json or npy.
    Embed(Box<cli::embed::EmbedArgs>),
    /// Export the executables a Neuron engine needs as XLA HLO and compile them to NEFFs with
    /// neuronx-cc (or print the commands when it is not installed).
    Compile(Box<cli::compile::CompileArgs>),
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Bench(args) => match &args.mode {
            // The servers it starts get --threads; the load generator needs no compute threads.
            Some(cli::bench::BenchMode::Serve(_)) => None,
            None => args.threads,
        },
        Command::Serve(args) => args.threads,
        Command::Embed(args) => args.threads,
        _ => None,
    };
    if let Some(n) = threads {
        if n == 0 {
            eprintln!("error: --threads 0: at least one thread is needed");
            std::process::exit(1);
        }
        // Read by candle and rayon when their thread pools start, which has not happened yet:
        // nothing else runs at this point.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if matches!(cli.command, Command::Generate(_) | Command::Bench(_)) {
        cli::interrupt::install();
    }
    let result = match cli.command {
        Command::Devices { kernel_variants } => cli::devices(kernel_variants),
        Command::Conformance { device } => cli::conformance(&device.device),
        Command::Generate(args) => cli::generate::run(*args),
        Command::Bench(mut args) => match args.mode.take() {
            Some(cli::bench::BenchMode::Serve(s)) => cli::bench_serve::run(*s),
            None => cli::bench::run_bench(*args),
        },
        Command::Quantize(args) => cli::quantize::run(args),
        Command::Tokenize(args) => cli::tokenize::run(args),
        Command::Compile(args) => cli::compile::run(*args),
        Command::Serve(args) => cli::serve::run(*args),
        Command::Embed(args) => cli::embed::run(*args),
    };
    if let Err(e) = result {
        // A reader that went away (`switchyard ... | head`) is not an error worth a message.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    if cli::interrupt::requested() {
        // What was done is already written; say it was cut short.
        std::process::exit(cli::interrupt::EXIT_CODE);
    }
}
