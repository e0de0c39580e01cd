//! `switchyard bench` on an encoder: sequences and tokens per second per batch size and input
//! length on each device, side by side, with warm-up, repetitions, median and spread.

use super::stats::Summary;
use super::{build_id, resolve_devices, BenchError};
use crate::{AnyDevice, Device};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use switchyard_models::{Embedder, EmbedderOptions, EncoderModel};
use switchyard_runtime::DType;

/// What to measure.
#[derive(Debug, Clone)]
pub struct EncoderBenchOptions {
    /// The encoder (a directory or hub id).
    pub model: String,
    /// Devices, as `switchyard bench --devices` takes them.
    pub devices: Vec<String>,
    /// Texts per call.
    pub batches: Vec<usize>,
    /// Tokens per text (special tokens included).
    pub lengths: Vec<usize>,
    /// Measured repetitions per test.
    pub repetitions: usize,
    /// Warm-up calls per test.
    pub warmup: usize,
    /// Compute dtype.
    pub dtype: Option<DType>,
    /// Seed of the random token ids.
    pub seed: u64,
    /// Set to stop after the current call.
    pub stop: Option<Arc<AtomicBool>>,
}

/// One batch size × length on one device.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderResult {
    /// Texts per call.
    pub batch: usize,
    /// Tokens per text.
    pub tokens: usize,
    /// Seconds per call, every measured repetition.
    pub seconds: Vec<f64>,
    /// Texts per second over the repetitions.
    pub sequences_per_s: Option<Summary>,
    /// Tokens per second over the repetitions.
    pub tokens_per_s: Option<Summary>,
}

/// Everything measured on one device.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderDeviceRun {
    /// The device string.
    pub device: String,
    /// Its display name (`(emulated)` where it is).
    pub display_name: String,
    /// Why it was skipped, if it was.
    pub skipped: Option<String>,
    /// Compute dtype.
    pub dtype: Option<String>,
    /// Weights uploaded.
    pub load_s: f64,
    /// Graphs compiled.
    pub compile_s: f64,
    /// Per test.
    pub results: Vec<EncoderResult>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderReport {
    /// Switchyard's version and build commit.
    pub switchyard: String,
    /// The host machine.
    pub machine: String,
    /// The model argument.
    pub model: String,
    /// Architecture and shape.
    pub model_description: String,
    /// Measured repetitions per test.
    pub repetitions: usize,
    /// Warm-up calls per test.
    pub warmup: usize,
    /// Per device.
    pub devices: Vec<EncoderDeviceRun>,
    /// Stopped early: only complete tests are reported.
    pub interrupted: bool,
}

