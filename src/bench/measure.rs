//! Measuring one device: open it, build the engine (load and compile timed apart), then every
//! test's warm-up and measured repetitions between device synchronizations.

use super::setup::Plan;
use super::{
    peak_host_memory, probe_read_bandwidth, summary, Bandwidth, BenchError, BenchOptions,
    DevicePrice, DeviceRun, Progress, Sample, Test,
};
use crate::models::{argmax, Engine, EngineOptions, Session, Shapes};
use crate::runtime::DeviceKind;
use crate::{AnyDevice, Device};
use std::time::{Duration, Instant};

/// A device's run, and whether the run was stopped during it.
pub(crate) struct Measured {
    pub run: DeviceRun,
    pub interrupted: bool,
}

/// Random token ids in `[0, vocab)`, reproducible from `seed`.
pub(crate) fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
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

fn empty_run(name: &str) -> DeviceRun {
    DeviceRun {
        device: name.to_string(),
        display_name: name.to_string(),
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
        batches: Vec::new(),
    }
}

/// Measures every test of `plan` on device `name` (skipped, with the reason, when it does not
/// open or cannot load the model). The CPU's bandwidth is probed once per run.
pub(crate) fn device(
    options: &BenchOptions,
    plan: &Plan,
    name: &str,
    threads: usize,
    cpu_bandwidth: &mut Option<f64>,
    progress: &mut impl FnMut(Progress),
) -> Result<Measured, BenchError> {
    let mut run = empty_run(name);
    let skip = |mut run: DeviceRun, why: String, progress: &mut dyn FnMut(Progress)| {
        run.skipped = Some(why);
        for _ in 0..plan.per_device {
            progress(Progress::Step(format!("{name}: skipped")));
        }
        Ok(Measured {
            run,
            interrupted: false,
        })
    };
    let device = match AnyDevice::open(name) {
        Ok(d) => d,
        Err(switchyard_runtime::Error::DeviceUnavailable { reason, .. }) => {
            return skip(run, reason, progress)
        }
        Err(other) => return skip(run, other.to_string(), progress),
    };
    let info = device.info().clone();
    run.display_name = info.display_name();
    progress(Progress::Loading(run.display_name.clone()));
    let cfg = &plan.model.config;
    let engine = match Engine::new(
        device,
        cfg,
        plan.model.weights.as_ref(),
        &EngineOptions {
            dtype: options.dtype,
            max_context: Some(plan.max_size),
            prefill_chunk: options.prefill_chunk,
            kv_buckets: options.kv_buckets.clone(),
        },
    ) {
        Ok(e) => e,
        Err(e) => return skip(run, format!("could not load the model: {e}"), progress),
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
    let mut interrupted = false;
    for (ti, test) in plan.tests.iter().enumerate() {
        let (samples, stopped) = test_samples(
            options,
            &engine,
            &mut session,
            *test,
            ti,
            &run.display_name,
            progress,
        )?;
        interrupted |= stopped;
        // Interrupted before a measured repetition of this test: nothing to summarize.
        let Some(result) = summary::summarize(*test, samples, &run, kv_bytes_per_position) else {
            break;
        };
        run.results.push(result);
        if interrupted {
            break;
        }
    }
    for (bi, test) in plan.batch_tests.iter().enumerate() {
        if interrupted {
            break;
        }
        let (samples, stopped) = super::batched::samples(
            options,
            &engine,
            *test,
            plan.tests.len() + bi,
            &run.display_name,
            progress,
        )?;
        interrupted |= stopped;
        let usd = run.price.as_ref().map(|p| p.usd_per_hour);
        match super::batched::summarize(*test, samples, usd) {
            Some(result) => run.batches.push(result),
            None => break,
        }
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
    Ok(Measured { run, interrupted })
}

/// The warm-up and measured runs of one test; `true` when the run was stopped during them (a
/// run cut short is not a measurement and is dropped).
fn test_samples(
    options: &BenchOptions,
    engine: &Engine<AnyDevice>,
    session: &mut Session<AnyDevice>,
    test: Test,
    index: usize,
    display_name: &str,
    progress: &mut impl FnMut(Progress),
) -> Result<(Vec<Sample>, bool), BenchError> {
    let stopped = || {
        options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    };
    let vocab = engine.config().vocab_size;
    let mut samples = Vec::new();
    for rep in 0..options.warmup + options.repetitions {
        if stopped() {
            return Ok((samples, true));
        }
        let warmup = rep < options.warmup;
        session.reset();
        let seed = options.seed ^ ((index as u64) << 32) ^ rep as u64;
        let sample = match test {
            Test::Pp(n) => {
                let tokens = random_tokens(n, vocab, seed | 1);
                let ((_, ttft), secs) = engine.device().timed(|| {
                    let start = Instant::now();
                    let logits = engine.prefill(session, &tokens).map_err(super::to_rt)?;
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
                let mut token = random_tokens(1, vocab, seed | 1)[0];
                let mut lat = Vec::with_capacity(n);
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    if stopped() {
                        break;
                    }
                    let (next, d) = engine.device().timed(|| {
                        let logits = engine.decode(session, token).map_err(super::to_rt)?;
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
            return Ok((samples, true));
        }
        samples.push(sample);
        progress(Progress::Step(format!("{display_name}: {}", test.label())));
    }
    Ok((samples, false))
}
