//! The side-by-side benchmark: the same model on every chosen device, llama-bench style (`pp N`
//! prompt processing and `tg N` generation, repeated after warm-up, mean ± stdev), plus time to
//! first token, per-token latency percentiles, load and compile time, memory, efficiency against
//! the device's memory-bandwidth roofline and cost per million tokens.
//!
//! ```no_run
//! use switchyard::bench::{run, BenchOptions};
//! let report = run(&BenchOptions::default(), |_| {}).unwrap();
//! println!("{}", report.markdown());
//! ```

mod bandwidth;
mod batched;
mod encoder;
mod files;
mod measure;
mod plot;
mod prices;
mod projection;
mod report;
mod setup;
mod stats;
mod summary;

pub use bandwidth::probe_read_bandwidth;
pub use batched::{BatchResult, BatchSample, BatchTest};
pub use encoder::{
    run_encoder_bench, EncoderBenchOptions, EncoderDeviceRun, EncoderReport, EncoderResult,
};
pub use files::{check_writable, write_atomically};
pub use plot::{svg, COLORS};
pub use prices::{usd_per_million_tokens, DevicePrice, Instance, PriceTable, SHIPPED_PRICES};
pub use projection::{CalibrationRow, ProjectionReport};
pub use stats::{percentile, Summary};

use crate::{AnyDevice, DType, DeviceInfo};
use serde::Serialize;

/// One benchmark test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Process a prompt of N tokens from an empty context.
    Pp(usize),
    /// Generate N tokens one at a time from an empty context.
    Tg(usize),
}

impl Test {
    /// `pp512` / `tg128`.
    pub fn label(&self) -> String {
        match self {
            Test::Pp(n) => format!("pp{n}"),
            Test::Tg(n) => format!("tg{n}"),
        }
    }

    /// Tokens processed.
    pub fn tokens(&self) -> usize {
        match self {
            Test::Pp(n) | Test::Tg(n) => *n,
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `builtin:NAME`, a model directory or a hub id.
    pub model: String,
    /// Device strings (`cpu`, `cuda:0`, `neuron:0`), or `all`.
    pub devices: Vec<String>,
    /// Prompt sizes (`pp` tests).
    pub prompt_sizes: Vec<usize>,
    /// Generation sizes (`tg` tests).
    pub gen_sizes: Vec<usize>,
    /// Batch sizes: when given, every `-p` × `-n` pair runs as a batched test per size (B
    /// sequences decoding together, llama-batched-bench's semantics) instead of the `pp`/`tg`
    /// tests.
    pub batches: Vec<usize>,
    /// Measured repetitions per test.
    pub repetitions: usize,
    /// Discarded warm-up runs per test.
    pub warmup: usize,
    /// Compute dtype (default: the engine's choice per device).
    pub dtype: Option<DType>,
    /// Quantize the model's matrices on load to this type.
    pub quantize: Option<DType>,
    /// Static-shape devices: tokens per prefill call (default: the engine's).
    pub prefill_chunk: Option<usize>,
    /// Static-shape devices: KV buckets (default: the engine's; the run's context is added).
    pub kv_buckets: Option<Vec<usize>>,
    /// Prices.
    pub prices: PriceTable,
    /// The instance the run is on, for prices from the table.
    pub instance: Option<String>,
    /// Per-device price overrides (USD per hour).
    pub price_overrides: Vec<(String, f64)>,
    /// Seed of the random prompt tokens.
    pub seed: u64,
    /// Polled between timed runs and tokens: once it is true the run stops and returns what it
    /// measured so far, with [`BenchReport::interrupted`] set (the CLI sets it on Ctrl-C).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Devices to project from their specifications (names in [`BenchOptions::specs`]).
    pub project: Vec<String>,
    /// Batch sizes of the projected generation tests.
    pub project_batches: Vec<usize>,
    /// Replace the assumed efficiencies by the fractions measured in this run, per class.
    pub calibrate: bool,
    /// Device specifications for projections.
    pub specs: crate::project::SpecTable,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: "builtin:smollm2-135m".into(),
            devices: vec!["cpu".into()],
            prompt_sizes: vec![512],
            gen_sizes: vec![128],
            batches: Vec::new(),
            repetitions: 5,
            warmup: 1,
            dtype: None,
            quantize: None,
            prefill_chunk: None,
            kv_buckets: None,
            prices: PriceTable::shipped(),
            instance: None,
            price_overrides: Vec::new(),
            seed: 42,
            stop: None,
            project: Vec::new(),
            project_batches: vec![1],
            calibrate: false,
            specs: crate::project::SpecTable::shipped(),
        }
    }
}

/// One timed run of a test.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Repetition index (warm-up runs are numbered first).
    pub rep: usize,
    /// A discarded warm-up run.
    pub warmup: bool,
    /// Tokens processed.
    pub tokens: usize,
    /// Wall time between synchronizations.
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_s: f64,
    /// For `pp`: prompt processed and first token chosen.
    pub ttft_s: Option<f64>,
    /// For `tg`: each token's latency.
    pub token_latencies_s: Vec<f64>,
}

