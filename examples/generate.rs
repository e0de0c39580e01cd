//! Greedy generation from a model directory through the library API.
//!
//! Run with: `cargo run --release --example generate -- tests/fixtures/llama "Hello"`

use std::ops::ControlFlow;
use switchyard::models::{generate, Engine, EngineOptions, GenerateOptions, Model};
use switchyard::AnyDevice;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "tests/fixtures/llama".into());
    let prompt = args.next().unwrap_or_else(|| "Hello".into());

    let model = Model::load(&dir)?;
    let engine = Engine::new(
        AnyDevice::open("cpu")?,
        &model.config,
        model.weights.as_ref(),
        &EngineOptions::default(),
    )?;
    let tokenizer = model
        .tokenizer
        .as_ref()
        .expect("the model has a tokenizer.json");
    let prompt_ids = tokenizer.encode(&prompt, true)?;
    let options = GenerateOptions {
        max_new_tokens: 32,
        eos_token_ids: model.eos_token_ids(),
        ..Default::default()
    };
    let mut session = engine.new_session()?;
    let out = generate(
        &engine,
        &mut session,
        Some(tokenizer),
        &prompt_ids,
        &options,
        |text| {
            print!("{text}");
            ControlFlow::Continue(())
        },
    )?;
    println!(
        "\n{} tokens, {:.1} tokens/s",
        out.generated_ids.len(),
        out.timings.decode_tokens_per_second()
    );
    Ok(())
}
