//! `switchyard tokenize`: a model's tokenizer on a text, like llama.cpp's `llama-tokenize`. Only
//! the tokenizer is loaded, so a vocabulary-only GGUF file works.

use anyhow::{Context, Result};
use clap::Args;
use std::io::{Read, Write};
use switchyard::models::Model;

#[derive(Args)]
pub struct TokenizeArgs {
    /// A GGUF file, a model directory with tokenizer.json, or a hub id.
    #[arg(long)]
    model: String,
    /// The text (default: read from --file, else from standard input).
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// Read the text from this file.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Print only the ids, as a list: [1, 2, 3].
    #[arg(long, conflicts_with = "json")]
    ids: bool,
    /// Print a JSON object: ids and their pieces.
    #[arg(long)]
    json: bool,
    /// Do not add the tokens the tokenizer adds around a text (BOS, EOS).
    #[arg(long)]
    no_bos: bool,
    /// Tokenize special-token strings in the text as plain text.
    #[arg(long)]
    no_parse_special: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let tok = Model::load_tokenizer(&a.model)?;
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("--file {}", f.display()))?
        }
        (None, None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the text from standard input")?;
            s
        }
    };
    let ids = tok.encode_with(&text, !a.no_bos, !a.no_parse_special)?;
    let mut out = std::io::stdout().lock();
    if a.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else if a.json {
        let pieces: Vec<String> = ids
            .iter()
            .map(|&i| tok.decode(&[i], false))
            .collect::<Result<_, _>>()?;
        serde_json::to_writer(&mut out, &serde_json::json!({"ids": ids, "pieces": pieces}))?;
        writeln!(out)?;
    } else {
        for &i in &ids {
            writeln!(out, "{i:6} -> '{}'", tok.decode(&[i], false)?)?;
        }
    }
    Ok(())
}
