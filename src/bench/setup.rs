//! Setting a run up: the devices and tests it measures, the model loaded once, the options
//! checked before anything runs, and the report's header.

use super::{build_id, resolve_devices, BenchError, BenchOptions, BenchReport, Test};
use crate::models::Model;
use crate::Device;

/// What a run measures, decided before anything is measured.
pub(crate) struct Plan {
    /// Device strings, in order.
    pub devices: Vec<String>,
    /// The model, loaded (and quantized) once for every device.
    pub model: Model,
    /// The tests, prompts first.
    pub tests: Vec<Test>,
    /// The batched tests (`--batch`), by prompt, generation and batch size.
    pub batch_tests: Vec<super::BatchTest>,
    /// The longest test: the context every engine is built for.
    pub max_size: usize,
    /// Timed runs per device (warm-up included).
    pub per_device: u64,
}

impl Plan {
    /// Timed runs in all (warm-up included), for a progress bar.
    pub fn runs_per_device(&self, options: &BenchOptions) -> u64 {
        (self.tests.len() + self.batch_tests.len()) as u64
            * (options.warmup + options.repetitions) as u64
    }

    /// Timed runs in all devices.
    pub fn runs(&self) -> u64 {
        self.devices.len() as u64 * self.per_device
    }

    /// The report before any device ran: build, machine, model and run settings.
    pub fn empty_report(&self, options: &BenchOptions) -> Result<BenchReport, BenchError> {
        let cfg = &self.model.config;
        let params = cfg.parameter_count()?;
        let cpu_info = crate::candle::CandleDevice::cpu().info().clone();
        Ok(BenchReport {
            switchyard: build_id(),
            machine: cpu_info.description.clone(),
            model: options.model.clone(),
            model_description: format!("{}, {:.1}M params", cfg.arch, params as f64 / 1e6),
            threads: cpu_info.threads.unwrap_or(1),
            repetitions: options.repetitions,
            warmup: options.warmup,
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            devices: Vec::new(),
            interrupted: false,
            projection: None,
        })
    }
}

/// Loads the model and checks the options against it.
pub(crate) fn prepare(options: &BenchOptions) -> Result<Plan, BenchError> {
    let devices = resolve_devices(&options.devices)?;
    let mut model = Model::load(&options.model)?;
    if let Some(q) = options.quantize {
        model = crate::quantize::QuantizedWeights::wrap(model, q)?;
    }
    validate(options, &devices, model.config.max_position_embeddings)?;
    let (tests, batch_tests) = if options.batches.is_empty() {
        let tests: Vec<Test> = options
            .prompt_sizes
            .iter()
            .map(|&n| Test::Pp(n))
            .chain(options.gen_sizes.iter().map(|&n| Test::Tg(n)))
            .collect();
        (tests, Vec::new())
    } else {
        let mut batch_tests = Vec::new();
        for &prompt in &options.prompt_sizes {
            for &gen in &options.gen_sizes {
                for &batch in &options.batches {
                    batch_tests.push(super::BatchTest { batch, prompt, gen });
                }
            }
        }
        (Vec::new(), batch_tests)
    };
    // A batched sequence holds its prompt, its first token and `gen` more.
    let max_size = tests
        .iter()
        .map(Test::tokens)
        .chain(batch_tests.iter().map(|t| t.prompt + t.gen + 1))
        .max()
        .unwrap_or(1);
    let mut plan = Plan {
        devices,
        model,
        tests,
        batch_tests,
        max_size,
        per_device: 0,
    };
    plan.per_device = plan.runs_per_device(options);
    Ok(plan)
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
    if !o.batches.is_empty() {
        if o.prompt_sizes.is_empty() || o.gen_sizes.is_empty() {
            anyhow::bail!("--batch: batched tests need both -p and -n sizes (a prompt, then generated tokens, per sequence)");
        }
        if o.batches.contains(&0) {
            anyhow::bail!("--batch: batch sizes must be at least 1");
        }
        for &p in &o.prompt_sizes {
            for &n in &o.gen_sizes {
                if p + n + 1 > max_context {
                    anyhow::bail!("--batch with -p {p} -n {n}: a sequence needs {} positions, more than the model's context ({max_context})", p + n + 1);
                }
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
