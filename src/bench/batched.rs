//! Batched tests (`--batch 1,4,16`), with llama-batched-bench's semantics: `B` sequences, each a
//! prompt of `pp` random tokens then `tg` generated tokens, all decoding together in one batch.
//! Per repetition: the prompt phase (until every sequence has its first token: prompt tokens/s
//! over all `B·pp` tokens, each sequence's time to first token), then the generation phase (every
//! step after that: aggregate tokens/s over all sequences, per-sequence tokens/s, per-step
//! latency).

use super::measure::random_tokens;
use super::{percentile, usd_per_million_tokens, BenchError, BenchOptions, Progress, Summary};
use crate::models::{BatchOptions, Engine, SequenceParams};
use crate::{AnyDevice, Device};
use serde::Serialize;
use std::time::Duration;

/// One batched test: `batch` sequences of `prompt` tokens then `gen` tokens each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchTest {
    /// Sequences decoding together.
    pub batch: usize,
    /// Prompt tokens per sequence.
    pub prompt: usize,
    /// Generated tokens per sequence (after the first, which the prompt yields).
    pub gen: usize,
}

impl BatchTest {
    /// `pp128+tg128 B=16`.
    pub fn label(&self) -> String {
        format!("pp{}+tg{} B={}", self.prompt, self.gen, self.batch)
    }
}

/// One repetition of a batched test.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSample {
    /// Repetition index (warm-up runs first).
    pub rep: usize,
    /// A discarded warm-up run.
    pub warmup: bool,
    /// Sequences decoding together.
    pub batch: usize,
    /// Prompt tokens of all sequences.
    pub prompt_tokens: usize,
    /// Prompt phase: from the first step until every sequence has its first token.
    pub prompt_s: f64,
    /// Tokens generated in the generation phase, all sequences.
    pub gen_tokens: usize,
    /// Generation phase: the steps after the prompt phase.
    pub gen_s: f64,
    /// Each sequence's time to first token.
    pub ttft_s: Vec<f64>,
    /// Each generation step's latency.
    pub step_latencies_s: Vec<f64>,
}

/// A batched test's samples and what follows from them.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    /// Sequences decoding together (on every record, for scripts).
    pub batch: usize,
    /// The test.
    pub test: BatchTest,
    /// Every run, warm-up included.
    pub samples: Vec<BatchSample>,
    /// Prompt tokens/s over all sequences.
    pub prompt_tokens_per_s: Summary,
    /// Generated tokens/s over all sequences (the aggregate rate).
    pub gen_tokens_per_s: Summary,
    /// Generated tokens/s each sequence sees (aggregate / B).
    pub per_sequence_tokens_per_s: Summary,
    /// Time to first token over every sequence of the measured runs.
    pub ttft_s: Summary,
    /// Generation step latency percentiles 50/90/99.
    pub step_latency_p50_p90_p99_s: [f64; 3],
    /// Cost per million generated tokens at the mean aggregate rate (not for emulated devices).
    pub usd_per_million_tokens: Option<f64>,
}