/// A test's samples and what follows from them.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The test.
    pub test: Test,
    /// Every run, warm-up included.
    pub samples: Vec<Sample>,
    /// Tokens per second over the measured runs.
    pub tokens_per_s: Summary,
    /// Time to first token over the measured runs (`pp`).
    pub ttft_s: Option<Summary>,
    /// Per-token latency percentiles 50/90/99 over the measured runs (`tg`).
    pub latency_p50_p90_p99_s: Option<[f64; 3]>,
    /// Bytes read per generated token: weights plus the average KV cache attended (`tg`).
    pub bytes_per_token: Option<f64>,
    /// Share of the peak memory bandwidth the generation rate implies (`tg`; not for emulated
    /// devices).
    pub roofline_fraction: Option<f64>,
    /// Cost per million tokens at the mean rate (not for emulated devices).
    pub usd_per_million_tokens: Option<f64>,
}

/// Where a device's peak bandwidth came from.
#[derive(Debug, Clone, Serialize)]
pub struct Bandwidth {
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// `device` (reported by the device), or `probe` (measured here).
    pub source: String,
}

/// Everything measured on one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRun {
    /// The device string.
    pub device: String,
    /// The name shown (with `(emulated)`).
    pub display_name: String,
    /// Device info, when the device opened.
    pub info: Option<DeviceInfo>,
    /// Why the device was skipped, if it was.
    pub skipped: Option<String>,
    /// Compute dtype.
    pub dtype: Option<String>,
    /// Weights read, converted and uploaded.
    pub load_s: f64,
    /// Graphs compiled.
    pub compile_s: f64,
    /// Latency of the very first call after compiling (the first test's first warm-up run:
    /// the whole prompt for a `pp` test, the first token for a `tg` test), kept apart from the
    /// steady-state figures.
    pub first_call_s: Option<f64>,
    /// Static-shape devices: the prefill chunk, KV buckets and executables compiled.
    pub static_shapes: Option<String>,
    /// Bytes of weights on the device.
    pub weight_bytes: usize,
    /// How the weights are stored (e.g. `q8_0 ×154, f32 ×61`).
    pub weight_types: String,
    /// Peak resident memory of this process after the device's tests.
    pub peak_host_bytes: Option<u64>,
    /// Device memory in use, where the device reports it.
    pub device_memory_bytes: Option<u64>,
    /// Peak memory bandwidth for the roofline.
    pub bandwidth: Option<Bandwidth>,
    /// Price applied for the cost column.
    pub price: Option<DevicePrice>,
    /// Per test.
    pub results: Vec<TestResult>,
    /// Per batched test (`--batch`).
    pub batches: Vec<BatchResult>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Switchyard's version and build commit.
    pub switchyard: String,
    /// The host machine.
    pub machine: String,
    /// The model argument.
    pub model: String,
    /// Architecture and parameter count.
    pub model_description: String,
    /// Compute threads of CPU devices.
    pub threads: usize,
    /// Measured repetitions per test.
    pub repetitions: usize,
    /// Warm-up runs per test.
    pub warmup: usize,
    /// When the run started (seconds since the Unix epoch).
    pub started_unix_s: u64,
    /// Per device.
    pub devices: Vec<DeviceRun>,
    /// The run was stopped early ([`BenchOptions::stop`]): only complete runs are reported, and
    /// tests or devices not reached are missing.
    pub interrupted: bool,
    /// Projections from device specifications, and each measured device's projection next to
    /// its measurement (with `--project` or `--calibrate`).
    pub projection: Option<ProjectionReport>,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The total number of timed runs.
    Total(u64),
    /// A device is being loaded.
    Loading(String),
    /// One timed run finished.
    Step(String),
}

/// Errors of a benchmark run (bad options, model loading, device failures).
pub type BenchError = anyhow::Error;

/// The build's version and commit.
pub fn build_id() -> String {
    format!(
        "switchyard {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("SWITCHYARD_COMMIT")
    )
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_host_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Expands `all` and checks every device string parses (unknown strings are an error; devices
/// that exist but are unavailable here are kept and reported as skipped).
pub fn resolve_devices(requested: &[String]) -> Result<Vec<String>, BenchError> {
    if requested.iter().any(|d| d == "all") {
        return Ok(AnyDevice::probe_all().into_iter().map(|s| s.name).collect());
    }
    let mut out = Vec::new();
    for d in requested.iter().filter(|d| !d.trim().is_empty()) {
        match AnyDevice::open(d) {
            Err(e @ switchyard_runtime::Error::UnknownDevice { .. }) => return Err(e.into()),
            _ => {
                let d = d.trim().to_ascii_lowercase();
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    Ok(out)
}

/// Runs the benchmark. `progress` is told what happens (for a progress bar): the model is loaded
/// and the options checked (`setup.rs`), each device measured in turn (`measure.rs`), each
/// test's samples summarized (`summary.rs`), and the projections added.
pub fn run(
    options: &BenchOptions,
    mut progress: impl FnMut(Progress),
) -> Result<BenchReport, BenchError> {
    let plan = setup::prepare(options)?;
    progress(Progress::Total(plan.runs()));
    let mut report = plan.empty_report(options)?;
    let mut cpu_bandwidth: Option<f64> = None;
    for name in &plan.devices {
        let run = measure::device(
            options,
            &plan,
            name,
            report.threads,
            &mut cpu_bandwidth,
            &mut progress,
        )?;
        report.interrupted |= run.interrupted;
        report.devices.push(run.run);
        if report.interrupted {
            break;
        }
    }
    if !options.project.is_empty() || options.calibrate {
        report.projection = Some(projection::build(options, &plan.model, &report)?);
    }
    Ok(report)
}

fn to_rt(e: crate::models::ModelError) -> switchyard_runtime::Error {
    match e {
        crate::models::ModelError::Runtime(e) => e,
        other => switchyard_runtime::Error::exec("benchmark", other.to_string()),
    }
}
