//! Text generation from a model through the library's one-call API, streamed to stdout.
//!
//! Run with: `cargo run --release --example generate -- tests/fixtures/llama "Hello" [cpu]`
//! (a model directory, a `.gguf` file, a hub id or `builtin:NAME`; any device string).

use std::io::Write;
use std::ops::ControlFlow;
use switchyard::{TextGenerator, TextOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "tests/fixtures/llama".into());
    let prompt = args.next().unwrap_or_else(|| "Hello".into());
    let device = args.next().unwrap_or_else(|| "cpu".into());

    let mut generator = TextGenerator::load(&model, &device)?;
    let options = TextOptions {
        max_new_tokens: Some(32),
        ..Default::default()
    };
    let out = generator.complete_stream(&prompt, &options, |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
        ControlFlow::Continue(())
    })?;
    println!(
        "\n{} tokens, {:.1} tokens/s ({:?})",
        out.generated_ids.len(),
        out.timings.decode_tokens_per_second(),
        out.stop_reason
    );
    Ok(())
}