/// Runs the encoder benchmark; `step` is called after every timed call with a description.
pub fn run_encoder_bench(
    options: &EncoderBenchOptions,
    mut step: impl FnMut(&str),
) -> Result<EncoderReport, BenchError> {
    let model = EncoderModel::load(&options.model)?;
    let cfg = &model.config;
    if let Some(&bad) = options
        .lengths
        .iter()
        .find(|&&l| l == 0 || l > model.max_tokens())
    {
        anyhow::bail!(
            "-p {bad}: an encoder input is 1 to {} tokens for {}",
            model.max_tokens(),
            options.model
        );
    }
    if options.batches.contains(&0) || options.batches.is_empty() {
        anyhow::bail!("--batch: sizes must be at least 1");
    }
    let devices = resolve_devices(&options.devices)?;
    let cpu = crate::candle::CandleDevice::cpu();
    let mut report = EncoderReport {
        switchyard: build_id(),
        machine: cpu.info().description.clone(),
        model: options.model.clone(),
        model_description: format!(
            "{}, {} layers, hidden {}, {} heads",
            cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.num_heads
        ),
        repetitions: options.repetitions,
        warmup: options.warmup,
        devices: Vec::new(),
        interrupted: false,
    };
    let max_len = *options.lengths.iter().max().unwrap_or(&1);
    let max_batch = *options.batches.iter().max().unwrap_or(&1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
    let stopped = || {
        options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    for device in devices {
        let mut run = EncoderDeviceRun {
            device: device.clone(),
            display_name: device.clone(),
            skipped: None,
            dtype: None,
            load_s: 0.0,
            compile_s: 0.0,
            results: Vec::new(),
        };
        let opened = AnyDevice::open(&device).map_err(|e| e.to_string());
        let embedder = opened.and_then(|d| {
            // Static-shape devices compile exactly the shapes measured.
            Embedder::new(
                d,
                &model,
                &EmbedderOptions {
                    dtype: options.dtype,
                    max_batch,
                    max_tokens: Some(max_len),
                    pooling: Some(
                        model
                            .sentence
                            .as_ref()
                            .map_or(switchyard_models::Pooling::Mean, |s| s.pooling),
                    ),
                    batch_buckets: Some(options.batches.clone()),
                    token_buckets: Some(options.lengths.clone()),
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())
        });
        let embedder = match embedder {
            Ok(e) => e,
            Err(why) => {
                run.skipped = Some(why);
                report.devices.push(run);
                continue;
            }
        };
        run.display_name = embedder.device().info().display_name();
        run.dtype = Some(embedder.compute_dtype().to_string());
        run.load_s = embedder.load_time().as_secs_f64();
        run.compile_s = embedder.compile_time().as_secs_f64();
        'tests: for &len in &options.lengths {
            for &batch in &options.batches {
                let inputs: Vec<Vec<u32>> = (0..batch)
                    .map(|_| {
                        (0..len)
                            .map(|_| rng.random_range(0..cfg.vocab_size as u32))
                            .collect()
                    })
                    .collect();
                let mut seconds = Vec::with_capacity(options.repetitions);
                for i in 0..options.warmup + options.repetitions {
                    if stopped() {
                        report.interrupted = true;
                        break 'tests;
                    }
                    let start = Instant::now();
                    embedder.embed_ids(&inputs)?;
                    let s = start.elapsed().as_secs_f64();
                    if i >= options.warmup {
                        seconds.push(s);
                    }
                    step(&format!("{} b{batch} t{len}", run.display_name));
                }
                let per = |n: usize| -> Vec<f64> { seconds.iter().map(|s| n as f64 / s).collect() };
                run.results.push(EncoderResult {
                    batch,
                    tokens: len,
                    sequences_per_s: Summary::of(&per(batch)),
                    tokens_per_s: Summary::of(&per(batch * len)),
                    seconds,
                });
            }
        }
        report.devices.push(run);
        if report.interrupted {
            break;
        }
    }
    Ok(report)
}

impl EncoderReport {
    /// Timed calls the run makes (for a progress bar).
    pub fn calls(options: &EncoderBenchOptions, devices: usize) -> u64 {
        (devices
            * options.lengths.len()
            * options.batches.len()
            * (options.warmup + options.repetitions)) as u64
    }

    /// A markdown table, one row per device × test.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} | machine: {} | model: {} ({}) | r={} after {} warm-up\n",
            self.switchyard,
            self.machine,
            self.model,
            self.model_description,
            self.repetitions,
            self.warmup
        );
        s.push_str("| device | batch | tokens/text | sequences/s | tokens/s | ms/call |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|\n");
        for run in &self.devices {
            if let Some(why) = &run.skipped {
                let _ = writeln!(s, "| {} | skipped: {why} | | | | |", run.display_name);
                continue;
            }
            for r in &run.results {
                let (Some(seq), Some(tok), Some(t)) =
                    (r.sequences_per_s, r.tokens_per_s, Summary::of(&r.seconds))
                else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} ± {:.1} | {:.0} ± {:.0} | {:.1} |",
                    run.display_name,
                    r.batch,
                    r.tokens,
                    seq.median,
                    seq.stdev,
                    tok.median,
                    tok.stdev,
                    t.median * 1e3
                );
            }
        }
        for run in self.devices.iter().filter(|r| r.skipped.is_none()) {
            let _ = writeln!(
                s,
                "\n{}: {} compute, weights loaded in {:.2} s, graphs compiled in {:.2} s",
                run.display_name,
                run.dtype.as_deref().unwrap_or("-"),
                run.load_s,
                run.compile_s
            );
        }
        if self.interrupted {
            s.push_str("\ninterrupted: tests not reached are missing\n");
        }
        s
    }

    /// One row per measured call.
    pub fn csv(&self) -> String {
        let mut s =
            String::from("device,batch,tokens,repetition,seconds,sequences_per_s,tokens_per_s\n");
        for run in &self.devices {
            for r in &run.results {
                for (i, sec) in r.seconds.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{},{},{},{},{:.6},{:.3},{:.1}",
                        run.display_name,
                        r.batch,
                        r.tokens,
                        i,
                        sec,
                        r.batch as f64 / sec,
                        (r.batch * r.tokens) as f64 / sec
                    );
                }
            }
        }
        s
    }

    /// The whole report.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializable")
    }

    /// One object per device × test.
    pub fn jsonl(&self) -> String {
        let mut s = String::new();
        for run in &self.devices {
            for r in &run.results {
                let _ = writeln!(
                    s,
                    "{}",
                    serde_json::json!({
                        "device": run.display_name,
                        "model": self.model,
                        "batch": r.batch,
                        "tokens": r.tokens,
                        "seconds": r.seconds,
                        "sequences_per_s": r.sequences_per_s,
                        "tokens_per_s": r.tokens_per_s,
                    })
                );
            }
        }
        s
    }
}
