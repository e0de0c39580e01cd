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
mod files;
mod plot;
mod prices;
mod projection;
mod report;
mod stats;

pub use bandwidth::probe_read_bandwidth;
pub use files::{check_writable, write_atomically};
pub use plot::svg;
pub use prices::{usd_per_million_tokens, DevicePrice, Instance, PriceTable, SHIPPED_PRICES};
pub use projection::{CalibrationRow, ProjectionReport};
pub use stats::{percentile, Summary};

use crate::models::{argmax, Engine, EngineOptions, Model, Shapes};
use crate::runtime::DeviceKind;
use crate::{AnyDevice, DType, Device, DeviceInfo};
use serde::Serialize;
use std::time::{Duration, Instant};

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

fn validate(o: &BenchOptions, devices: &[String], max_context: usize) -> Result<(), BenchError> {
    if o.prompt_sizes.is_empty() && o.gen_sizes.is_empty() {
        anyhow::bail!("nothing to measure: give -p and/or -n sizes");
    }
    for (flag, sizes) in [("-p", &o.prompt_sizes), ("-n", &o.gen_sizes)] {
        for &n in sizes {
            if n == 0 || n > max_context {
                anyhow::bail!("{flag} {n}: test sizes must be between 1 and the model's context ({max_context})");
            }
        }
    }
    if o.repetitions == 0 {
        anyhow::bail!("-r 0: at least one repetition is needed");
    }
    if devices.is_empty() && o.project.is_empty() {
        anyhow::bail!("nothing to measure: no --devices and no --project targets");
    }
    if o.project_batches.is_empty() || o.project_batches.contains(&0) {
        anyhow::bail!("--project-batch: batch sizes must be at least 1");
    }
    for t in &o.project {
        o.specs
            .target(t)
            .map_err(|e| anyhow::anyhow!("--project: {e}"))?;
    }
    for (dev, usd) in &o.price_overrides {
        let projected = o.project.iter().any(|t| t.eq_ignore_ascii_case(dev));
        if !devices.contains(dev) && !projected {
            anyhow::bail!(
                "--price {dev}={usd}: {dev} is not in this run (measured or projected: {})",
                devices
                    .iter()
                    .chain(&o.project)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !(usd.is_finite() && *usd > 0.0) {
            anyhow::bail!(
                "--price {dev}={usd}: the price must be a positive number of USD per hour"
            );
        }
    }
    if let Some(i) = &o.instance {
        if o.prices.instance(i).is_none() {
            let names: Vec<&str> = o.prices.instances.iter().map(|i| i.name.as_str()).collect();
            anyhow::bail!(
                "--instance {i}: not in the price table ({})",
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// Random token ids in `[0, vocab)`, reproducible from `seed`.
fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// Runs the benchmark. `progress` is told what happens (for a progress bar).
pub fn run(
    options: &BenchOptions,
    mut progress: impl FnMut(Progress),
) -> Result<BenchReport, BenchError> {
    let devices = resolve_devices(&options.devices)?;
    let mut model = Model::load(&options.model)?;
    if let Some(q) = options.quantize {
        model = crate::quantize::QuantizedWeights::wrap(model, q)?;
    }
    let cfg = &model.config;
    let max_size = options
        .prompt_sizes
        .iter()
        .chain(&options.gen_sizes)
        .copied()
        .max()
        .unwrap_or(1);
    validate(options, &devices, cfg.max_position_embeddings)?;
    let tests: Vec<Test> = options
        .prompt_sizes
        .iter()
        .map(|&n| Test::Pp(n))
        .chain(options.gen_sizes.iter().map(|&n| Test::Tg(n)))
        .collect();
    let per_test = (options.warmup + options.repetitions) as u64;
    progress(Progress::Total(
        devices.len() as u64 * tests.len() as u64 * per_test,
    ));
    let params = cfg.parameter_count()?;
    let cpu_info = crate::candle::CandleDevice::cpu().info().clone();
    let threads = cpu_info.threads.unwrap_or(1);
    let mut report = BenchReport {
        switchyard: build_id(),
        machine: cpu_info.description.clone(),
        model: options.model.clone(),
        model_description: format!("{}, {:.1}M params", cfg.arch, params as f64 / 1e6),
        threads,
        repetitions: options.repetitions,
        warmup: options.warmup,
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        devices: Vec::new(),
        interrupted: false,
        projection: None,
    };
    let mut cpu_bandwidth: Option<f64> = None;
    for name in &devices {
        let mut run = DeviceRun {
            device: name.clone(),
            display_name: name.clone(),
            info: None,
            skipped: None,
            dtype: None,
            load_s: 0.0,
            compile_s: 0.0,
            first_call_s: None,
            static_shapes: None,
            weight_bytes: 0,
            weight_types: String::new(),
            peak_host_bytes: None,
            device_memory_bytes: None,
            bandwidth: None,
            price: None,
            results: Vec::new(),
        };
        let device = match AnyDevice::open(name) {
            Ok(d) => d,
            Err(e) => {
                run.skipped = Some(match e {
                    switchyard_runtime::Error::DeviceUnavailable { reason, .. } => reason,
                    other => other.to_string(),
                });
                report.devices.push(run);
                for _ in 0..tests.len() as u64 * per_test {
                    progress(Progress::Step(format!("{name}: skipped")));
                }
                continue;
            }
        };
        let info = device.info().clone();
        run.display_name = info.display_name();
        progress(Progress::Loading(run.display_name.clone()));
        let engine = match Engine::new(
            device,
            cfg,
            model.weights.as_ref(),
            &EngineOptions {
                dtype: options.dtype,
                max_context: Some(max_size),
                prefill_chunk: options.prefill_chunk,
                kv_buckets: options.kv_buckets.clone(),
            },
        ) {
            Ok(e) => e,
            Err(e) => {
                run.skipped = Some(format!("could not load the model: {e}"));
                report.devices.push(run);
                for _ in 0..tests.len() as u64 * per_test {
                    progress(Progress::Step(format!("{name}: skipped")));
                }
                continue;
            }
        };
        run.dtype = Some(engine.dtype().name().to_string());
        run.load_s = engine.load_time().as_secs_f64();
        run.compile_s = engine.compile_time().as_secs_f64();
        if let Shapes::Static { chunk, buckets } = engine.shapes() {
            run.static_shapes = Some(format!(
                "prefill chunk {chunk}, KV buckets {}, {} executables",
                buckets
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("/"),
                engine.shapes().executables()
            ));
        }
        run.weight_bytes = engine.weight_bytes();
        run.weight_types = engine.weight_types();
        if !info.emulated {
            run.bandwidth = match info.peak_bandwidth {
                Some(b) => Some(Bandwidth {
                    bytes_per_s: b,
                    source: "device".into(),
                }),
                None if info.kind == DeviceKind::Cpu => {
                    let b = *cpu_bandwidth.get_or_insert_with(|| probe_read_bandwidth(threads));
                    b.is_finite().then(|| Bandwidth {
                        bytes_per_s: b,
                        source: "probe".into(),
                    })
                }
                None => None,
            };
            run.price = match options.price_overrides.iter().find(|(d, _)| d == name) {
                Some((_, usd)) => Some(DevicePrice {
                    usd_per_hour: *usd,
                    source: "--price".into(),
                }),
                None => match &options.instance {
                    Some(i) => options.prices.device_price(i, name, info.kind).ok(),
                    None => None,
                },
            };
        }
        let kv_bytes_per_position =
            2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * engine.dtype().block_bytes();
        let mut session = engine.new_session()?;
        let stopped = || {
            options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        };
        for (ti, test) in tests.iter().enumerate() {
            let mut samples = Vec::new();
            for rep in 0..options.warmup + options.repetitions {
                if stopped() {
                    report.interrupted = true;
                    break;
                }
                let warmup = rep < options.warmup;
                session.reset();
                let seed = options.seed ^ ((ti as u64) << 32) ^ rep as u64;
                let sample = match *test {
                    Test::Pp(n) => {
                        let tokens = random_tokens(n, cfg.vocab_size, seed | 1);
                        let ((_, ttft), secs) = engine.device().timed(|| {
                            let start = Instant::now();
                            let logits = engine.prefill(&mut session, &tokens).map_err(to_rt)?;
                            let _first = argmax(&logits);
                            Ok(((), start.elapsed()))
                        })?;
                        Sample {
                            rep,
                            warmup,
                            tokens: n,
                            seconds: secs.as_secs_f64(),
                            tokens_per_s: n as f64 / secs.as_secs_f64(),
                            ttft_s: Some(ttft.as_secs_f64()),
                            token_latencies_s: Vec::new(),
                        }
                    }
                    Test::Tg(n) => {
                        let mut token = random_tokens(1, cfg.vocab_size, seed | 1)[0];
                        let mut lat = Vec::with_capacity(n);
                        let mut total = Duration::ZERO;
                        for _ in 0..n {
                            if stopped() {
                                break;
                            }
                            let (next, d) = engine.device().timed(|| {
                                let logits = engine.decode(&mut session, token).map_err(to_rt)?;
                                Ok(argmax(&logits))
                            })?;
                            token = next;
                            total += d;
                            lat.push(d.as_secs_f64());
                        }
                        Sample {
                            rep,
                            warmup,
                            tokens: n,
                            seconds: total.as_secs_f64(),
                            tokens_per_s: n as f64 / total.as_secs_f64(),
                            ttft_s: None,
                            token_latencies_s: lat,
                        }
                    }
                };
                if stopped() {
                    // A run cut short is not a measurement.
                    report.interrupted = true;
                    break;
                }
                samples.push(sample);
                progress(Progress::Step(format!(
                    "{}: {}",
                    run.display_name,
                    test.label()
                )));
            }
            let measured: Vec<&Sample> = samples.iter().filter(|s| !s.warmup).collect();
            let Some(tps) =
                Summary::of(&measured.iter().map(|s| s.tokens_per_s).collect::<Vec<_>>())
            else {
                // Interrupted before a measured repetition of this test.
                break;
            };
            let ttft = Summary::of(&measured.iter().filter_map(|s| s.ttft_s).collect::<Vec<_>>());
            let mut lat: Vec<f64> = measured
                .iter()
                .flat_map(|s| s.token_latencies_s.iter().copied())
                .collect();
            lat.sort_by(f64::total_cmp);
            let (percentiles, bytes_per_token) = match test {
                Test::Tg(n) => (
                    Some([
                        percentile(&lat, 50.0),
                        percentile(&lat, 90.0),
                        percentile(&lat, 99.0),
                    ]),
                    // Step i attends i + 1 positions: on average (n + 1) / 2.
                    Some(
                        run.weight_bytes as f64
                            + kv_bytes_per_position as f64 * (*n as f64 + 1.0) / 2.0,
                    ),
                ),
                Test::Pp(_) => (None, None),
            };
            let roofline_fraction = match (bytes_per_token, &run.bandwidth) {
                (Some(b), Some(bw)) => Some(b * tps.mean / bw.bytes_per_s),
                _ => None,
            };
            run.results.push(TestResult {
                test: *test,
                tokens_per_s: tps,
                ttft_s: ttft,
                latency_p50_p90_p99_s: percentiles,
                bytes_per_token,
                roofline_fraction,
                usd_per_million_tokens: run
                    .price
                    .as_ref()
                    .map(|p| usd_per_million_tokens(p.usd_per_hour, tps.mean)),
                samples,
            });
        }
        run.first_call_s = run.results.first().and_then(|r| {
            let s = r.samples.first()?;
            match r.test {
                Test::Pp(_) => Some(s.seconds),
                Test::Tg(_) => s.token_latencies_s.first().copied(),
            }
        });
        run.peak_host_bytes = peak_host_memory();
        run.device_memory_bytes = engine.device().memory_in_use();
        run.info = Some(info);
        report.devices.push(run);
        if report.interrupted {
            break;
        }
    }
    if !options.project.is_empty() || options.calibrate {
        report.projection = Some(projection::build(options, &model, &report)?);
    }
    Ok(report)
}

fn to_rt(e: crate::models::ModelError) -> switchyard_runtime::Error {
    match e {
        crate::models::ModelError::Runtime(e) => e,
        other => switchyard_runtime::Error::exec("benchmark", other.to_string()),
    }
}
