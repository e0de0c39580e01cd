//! Batched steps against single sequences, for every fixture architecture on the CPU and on
//! `neuron:0` (the libnrt emulator, static token and KV buckets): B = 1, 3, 4 and 16 sequences
//! at once with different prompt lengths, joining at different steps (while others decode),
//! finishing at different lengths, two more than the slots so finished slots are reused; each
//! sequence's tokens equal its tokens alone, and its logits agree within a derived bound.
//!
//! The bound: a batched step computes the same sums as a single-sequence step, but the matrix
//! products run over more rows (a GEMM instead of a GEMV on the CPU) and prompts run in other
//! chunks, so the terms add in another order. Each such sum of at most `K` terms carries a
//! relative rounding error of at most `K·u` (u = 2⁻²⁴, f32); a logit goes through `8` of them per
//! layer (q, k, v, o, scores, weighted sum, two MLP products, normalized in between) plus the
//! head. To first order the differences add: `|Δ| ≤ (8·layers + 1) · K · u · max(1, max|logit|)`,
//! with `K` the longest sum (the intermediate size or the context). A wrong slot, position or
//! row is off by far more.

use std::collections::BTreeMap;
use std::path::PathBuf;
use switchyard::candle::CandleDevice;
use switchyard::models::{
    BatchOptions, Engine, EngineOptions, Model, ModelError, PoolShapes, Sampler, SamplingParams,
    SequenceId, SequenceParams,
};
use switchyard::neuron::NeuronDevice;
use switchyard::Device;

const ARCHS: [&str; 8] = [
    "llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];
const MAX_CONTEXT: usize = 64;

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(arch)
}

fn neuron() -> NeuronDevice {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    NeuronDevice::open_with_library(0, Some(&lib)).expect("the emulated NeuronCore opens")
}

fn engine<D: Device>(device: D, model: &Model) -> Engine<D> {
    Engine::new(
        device,
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context: Some(MAX_CONTEXT),
            prefill_chunk: Some(8),
            kv_buckets: Some(vec![16, 32]),
            ..Default::default()
        },
    )
    .unwrap()
}

/// One sequence alone through a session: its tokens (chosen by `sampler`) and the logits each
/// was chosen from.
fn alone<D: Device>(
    engine: &Engine<D>,
    prompt: &[u32],
    n: usize,
    mut sampler: Sampler,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut s = engine.new_session().unwrap();
    let mut logits = engine.prefill(&mut s, prompt).unwrap();
    let mut context = prompt.to_vec();
    let (mut tokens, mut all) = (Vec::new(), Vec::new());
    loop {
        let t = sampler.sample(&logits, &context).unwrap();
        tokens.push(t);
        context.push(t);
        all.push(logits);
        if tokens.len() == n {
            return (tokens, all);
        }
        logits = engine.decode(&mut s, t).unwrap();
    }
}

struct Plan {
    prompt: Vec<u32>,
    new_tokens: usize,
    /// The step before which it asks to join (it waits for a free slot after that).
    join_at: usize,
    sampling: SamplingParams,
}

