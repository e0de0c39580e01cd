//! The `switchyard` command line.

// Inference allocates and frees large activation buffers every step; mimalloc reuses them instead
// of returning pages to the kernel and faulting zeroed ones back in (which cost a fifth of
// prefill time with the system allocator). Built without its huge-page advice (feature `no_thp`):
// that rounded small allocations up to resident 2 MiB pages; the packed f32 weights ask for huge
// pages themselves (switchyard-candle's cpu/huge_pages.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t` of the mimalloc 3.3 that
/// libmimalloc-sys 0.1.49 builds; the crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the pages of freed blocks for reuse rather than returning them to the kernel a second
/// after they were freed (mimalloc's default), unless `MIMALLOC_PURGE_DELAY` says otherwise.
/// The buffers of one call (an encoder's 24 MiB FFN activations, a prompt's packed operands)
/// are freed and asked for again a layer or a call later: on a Zen 3 EPYC with 2 threads, a
/// MiniLM-shape encoder on batches of 32 texts × 128 tokens took 103-112k page faults (load,
/// warm-up and 4 calls) with the default and 38k without purging, and ran at 32-42 instead of
/// 28-34 sequences/s (4 alternating runs each). The peak resident size is the same (200 MB
/// there): what a call needs at once is resident anyway, it is just not handed back between
/// uses.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one option's value; nothing else runs yet (called first in `main`, before any
    // thread is started), as the function's non-thread-safety asks.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

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
    keep_freed_pages();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option position names mimalloc's purge delay: it is the only option whose default is
    /// 1000 (ms) in the mimalloc built here, and `keep_freed_pages` turns it off.
    #[test]
    fn purge_delay_is_the_option_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("not run: MIMALLOC_PURGE_DELAY is set in the environment");
            return;
        }
        // SAFETY: reads one option; no other test touches mimalloc's options.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
        );
        keep_freed_pages();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            -1
        );
    }
}
