//! `switchyard embed`: sentence embeddings of one text per input line, on any device.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use switchyard::models::{Embedder, EmbedderOptions, EncoderModel, Pooling};
use switchyard::{AnyDevice, Device};

#[derive(Args)]
pub struct EmbedArgs {
    /// An encoder: a sentence-transformers directory, a Hugging Face BERT/RoBERTa/XLM-RoBERTa
    /// directory (with --pooling), or a hub id in the local cache.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    device: super::options::DeviceArg,
    /// Texts, one per line ('-': standard input).
    #[arg(long, default_value = "-")]
    input: String,
    /// Output format: jsonl (one object per input, as they finish), json (one document, OpenAI's
    /// embeddings shape) or npy (a float32 [inputs, dimensions] NumPy array).
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts per device call.
    #[arg(long, default_value_t = switchyard::models::DEFAULT_MAX_BATCH)]
    batch_size: usize,
    /// Scale every vector to unit length (default: as the model directory says).
    #[arg(long)]
    normalize: bool,
    /// Pooling: mean, cls, lasttoken, max, mean_sqrt_len (default: the directory's).
    #[arg(long)]
    pooling: Option<String>,
    /// Refuse inputs longer than the model's limit instead of truncating them.
    #[arg(long)]
    no_truncate: bool,
    /// Longest input in tokens (default: the model's max_seq_length).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Compute dtype: f32, f16 or bf16 (default: f32 on the CPU).
    #[arg(long)]
    dtype: Option<String>,
    /// CPU threads for the model's computation (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Jsonl,
    Json,
    Npy,
}

/// Inputs embedded per round: output streams out as each round finishes.
const ROUND: usize = 1024;

pub fn run(a: EmbedArgs) -> Result<()> {
    let pooling = a
        .pooling
        .as_deref()
        .map(|p| {
            Pooling::from_name(p).with_context(|| {
                format!(
                    "--pooling {p}: expected one of {}",
                    Pooling::ALL
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .transpose()?;
    let dtype = a
        .dtype
        .as_deref()
        .map(|d| d.parse().map_err(|e| anyhow::anyhow!("--dtype: {e}")))
        .transpose()?;
    let texts = read_lines(&a.input)?;
    let model = EncoderModel::load(&a.model)?;
    let device = AnyDevice::open(&a.device.device)?;
    let embedder = Embedder::new(
        device,
        &model,
        &EmbedderOptions {
            dtype,
            max_batch: a.batch_size,
            max_tokens: a.max_tokens,
            pooling,
            normalize: a.normalize.then_some(true),
            truncate: !a.no_truncate,
            ..Default::default()
        },
    )?;
    eprintln!(
        "{} on {}: {} dimensions, {} pooling{}, inputs up to {} tokens, {} texts",
        model.dir.display(),
        embedder.device().info().display_name(),
        embedder.dimensions(),
        embedder.pooling(),
        if embedder.normalizes() {
            ", normalized"
        } else {
            ""
        },
        embedder.max_tokens(),
        texts.len()
    );
    // A file is written beside its destination and renamed over it at the end, so a failed run
    // never leaves a partial file.
    let staged = a
        .output
        .as_ref()
        .map(|path| {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("--output {}", path.display()))
        })
        .transpose()?;
    let mut sink: Box<dyn Write> = match &staged {
        Some(file) => Box::new(std::io::BufWriter::new(file.as_file().try_clone()?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = indicatif::ProgressBar::new(texts.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} texts, {per_sec}, eta {eta}")
            .expect("a valid template"),
    );
    let (mut all, mut tokens) = (Vec::new(), 0usize);
    for (round, chunk) in texts.chunks(ROUND).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let ids = embedder.tokenize(&refs).map_err(|e| renumber(e, round))?;
        let vectors = embedder.embed_ids(&ids).map_err(|e| renumber(e, round))?;
        for (i, (v, ids)) in vectors.iter().zip(&ids).enumerate() {
            tokens += ids.len();
            if a.format == Format::Jsonl {
                serde_json::to_writer(
                    &mut sink,
                    &serde_json::json!({"index": round * ROUND + i, "tokens": ids.len(), "embedding": v}),
                )?;
                writeln!(sink)?;
            }
        }
        if a.format != Format::Jsonl {
            all.extend(vectors);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    match a.format {
        Format::Jsonl => {}
        Format::Json => {
            let data: Vec<_> = all
                .iter()
                .enumerate()
                .map(
                    |(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}),
                )
                .collect();
            serde_json::to_writer(
                &mut sink,
                &serde_json::json!({
                    "object": "list",
                    "model": a.model,
                    "data": data,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }),
            )?;
            writeln!(sink)?;
        }
        Format::Npy => {
            let shape = [all.len() as u64, embedder.dimensions() as u64];
            use npyz::WriterBuilder;
            let mut w = npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut sink)
                .begin_nd()?;
            w.extend(all.iter().flatten().copied())?;
            w.finish()?;
        }
    }
    sink.flush()?;
    drop(sink);
    if let (Some(file), Some(path)) = (staged, &a.output) {
        file.persist(path)
            .with_context(|| format!("--output {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// An error naming input `index` of a round, renumbered to the line it came from.
fn renumber(e: switchyard::models::ModelError, round: usize) -> anyhow::Error {
    use switchyard::models::ModelError;
    match e {
        ModelError::InputTooLong {
            index,
            tokens,
            max_tokens,
        } => anyhow::anyhow!(
            "line {}: {tokens} tokens, over the model's limit of {max_tokens} (--no-truncate)",
            round * ROUND + index + 1
        ),
        other => other.into(),
    }
}

fn read_lines(input: &str) -> Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("--input {input}"))?,
        ))
    };
    let lines = reader
        .lines()
        .collect::<std::io::Result<Vec<String>>>()
        .with_context(|| format!("reading --input {input}"))?;
    if lines.is_empty() {
        bail!("--input {input}: no lines to embed");
    }
    Ok(lines)
}
