//! `switchyard bench serve`: options of the serving benchmark (see `src/loadgen/`).

use crate::loadgen::report::{Load, Slo};
use crate::loadgen::{self, plot};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use switchyard::bench::{check_writable, write_atomically};

#[derive(Args)]
pub struct ServeBenchArgs {
    /// The model: served by each device, and read here for its vocabulary (random prompts).
    #[arg(long)]
    model: String,
    /// Devices to start `switchyard serve` on in turn, comma-separated (cpu, cuda:N, neuron:N).
    #[arg(long, value_delimiter = ',', conflicts_with = "url")]
    devices: Vec<String>,
    /// Measure a running server that speaks the OpenAI API instead (http://HOST:PORT).
    #[arg(long)]
    url: Option<String>,
    /// The model name to send (default: the first the server lists in /v1/models).
    #[arg(long)]
    served_model_name: Option<String>,
    /// API key to send as `Authorization: Bearer`.
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Concurrency sweep: at most this many requests in flight, one point each.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Poisson arrivals at these rates (requests/s; `inf`: all at once), one point each.
    #[arg(long, value_delimiter = ',')]
    request_rate: Vec<String>,
    /// Requests per point (default: 4 × the concurrency, at least 8; 32 per rate).
    #[arg(long)]
    num_prompts: Option<usize>,
    /// Prompt tokens of random prompts.
    #[arg(long, default_value_t = 256)]
    input_len: usize,
    /// Generated tokens per request (exact: `ignore_eos`).
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Spread lengths uniformly within this fraction of --input-len / --output-len.
    #[arg(long, default_value_t = 0.0)]
    len_spread: f64,
    /// Prompts from a jsonl file (`{"prompt": TEXT or [ids], "max_tokens"?: N}` per line).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Warm-up requests per server before measuring (not counted).
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    /// Seed of the prompts and arrivals.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Objective on the 99th-percentile time to first token (e.g. 2s, 500ms).
    #[arg(long)]
    slo_ttft: Option<String>,
    /// Objective on the 99th-percentile time per output token (e.g. 100ms).
    #[arg(long)]
    slo_tpot: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    output: super::bench::Output,
    /// Write the report to this file instead of stdout, atomically.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the throughput-against-interactivity chart as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Prices (`--price url=USD` prices the server of --url).
    #[command(flatten)]
    price: super::options::PriceArgs,
    /// KV slots of each started server (default: the largest concurrency).
    #[arg(long)]
    slots: Option<usize>,
    /// Context of each started server (default: enough for the longest request).
    #[arg(long)]
    max_context: Option<usize>,
    /// CPU threads of each started server.
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    engine: super::options::EngineArgs,
    /// Seconds to wait for a started server to load and compile.
    #[arg(long, default_value_t = 1800)]
    ready_timeout: u64,
}

fn duration_ms(flag: &str, v: &Option<String>) -> Result<Option<f64>> {
    v.as_ref()
        .map(|s| {
            let s = s.trim();
            let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1000.0)
            } else {
                bail!("{flag} {s}: expected a duration like 2s or 100ms")
            };
            let x: f64 = num
                .trim()
                .parse()
                .with_context(|| format!("{flag} {s}: expected a duration like 2s or 100ms"))?;
            if !(x.is_finite() && x > 0.0) {
                bail!("{flag} {s}: must be positive");
            }
            Ok(x * scale)
        })
        .transpose()
}

pub fn run(a: ServeBenchArgs) -> Result<()> {
    let mut loads: Vec<Load> = a
        .concurrency
        .iter()
        .map(|&c| Load::Concurrency(c))
        .collect();
    if a.concurrency.contains(&0) {
        bail!("--concurrency 0: at least one request must be in flight");
    }
    for r in &a.request_rate {
        let rate = if r.trim() == "inf" {
            f64::INFINITY
        } else {
            r.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .with_context(|| {
                    format!("--request-rate {r}: expected requests per second > 0 or inf")
                })?
        };
        loads.push(Load::Rate(rate));
    }
    if loads.is_empty() {
        loads = [1, 4, 16].map(Load::Concurrency).to_vec();
    }
    if a.devices.is_empty() && a.url.is_none() {
        bail!("give --devices (servers to start) or --url (a running server)");
    }
    if a.num_prompts == Some(0) {
        bail!("--num-prompts 0: nothing to measure");
    }
    let (prices, price_overrides) = a.price.resolve()?;
    for (flag, path) in [("--plot", &a.plot), ("--out", &a.out)] {
        if let Some(path) = path {
            check_writable(path).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
    }
    let max_concurrency = a.concurrency.iter().copied().max().unwrap_or(16).max(1);
    let longest = ((a.input_len + a.output_len) as f64 * (1.0 + a.len_spread)).ceil() as usize + 8;
    let mut serve_args: Vec<String> = vec![
        "--slots".into(),
        a.slots.unwrap_or(max_concurrency.min(64)).to_string(),
        "--max-context".into(),
        a.max_context.unwrap_or(longest).to_string(),
        "--max-queue".into(),
        "100000".into(),
        "--served-model-name".into(),
        "bench".into(),
    ];
    if let Some(t) = a.threads {
        serve_args.extend(["--threads".into(), t.to_string()]);
    }
    if let Some(d) = &a.engine.dtype {
        serve_args.extend(["--dtype".into(), d.clone()]);
    }
    if let Some(q) = &a.engine.quantize {
        serve_args.extend(["--quantize".into(), q.clone()]);
    }
    if let Some(c) = a.engine.prefill_chunk {
        serve_args.extend(["--prefill-chunk".into(), c.to_string()]);
    }
    if let Some(b) = &a.engine.buckets {
        let b: Vec<String> = b.iter().map(usize::to_string).collect();
        serve_args.extend(["--buckets".into(), b.join(",")]);
    }
    let report = loadgen::run(loadgen::Options {
        model: a.model,
        devices: a.devices,
        url: a.url,
        served_model_name: a.served_model_name,
        api_key: a.api_key,
        loads,
        num_prompts: a.num_prompts,
        input_len: a.input_len,
        output_len: a.output_len,
        len_spread: a.len_spread,
        dataset: a.dataset,
        warmup: a.warmup,
        seed: a.seed,
        slo: Slo {
            ttft_ms: duration_ms("--slo-ttft", &a.slo_ttft)?,
            tpot_ms: duration_ms("--slo-tpot", &a.slo_tpot)?,
        },
        prices,
        instance: a.price.instance,
        price_overrides,
        serve_args,
        ready_timeout: Duration::from_secs(a.ready_timeout),
    })?;
    use super::bench::Output;
    let text = match a.output {
        Output::Md => report.markdown(),
        Output::Csv => report.csv(),
        Output::Json => report.json() + "\n",
        Output::Jsonl => report.jsonl(),
    };
    super::options::write_report(a.out.as_deref(), &text)?;
    if let Some(path) = &a.plot {
        let chart = plot::svg(&report).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
        write_atomically(path, &chart).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
