//! `switchyard bench`: the side-by-side benchmark.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use switchyard::bench::{
    check_writable, run, svg, write_atomically, BenchOptions, PriceTable, Progress,
};
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
pub struct BenchArgs {
    /// builtin:NAME (smollm2-135m, tinyllama-1.1b), a model directory or a hub id.
    #[arg(long, default_value = "builtin:smollm2-135m")]
    model: String,
    /// Devices to measure, comma-separated (cpu, cuda:N, neuron:N), or `all`.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    devices: Vec<String>,
    /// Prompt sizes for the prompt-processing tests (`-p ""` skips them).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    prompt: Vec<String>,
    /// Generation sizes for the generation tests (`-n ""` skips them).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    gen: Vec<String>,
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
    /// Hourly price of a device, DEVICE=USD (repeatable); overrides --instance.
    #[arg(long = "price")]
    prices: Vec<String>,
    /// Price table to use instead of the shipped one (TOML, see src/bench/prices.toml).
    #[arg(long = "prices")]
    price_table: Option<PathBuf>,
    /// The instance type this runs on, for prices from the table.
    #[arg(long)]
    instance: Option<String>,
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
    let dtype = a.engine.dtype()?;
    let mut price_overrides = Vec::new();
    for p in &a.prices {
        let Some((dev, usd)) = p.split_once('=') else {
            bail!("--price {p}: expected DEVICE=USD_PER_HOUR, e.g. cpu=0.09");
        };
        let usd: f64 = usd
            .parse()
            .with_context(|| format!("--price {p}: '{usd}' is not a number of USD per hour"))?;
        price_overrides.push((dev.trim().to_ascii_lowercase(), usd));
    }
    let prices = match &a.price_table {
        Some(path) => PriceTable::from_file(path).map_err(|e| anyhow::anyhow!("--prices: {e}"))?,
        None => PriceTable::shipped(),
    };
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
        prompt_sizes: sizes("-p", &a.prompt)?,
        gen_sizes: sizes("-n", &a.gen)?,
        repetitions: a.repetitions,
        warmup: a.warmup,
        dtype,
        quantize: a.engine.quantize()?,
        prefill_chunk: a.engine.prefill_chunk,
        kv_buckets: a.engine.buckets.clone(),
        prices,
        instance: a.instance.clone(),
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
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
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
    match &a.out {
        // The whole report at once, through a temporary file renamed into place: an
        // interrupted or failed run never leaves a half-written file.
        Some(path) => {
            write_atomically(path, &text).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
            eprintln!("wrote {}", path.display());
        }
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?,
    }
    if switchyard::candle::profile::enabled() {
        eprintln!(
            "per-op time (SWITCHYARD_PROFILE), all devices and runs:\n{}",
            switchyard::candle::profile::report()
        );
    }
    if let Some(path) = &a.plot {
        let chart = svg(&report).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
        write_atomically(path, &chart).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
