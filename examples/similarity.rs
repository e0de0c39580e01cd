//! Semantic search in a few lines: embed a query and some passages with an encoder (a
//! sentence-transformers directory, a BERT/RoBERTa/XLM-RoBERTa directory or a `bert` GGUF file)
//! and rank the passages by cosine similarity.
//!
//! Run with: `cargo run --release --example similarity -- tests/fixtures/bert [cpu]`
//! (any device string: `neuron:0` with the emulator, `cuda:0` in a CUDA build).

use switchyard::models::{Embedder, EmbedderOptions, EncoderModel};
use switchyard::AnyDevice;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "tests/fixtures/bert".into());
    let device = args.next().unwrap_or_else(|| "cpu".into());

    let model = EncoderModel::load(&model)?;
    let embedder = Embedder::new(
        AnyDevice::open(&device)?,
        &model,
        &EmbedderOptions::default(),
    )?;
    let query = "how do search engines find documents?";
    let passages = [
        "Retrieval ranks passages by the cosine similarity of their embeddings.",
        "The quick brown fox jumps over the lazy dog.",
        "Search engines embed queries and documents into the same vector space.",
    ];
    let mut texts = vec![query];
    texts.extend(passages);
    // One call embeds all of them, padded to the longest.
    let vectors = embedder.embed(&texts)?;
    let cosine = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    };
    let mut ranked: Vec<(f32, &str)> = passages
        .iter()
        .zip(&vectors[1..])
        .map(|(p, v)| (cosine(&vectors[0], v), *p))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!(
        "{} dimensions, {} pooling; query: {query}",
        embedder.dimensions(),
        embedder.pooling()
    );
    for (score, passage) in ranked {
        println!("{score:+.4}  {passage}");
    }
    Ok(())
}
