//! `switchyard bench serve`: a load generator over the OpenAI completions API (async, streaming,
//! so it sees every token). With devices it starts `switchyard serve` on each in turn; with a
//! URL it measures any server that speaks the API (llama-server, vLLM, ...). Each server gets a
//! warm-up, then every load point (a concurrency, or a Poisson arrival rate) with the same
//! seeded requests; the report has per-point throughput and latency percentiles, the cost of a
//! million output tokens, and the cheapest point within the SLOs.

mod client;
pub mod plot;
pub mod report;
mod server;
mod workload;

use anyhow::{bail, Context, Result};
use client::{RequestRecord, Target};
use indicatif::{ProgressBar, ProgressStyle};
use report::{Load, Point, ServeReport, ServerResult, Slo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::bench::{DevicePrice, PriceTable};
use switchyard::runtime::DeviceKind;
use workload::RequestSpec;

/// What to measure.
pub struct Options {
    pub model: String,
    /// Devices to start `switchyard serve` on, or empty with `url`.
    pub devices: Vec<String>,
    pub url: Option<String>,
    /// The model name to send (default: the first of the server's /v1/models).
    pub served_model_name: Option<String>,
    pub api_key: Option<String>,
    pub loads: Vec<Load>,
    /// Requests per point (default: 4 × the concurrency, at least 8; 32 per rate point).
    pub num_prompts: Option<usize>,
    pub input_len: usize,
    pub output_len: usize,
    pub len_spread: f64,
    pub dataset: Option<std::path::PathBuf>,
    pub warmup: usize,
    pub seed: u64,
    pub slo: Slo,
    pub prices: PriceTable,
    pub instance: Option<String>,
    pub price_overrides: Vec<(String, f64)>,
    /// Extra `serve` arguments (slots, context, threads, dtype, quantize, buckets).
    pub serve_args: Vec<String>,
    pub ready_timeout: Duration,
}

fn kind_of(device: &str) -> DeviceKind {
    let d = device.to_ascii_lowercase();
    if d.starts_with("cuda") || d.starts_with("gpu") {
        DeviceKind::Cuda
    } else if d.starts_with("neuron") {
        DeviceKind::Neuron
    } else {
        DeviceKind::Cpu
    }
}

fn price_for(o: &Options, key: &str, emulated: bool) -> (Option<DevicePrice>, Option<String>) {
    if emulated {
        return (
            None,
            Some("emulated: it measures the emulator, not hardware".into()),
        );
    }
    if let Some((_, usd)) = o.price_overrides.iter().find(|(d, _)| d == key) {
        return (
            Some(DevicePrice {
                usd_per_hour: *usd,
                source: format!("--price {key}={usd}"),
            }),
            None,
        );
    }
    match &o.instance {
        Some(i) if o.url.is_none() => match o.prices.device_price(i, key, kind_of(key)) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        _ => (
            None,
            Some(format!(
                "no price: pass --price {key}=USD_PER_HOUR or --instance"
            )),
        ),
    }
}

/// The requests of one point (the same for every server), and of the warm-up.
fn requests(
    o: &Options,
    vocab: usize,
    special: &dyn Fn(u32) -> bool,
    count: usize,
    salt: u64,
) -> Result<Vec<RequestSpec>> {
    match &o.dataset {
        Some(path) => workload::dataset(path, count, o.output_len),
        None => workload::random(
            count,
            o.input_len,
            o.output_len,
            o.len_spread,
            vocab,
            special,
            o.seed.wrapping_add(salt),
        ),
    }
}

fn point_size(o: &Options, load: &Load) -> usize {
    o.num_prompts.unwrap_or(match load {
        Load::Concurrency(c) => (4 * c).max(8),
        Load::Rate(_) => 32,
    })
}

/// Runs one point: every request of `specs`, `load` deciding when each is sent.
async fn run_point(
    target: &Target,
    specs: &[RequestSpec],
    load: Load,
    seed: u64,
    bar: &ProgressBar,
) -> (Vec<RequestRecord>, f64) {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let limit = match load {
        Load::Concurrency(c) => c,
        Load::Rate(_) => specs.len().max(1),
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let gaps = match load {
        Load::Rate(r) if r.is_finite() => workload::poisson_gaps(specs.len(), r, seed),
        _ => vec![0.0; specs.len()],
    };
    for (i, (spec, gap)) in specs.iter().cloned().zip(gaps).enumerate() {
        if gap > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let target = target.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let record = client::send(&target, &spec, start).await;
            drop(permit);
            bar.inc(1);
            (i, record)
        });
    }
    let mut records: Vec<(usize, RequestRecord)> = tasks.join_all().await;
    records.sort_by_key(|(i, _)| *i);
    (
        records.into_iter().map(|(_, r)| r).collect(),
        start.elapsed().as_secs_f64(),
    )
}