/// Runs `plans` through a batch of `slots`; returns each sequence's tokens and logits.
fn batched<D: Device>(
    engine: &Engine<D>,
    slots: usize,
    plans: &[Plan],
    return_logits: bool,
) -> Vec<(Vec<u32>, Vec<Vec<f32>>)> {
    let mut batch = engine
        .batch(
            None,
            &BatchOptions {
                slots: Some(slots),
                step_tokens: Some(slots.max(6)),
                ..Default::default()
            },
        )
        .unwrap();
    let mut ids: Vec<Option<SequenceId>> = vec![None; plans.len()];
    let mut out: BTreeMap<SequenceId, (Vec<u32>, Vec<Vec<f32>>)> = BTreeMap::new();
    let (mut step, mut done, mut reused) = (0, 0, false);
    while done < plans.len() {
        for (i, p) in plans.iter().enumerate() {
            if ids[i].is_none() && p.join_at <= step {
                let params = SequenceParams {
                    max_new_tokens: p.new_tokens,
                    sampling: p.sampling.clone(),
                    ignore_eos: true,
                    return_logits,
                    ..Default::default()
                };
                match batch.add(p.prompt.clone(), params) {
                    Ok(id) => {
                        reused |= done > 0;
                        ids[i] = Some(id);
                        out.insert(id, Default::default());
                    }
                    Err(ModelError::NoFreeSlot { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        for e in batch.step().unwrap() {
            let entry = out.get_mut(&e.id).unwrap();
            entry.0.push(e.token);
            if let Some(l) = e.logits {
                entry.1.push(l);
            }
            if e.finished.is_some() {
                assert!(!batch.contains(e.id), "a finished sequence frees its slot");
                done += 1;
            }
        }
        step += 1;
        assert!(step < 1000, "the batch does not finish");
    }
    assert!(
        reused || plans.len() <= slots,
        "a slot was expected to be reused"
    );
    ids.iter().map(|id| out[&id.unwrap()].clone()).collect()
}

fn plans(base: &[u32], count: usize, sampling: impl Fn(usize) -> SamplingParams) -> Vec<Plan> {
    (0..count)
        .map(|i| Plan {
            prompt: base
                .iter()
                .cycle()
                .skip(i)
                .take(1 + (i * 5) % 13)
                .copied()
                .collect(),
            new_tokens: 2 + (i * 7) % 11,
            join_at: (i % 4) * 2,
            sampling: sampling(i),
        })
        .collect()
}

fn greedy(_: usize) -> SamplingParams {
    SamplingParams::default()
}

/// The derived bound on a logit difference (see the file's documentation) for logits `y`.
fn tolerance<D: Device>(engine: &Engine<D>, y: &[f32]) -> f32 {
    let c = engine.config();
    let k = c.intermediate_size.max(c.hidden_size).max(MAX_CONTEXT) as f32;
    let sums = (8 * c.num_layers + 1) as f32;
    let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
    sums * k * f32::EPSILON / 2.0 * scale
}

/// Checks every scenario on `engine`; returns the worst logit difference as a share of its
/// bound.
fn check<D: Device>(engine: &Engine<D>, base: &[u32], what: &str) -> f32 {
    let mut worst = 0f32;
    for b in [1, 3, 4, 16] {
        let plans = plans(base, b + 2, greedy);
        let got = batched(engine, b, &plans, true);
        for (i, (p, (tokens, logits))) in plans.iter().zip(&got).enumerate() {
            let (want, want_logits) = alone(
                engine,
                &p.prompt,
                p.new_tokens,
                Sampler::new(greedy(i)).unwrap(),
            );
            assert_eq!(
                tokens, &want,
                "{what}, B = {b}, sequence {i}: tokens differ"
            );
            for (step, (x, y)) in logits.iter().zip(&want_logits).enumerate() {
                let err = x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let tol = tolerance(engine, y);
                assert!(
                    err <= tol,
                    "{what}, B = {b}, sequence {i}, token {step}: logits differ by {err:e}, more than {tol:e}"
                );
                worst = worst.max(err / tol);
            }
        }
    }
    // Greedy on the device (only ids read back) gives the same tokens.
    let plans = plans(base, 6, greedy);
    let on_device = batched(engine, 4, &plans, false);
    let with_logits = batched(engine, 4, &plans, true);
    for (i, (a, b)) in on_device.iter().zip(&with_logits).enumerate() {
        assert_eq!(
            a.0, b.0,
            "{what}: sequence {i} differs between ids and logits"
        );
    }
    worst
}

fn every_architecture<D: Device>(open: impl Fn() -> D) {
    for arch in ARCHS {
        let model = Model::load(fixture(arch).to_str().unwrap()).unwrap();
        let tok = model.tokenizer.as_ref().unwrap();
        let base = tok
            .encode(
                "Hello world! The quick brown fox jumps over the lazy dog.",
                true,
            )
            .unwrap();
        let e = engine(open(), &model);
        let worst = check(&e, &base, arch);
        eprintln!(
            "{arch} on {}: worst logit difference {:.1}% of its bound",
            e.device().info().name,
            worst * 100.0
        );
    }
}

#[test]
fn batched_sequences_match_single_sequences_on_the_cpu() {
    every_architecture(CandleDevice::cpu);
}

#[test]
fn batched_sequences_match_single_sequences_on_emulated_neuron() {
    every_architecture(neuron);
}

#[test]
fn seeded_sampling_gives_each_sequence_its_tokens_alone() {
    let model = Model::load(fixture("llama").to_str().unwrap()).unwrap();
    let e = engine(CandleDevice::cpu(), &model);
    let base: Vec<u32> = (5..40).collect();
    let sampling = |i: usize| SamplingParams {
        temperature: 0.9,
        top_k: Some(40),
        top_p: 0.95,
        seed: 1000 + i as u64,
        ..Default::default()
    };
    let plans = plans(&base, 6, sampling);
    let got = batched(&e, 4, &plans, false);
    let mut differ = 0;
    for (i, (p, (tokens, _))) in plans.iter().zip(&got).enumerate() {
        let (want, _) = alone(
            &e,
            &p.prompt,
            p.new_tokens,
            Sampler::new(sampling(i)).unwrap(),
        );
        assert_eq!(tokens, &want, "sequence {i}: sampled tokens differ");
        let greedy_tokens = alone(
            &e,
            &p.prompt,
            p.new_tokens,
            Sampler::new(greedy(i)).unwrap(),
        )
        .0;
        differ += usize::from(greedy_tokens != want);
    }
    assert!(
        differ > 0,
        "sampling never left the argmax: the test would not see seeds mixed up"
    );
}

#[test]
fn static_batches_pad_to_buckets_and_refuse_what_they_cannot_hold() {
    let model = Model::load(fixture("llama").to_str().unwrap()).unwrap();
    let e = engine(neuron(), &model);
    let mut batch = e
        .batch(
            None,
            &BatchOptions {
                slots: Some(3),
                step_tokens: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        batch.shapes(),
        &PoolShapes::Static {
            token_buckets: vec![1, 3, 8],
            kv_buckets: vec![16, 32, 64],
        }
    );
    let long = SequenceParams {
        max_new_tokens: 60,
        ..Default::default()
    };
    let err = batch.add(vec![1; 10], long).unwrap_err().to_string();
    assert!(err.contains("needs 69 positions"), "{err}");
    let short = SequenceParams {
        max_new_tokens: 8,
        ..Default::default()
    };
    for _ in 0..3 {
        batch.add(vec![3, 4], short.clone()).unwrap();
    }
    let err = batch.add(vec![3], short).unwrap_err();
    assert!(matches!(err, ModelError::NoFreeSlot { slots: 3 }), "{err}");
    batch.step().unwrap();
    assert_eq!(batch.last_step().prompt_tokens, 6);
    assert_eq!(batch.last_step().width, 8);
    batch.step().unwrap();
    assert_eq!(batch.last_step().decode_rows, 3);
    assert_eq!(batch.last_step().width, 3);
    let first = SequenceId(0);
    assert!(batch.cancel(first));
    assert!(!batch.cancel(first));
    batch.step().unwrap();
    assert_eq!(
        batch.last_step().width,
        3,
        "two rows pad to the bucket of 3"
    );
    assert_eq!(batch.last_step().decode_rows, 2);
}

#[test]
fn pools_larger_than_the_device_are_refused_naming_the_bytes() {
    let model = Model::load(fixture("llama").to_str().unwrap()).unwrap();
    let e = engine(CandleDevice::cpu(), &model);
    let err = e
        .batch(
            None,
            &BatchOptions {
                slots: Some(1 << 40),
                ..Default::default()
            },
        )
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("bytes of KV pool"), "{err}");
    assert!(err.contains("--slots"), "{err}");
}

#[test]
fn bad_sequences_are_refused_naming_what_is_wrong_and_change_nothing() {
    let model = Model::load(fixture("llama").to_str().unwrap()).unwrap();
    let e = engine(CandleDevice::cpu(), &model);
    let mut batch = e
        .batch(
            None,
            &BatchOptions {
                slots: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    let ok = SequenceParams::default();
    let cases: [(Vec<u32>, SequenceParams, &str); 5] = [
        (vec![], ok.clone(), "no tokens"),
        (
            vec![1, 100_000],
            ok.clone(),
            "100000 is outside the vocabulary",
        ),
        (vec![1; MAX_CONTEXT + 1], ok.clone(), "65 tokens"),
        (
            vec![1],
            SequenceParams {
                max_new_tokens: 0,
                ..Default::default()
            },
            "--max-new-tokens",
        ),
        (
            vec![1],
            SequenceParams {
                sampling: SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            "--top-p",
        ),
    ];
    for (prompt, params, want) in cases {
        let err = batch.add(prompt, params).unwrap_err().to_string();
        assert!(err.contains(want), "{err} (wanted {want})");
    }
    assert_eq!(batch.free_slots(), 2, "a refused sequence takes no slot");
    assert!(batch.step().unwrap().is_empty(), "nothing to run");
    let err = e
        .batch(
            None,
            &BatchOptions {
                slots: Some(8),
                step_tokens: Some(4),
                ..Default::default()
            },
        )
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("step_tokens"), "{err}");
}
