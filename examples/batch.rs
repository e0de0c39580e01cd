//! Several prompts generated together in one batch: each sequence in its own slot of the KV pool,
//! all advancing in one call per step, each with its own sampling settings and stop conditions;
//! a late prompt joins while the others decode, and takes the slot of one that finished.
//!
//! Run with: `cargo run --release --example batch -- [MODEL] [DEVICE]` (default
//! `tests/fixtures/llama` on `cpu`; a model directory, a `.gguf` file, a hub id or
//! `builtin:NAME`; any device string).

use std::collections::BTreeMap;
use switchyard::models::{
    BatchOptions, Engine, EngineOptions, Model, SamplingParams, SequenceId, SequenceParams,
};
use switchyard::{AnyDevice, Device};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "tests/fixtures/llama".into());
    let device = args.next().unwrap_or_else(|| "cpu".into());

    let model = Model::load(&model)?;
    let tokenizer = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the model has no tokenizer"))?;
    let engine = Engine::new(
        AnyDevice::open(&device)?,
        &model.config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context: Some(256),
            ..Default::default()
        },
    )?;
    let options = BatchOptions {
        slots: Some(3),
        ..Default::default()
    };
    let mut batch = engine.batch(Some(tokenizer), &options)?;
    println!(
        "{} slots of {} positions: {} bytes of KV pool on {}",
        batch.slots(),
        batch.max_context(),
        batch.pool_bytes(),
        engine.device().info().display_name()
    );

    let prompts = [
        ("Once upon a time", SamplingParams::default(), 24),
        (
            "The capital of France is",
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                seed: 7,
                ..Default::default()
            },
            12,
        ),
        ("def fibonacci(n):", SamplingParams::default(), 16),
        ("A late prompt", SamplingParams::default(), 8),
    ];
    let mut texts: BTreeMap<SequenceId, (usize, String)> = BTreeMap::new();
    let mut next = 0;
    let mut step = 0;
    while next < prompts.len() || batch.has_work() {
        // Admit waiting prompts while slots are free (the last one only from step 4 on).
        while next < prompts.len() && batch.free_slots() > 0 && (next < 3 || step >= 4) {
            let (text, sampling, max_new_tokens) = &prompts[next];
            let ids = tokenizer.encode(text, true)?;
            let params = SequenceParams {
                max_new_tokens: *max_new_tokens,
                sampling: sampling.clone(),
                eos_token_ids: model
                    .generation_config
                    .as_ref()
                    .map(|g| g.eos_token_ids.clone())
                    .unwrap_or_default(),
                ..Default::default()
            };
            let id = batch.add(ids, params)?;
            texts.insert(id, (next, text.to_string()));
            next += 1;
        }
        for event in batch.step()? {
            let entry = texts.get_mut(&event.id).expect("added above");
            entry.1.push_str(&event.text);
            if let Some(why) = event.finished {
                println!("[{}] {:?}: {}", entry.0, why, entry.1);
            }
        }
        step += 1;
    }
    Ok(())
}
