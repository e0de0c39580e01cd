//! Measures the built-in SmolLM2-135M shape on the CPU through the library API and prints the
//! markdown table `switchyard bench` prints.
//!
//! Run with: `cargo run --release --example bench`

use switchyard::bench::{run, BenchOptions};

fn main() -> anyhow::Result<()> {
    let options = BenchOptions {
        prompt_sizes: vec![128],
        gen_sizes: vec![32],
        repetitions: 3,
        ..BenchOptions::default()
    };
    let report = run(&options, |_progress| {})?;
    print!("{}", report.markdown());
    let tg = &report.devices[0].results[1];
    println!(
        "decode: {:.1} tokens/s (median {:.1})",
        tg.tokens_per_s.mean, tg.tokens_per_s.median
    );
    Ok(())
}