/// Runs `test`'s warm-up and measured repetitions on `engine`; `true` with them when the run was
/// stopped (a repetition cut short is dropped).
pub(crate) fn samples(
    options: &BenchOptions,
    engine: &Engine<AnyDevice>,
    test: BatchTest,
    index: usize,
    display_name: &str,
    progress: &mut impl FnMut(Progress),
) -> Result<(Vec<BatchSample>, bool), BenchError> {
    let stopped = || {
        options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    };
    let static_shapes = matches!(engine.shapes(), crate::models::Shapes::Static { .. });
    // Dynamic devices take every prompt in one step, as llama-batched-bench does with its
    // default batch of 2048; static ones take the compiled chunk per step.
    let step_tokens = if static_shapes {
        options
            .prefill_chunk
            .unwrap_or(crate::models::DEFAULT_PREFILL_CHUNK)
            .max(test.batch)
    } else {
        (test.batch * test.prompt).max(test.batch)
    };
    let mut batch = engine
        .batch(
            None,
            &BatchOptions {
                slots: Some(test.batch),
                step_tokens: Some(step_tokens),
                token_buckets: None,
            },
        )
        .map_err(super::to_rt)?;
    let vocab = engine.config().vocab_size;
    let mut out = Vec::new();
    for rep in 0..options.warmup + options.repetitions {
        if stopped() {
            return Ok((out, true));
        }
        let seed = options.seed ^ ((index as u64) << 40) ^ ((rep as u64) << 20);
        for s in 0..test.batch {
            let prompt = random_tokens(test.prompt, vocab, seed ^ (s as u64) | 1);
            let params = SequenceParams {
                max_new_tokens: test.gen + 1,
                ignore_eos: true,
                ..Default::default()
            };
            batch.add(prompt, params).map_err(super::to_rt)?;
        }
        let (mut elapsed, mut prompt_s) = (Duration::ZERO, None);
        let mut ttft = Vec::with_capacity(test.batch);
        let mut steps = Vec::new();
        let mut gen_tokens = 0;
        let mut started = std::collections::HashSet::new();
        while batch.has_work() {
            if stopped() {
                return Ok((out, true));
            }
            let (events, d) = engine
                .device()
                .timed(|| batch.step().map_err(super::to_rt))?;
            elapsed += d;
            match prompt_s {
                None => {
                    // A sequence's first token ends its prompt; on static devices, sequences
                    // whose prompts ended early may already decode here, and those tokens count
                    // for neither phase.
                    for e in &events {
                        if started.insert(e.id) {
                            ttft.push(elapsed.as_secs_f64());
                        }
                    }
                    if started.len() == test.batch {
                        prompt_s = Some(elapsed);
                    }
                }
                Some(_) => {
                    steps.push(d.as_secs_f64());
                    gen_tokens += events.len();
                }
            }
        }
        let prompt_s = prompt_s.unwrap_or(elapsed);
        out.push(BatchSample {
            rep,
            warmup: rep < options.warmup,
            batch: test.batch,
            prompt_tokens: test.batch * test.prompt,
            prompt_s: prompt_s.as_secs_f64(),
            gen_tokens,
            gen_s: steps.iter().sum(),
            ttft_s: ttft,
            step_latencies_s: steps,
        });
        progress(Progress::Step(format!("{display_name}: {}", test.label())));
    }
    Ok((out, false))
}

/// The result of `test` from `samples`, `None` when no measured repetition completed.
pub(crate) fn summarize(
    test: BatchTest,
    samples: Vec<BatchSample>,
    usd_per_hour: Option<f64>,
) -> Option<BatchResult> {
    let measured: Vec<&BatchSample> = samples.iter().filter(|s| !s.warmup).collect();
    let rate = |n: usize, s: f64| n as f64 / s.max(1e-12);
    let gen = Summary::of(
        &measured
            .iter()
            .map(|s| rate(s.gen_tokens, s.gen_s))
            .collect::<Vec<_>>(),
    )?;
    let per_seq = Summary::of(
        &measured
            .iter()
            .map(|s| rate(s.gen_tokens, s.gen_s) / s.batch as f64)
            .collect::<Vec<_>>(),
    )?;
    let prompt = Summary::of(
        &measured
            .iter()
            .map(|s| rate(s.prompt_tokens, s.prompt_s))
            .collect::<Vec<_>>(),
    )?;
    let ttft = Summary::of(
        &measured
            .iter()
            .flat_map(|s| s.ttft_s.iter().copied())
            .collect::<Vec<_>>(),
    )?;
    let mut steps: Vec<f64> = measured
        .iter()
        .flat_map(|s| s.step_latencies_s.iter().copied())
        .collect();
    steps.sort_by(f64::total_cmp);
    Some(BatchResult {
        batch: test.batch,
        test,
        prompt_tokens_per_s: prompt,
        gen_tokens_per_s: gen,
        per_sequence_tokens_per_s: per_seq,
        ttft_s: ttft,
        step_latency_p50_p90_p99_s: [50.0, 90.0, 99.0].map(|p| percentile(&steps, p)),
        usd_per_million_tokens: usd_per_hour.map(|usd| usd_per_million_tokens(usd, gen.mean)),
        samples,
    })
}