/// The model name a server serves: the first of its /v1/models.
async fn served_model(target: &Target) -> Result<String> {
    let mut r = target.http.get(format!("{}/v1/models", target.base));
    if let Some(k) = &target.api_key {
        r = r.bearer_auth(k);
    }
    let v: serde_json::Value = serde_json::from_str(
        &r.send()
            .await
            .with_context(|| format!("GET {}/v1/models", target.base))?
            .text()
            .await?,
    )
    .with_context(|| format!("{}/v1/models did not answer JSON", target.base))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}/v1/models lists no model: {v}", target.base))
}

/// Measures every server and load point.
pub fn run(o: Options) -> Result<ServeReport> {
    if o.devices.is_empty() == o.url.is_none() {
        bail!("give either --devices or --url");
    }
    if o.loads.is_empty() {
        bail!("no load points: give --concurrency or --request-rate");
    }
    let (vocab, tokenizer) = {
        let model = switchyard::models::Model::load(&o.model)?;
        (model.config.vocab_size, model.tokenizer)
    };
    let special = |id: u32| tokenizer.as_ref().is_some_and(|t| t.is_special(id));
    let point_specs: Vec<Vec<RequestSpec>> = o
        .loads
        .iter()
        .enumerate()
        .map(|(i, l)| requests(&o, vocab, &special, point_size(&o, l), i as u64 + 1))
        .collect::<Result<_>>()?;
    let warm_specs = requests(&o, vocab, &special, o.warmup, 0)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // A connection per request: a pooled keep-alive connection the server is closing just as a
    // request goes out fails that request (seen against llama-server), which is the client's
    // fault, not the server's. Connecting on loopback costs well under a millisecond.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .context("building the HTTP client")?;
    let servers: Vec<Option<String>> = if o.url.is_some() {
        vec![None]
    } else {
        o.devices.iter().cloned().map(Some).collect()
    };
    let total: usize = point_specs.iter().map(Vec::len).sum::<usize>() * servers.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    for device in servers {
        let (process, base, label, emulated) = match &device {
            Some(d) => {
                bar.set_message(format!("starting switchyard serve on {d}"));
                let mut args = vec![
                    "--model".to_string(),
                    o.model.clone(),
                    "--device".into(),
                    d.clone(),
                ];
                args.extend(o.serve_args.iter().cloned());
                let p = server::ServerProcess::start(&args, o.ready_timeout)?;
                let base = p.base.clone();
                let label = p.device_label.clone();
                let emulated = label.contains("(emulated)");
                (Some(p), base, label, emulated)
            }
            None => {
                let url = o.url.clone().expect("checked");
                (None, url.trim_end_matches('/').to_string(), url, false)
            }
        };
        let key = device.clone().unwrap_or_else(|| "url".into());
        let (price, price_note) = price_for(&o, &key, emulated);
        let mut target = Target {
            http: http.clone(),
            base,
            model: String::new(),
            api_key: o.api_key.clone(),
        };
        let points = runtime.block_on(async {
            target.model = match &o.served_model_name {
                Some(n) => n.clone(),
                None => served_model(&target).await?,
            };
            if !warm_specs.is_empty() {
                bar.set_message(format!("{label}: warm-up"));
                let hidden = ProgressBar::hidden();
                let c = warm_specs.len().min(4);
                let (records, _) =
                    run_point(&target, &warm_specs, Load::Concurrency(c), o.seed, &hidden).await;
                if let Some(e) = records.iter().find_map(|r| r.error.clone()) {
                    bail!("{label}: a warm-up request failed: {e}");
                }
            }
            let mut points = Vec::new();
            for (load, specs) in o.loads.iter().zip(&point_specs) {
                bar.set_message(format!("{label}: {}", load.label()));
                let (records, duration) = run_point(&target, specs, *load, o.seed, &bar).await;
                points.push(Point::of(*load, records, duration, price.as_ref(), &o.slo));
            }
            Ok::<_, anyhow::Error>(points)
        })?;
        if let Some(p) = process {
            p.stop()?;
        }
        results.push(ServerResult {
            label,
            emulated,
            price,
            price_note,
            points,
        });
    }
    bar.finish_and_clear();
    let workload = match &o.dataset {
        Some(d) => format!(
            "dataset {}, up to {} output tokens",
            d.display(),
            o.output_len
        ),
        None => format!(
            "random prompts of {} tokens, {} output tokens{} (ignore_eos), seed {}",
            o.input_len,
            o.output_len,
            if o.len_spread > 0.0 {
                format!(" (±{:.0}%)", o.len_spread * 100.0)
            } else {
                String::new()
            },
            o.seed
        ),
    };
    Ok(ServeReport {
        model: o.model.clone(),
        workload,
        machine: machine(),
        build: switchyard::bench::build_id(),
        slo: o.slo,
        servers: results,
    })
}

/// The CPU this ran on, for the report header.
fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .map_or_else(
            || "unknown CPU".into(),
            |m| format!("{m}, {} CPUs", num_cpus()),
        )
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
