//! `switchyard bench`: the side-by-side benchmark.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use switchyard::bench::{check_writable, run, svg, write_atomically, BenchOptions, Progress};
use switchyard::project::SpecTable;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A markdown table to paste.
    Md,
    /// One row per run (every sample).
    Csv,
    /// The whole report with every sample.
    Json,
    /// One JSON object per sample.
    Jsonl,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// builtin:NAME (smollm2-135m, tinyllama-1.1b), a model directory or a hub id.
    #[arg(long, default_value = "builtin:smollm2-135m")]
    model: String,
    /// Devices to measure, comma-separated (cpu, cuda:N, neuron:N), or `all`.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    devices: Vec<String>,
    /// Prompt sizes for the prompt-processing tests (`-p ""` skips them; default 512). On an
    /// encoder: tokens per text (default 128).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',')]
    prompt: Option<Vec<String>>,
    /// Generation sizes for the generation tests (`-n ""` skips them).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    gen: Vec<String>,
    /// Batch sizes, comma-separated: run each -p × -n pair as B sequences decoding together
    /// (llama-batched-bench's semantics: B prompts of -p tokens, then -n tokens each) instead of
    /// the pp/tg tests. On an encoder: texts per call (default 1, 8, 32).
    #[arg(long = "batch", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Measured repetitions per test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Warm-up runs per test (not measured).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// CPU compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    engine: super::options::EngineArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    output: Output,
    /// Write the report (in the --output format) to this file instead of stdout, atomically.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write an SVG chart comparing the devices.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    price: super::options::PriceArgs,
    /// Seed of the random prompt tokens.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also project these devices from their specifications (roofline, labelled `projected`),
    /// comma-separated names from the spec table: trn1, trn1-core, trn2, trn2-core, inf2,
    /// inf2-core, h100, h200, l4, a10g, c7i.large, c7a.large. `--devices ""` projects without
    /// measuring.
    #[arg(long, value_delimiter = ',')]
    project: Vec<String>,
    /// Batch sizes of the projected generation tests (sequences decoding together).
    #[arg(long = "project-batch", value_delimiter = ',', default_value = "1")]
    project_batch: Vec<usize>,
    /// Apply the efficiency measured in this run on a device class (cpu, gpu, neuron) to the
    /// projections of that class, instead of the assumed one.
    #[arg(long)]
    calibrate: bool,
    /// Device-spec table to use instead of the shipped one (TOML, see src/project/device_specs.toml).
    #[arg(long)]
    specs: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum BenchMode {
    /// Serving benchmark: throughput against interactivity per device (starting `switchyard
    /// serve` on each) or of any OpenAI-compatible server (--url), with the cost of a token at
    /// each load and the cheapest point within latency objectives.
    Serve(Box<super::bench_serve::ServeBenchArgs>),
}

fn sizes(flag: &str, raw: &[String]) -> Result<Vec<usize>> {
    raw.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("{flag} '{s}': expected a token count"))
        })
        .collect()
}

pub fn run_bench(a: BenchArgs) -> Result<()> {
    if switchyard::models::EncoderModel::is_encoder(&a.model) {
        return run_encoder(a);
    }
    let dtype = a.engine.dtype()?;
    let (prices, price_overrides) = a.price.resolve()?;
    let specs = match &a.specs {
        Some(path) => SpecTable::from_file(path).map_err(|e| anyhow::anyhow!("--specs: {e}"))?,
        None => SpecTable::shipped(),
    };
    if let Some(path) = &a.plot {
        check_writable(path).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
    }
    if let Some(path) = &a.out {
        check_writable(path).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    }
    let options = BenchOptions {
        model: a.model.clone(),
        devices: a.devices.clone(),
        prompt_sizes: sizes("-p", a.prompt.as_deref().unwrap_or(&["512".into()]))?,
        gen_sizes: sizes("-n", &a.gen)?,
        batches: a.batch.clone(),
        repetitions: a.repetitions,
        warmup: a.warmup,
        dtype,
        quantize: a.engine.quantize()?,
        prefill_chunk: a.engine.prefill_chunk,
        kv_buckets: a.engine.buckets.clone(),
        prices,
        instance: a.price.instance.clone(),
        price_overrides,
        seed: a.seed,
        stop: Some(super::interrupt::flag()),
        project: a
            .project
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        project_batches: a.project_batch.clone(),
        calibrate: a.calibrate,
        specs,
    };
    let bar = progress_bar(0);
    let report = run(&options, |p| match p {
        Progress::Total(n) => bar.set_length(n),
        Progress::Loading(d) => bar.set_message(format!("loading {d}")),
        Progress::Step(what) => {
            bar.set_message(what);
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    let text = match a.output {
        Output::Md => report.markdown(),
        Output::Csv => report.csv(),
        Output::Json => report.json() + "\n",
        Output::Jsonl => report.jsonl(),
    };
    super::options::write_report(a.out.as_deref(), &text)?;
    print_profile();
    if let Some(path) = &a.plot {
        let chart = svg(&report).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
        write_atomically(path, &chart).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `switchyard bench` on an encoder: sequences and tokens per second per batch size and length.
fn run_encoder(a: BenchArgs) -> Result<()> {
    if let Some(path) = &a.out {
        check_writable(path).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    }
    if a.plot.is_some() || !a.project.is_empty() || a.engine.quantize.is_some() {
        anyhow::bail!("--plot, --project and --quantize are not available for encoders");
    }
    let options = switchyard::bench::EncoderBenchOptions {
        model: a.model.clone(),
        devices: a.devices.clone(),
        batches: if a.batch.is_empty() {
            vec![1, 8, 32]
        } else {
            a.batch.clone()
        },
        lengths: sizes("-p", a.prompt.as_deref().unwrap_or(&["128".into()]))?,
        repetitions: a.repetitions,
        warmup: a.warmup,
        dtype: a.engine.dtype()?,
        seed: a.seed,
        stop: Some(super::interrupt::flag()),
    };
    let bar = progress_bar(switchyard::bench::EncoderReport::calls(
        &options,
        options.devices.len(),
    ));
    let report = switchyard::bench::run_encoder_bench(&options, |what| {
        bar.set_message(what.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let text = match a.output {
        Output::Md => report.markdown(),
        Output::Csv => report.csv(),
        Output::Json => report.json() + "\n",
        Output::Jsonl => report.jsonl(),
    };
    super::options::write_report(a.out.as_deref(), &text)?;
    print_profile();
    Ok(())
}

/// The progress bar of a benchmark run of `len` timed runs.
fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar
}

/// The per-op timings `SWITCHYARD_PROFILE=1` collected.
fn print_profile() {
    if switchyard::candle::profile::enabled() {
        eprintln!(
            "per-op time (SWITCHYARD_PROFILE), all devices and runs:\n{}",
            switchyard::candle::profile::report()
        );
    }
}
