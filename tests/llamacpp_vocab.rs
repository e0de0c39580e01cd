//! llama.cpp's own tokenizer test vectors (`models/ggml-vocab-*.gguf` with `.inp`/`.out`, in
//! the llama.cpp source that PyPI's llama-cpp-python sdist vendors) against Switchyard's
//! tokenizers built from those vocabulary-only GGUF files: every vocabulary kind Switchyard
//! reads must give llama.cpp's ids for every input (no BOS added, special tokens as plain text,
//! as llama.cpp's test-tokenizer-0 runs them); the kinds it does not read must be refused with
//! an error naming the kind.
//!
//! Needs the llama.cpp source, so it is ignored by default; `scripts/llamacpp-checks.sh` fetches
//! it into a cache and runs it (CI does):
//!
//! ```sh
//! SWITCHYARD_LLAMACPP_SRC=$(scripts/llamacpp-tools.sh --source) \
//!     cargo test --test llamacpp_vocab -- --ignored --nocapture
//! ```

use std::path::PathBuf;
use switchyard::models::Model;

#[test]
#[ignore = "needs llama.cpp's vocabulary files: run scripts/llamacpp-checks.sh"]
fn llamacpp_tokenizer_test_vectors() {
    let src = PathBuf::from(
        std::env::var_os("SWITCHYARD_LLAMACPP_SRC")
            .expect("set SWITCHYARD_LLAMACPP_SRC to the llama.cpp source directory"),
    );
    let mut vocabs: Vec<PathBuf> = std::fs::read_dir(src.join("models"))
        .expect("llama.cpp's models/ directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .filter(|p| p.with_extension("gguf.inp").is_file())
        .collect();
    vocabs.sort();
    assert!(
        !vocabs.is_empty(),
        "no ggml-vocab-*.gguf with test vectors found"
    );
    let sep = "\n__ggml_vocab_test__\n";
    let (mut failures, mut supported, mut refused) = (Vec::new(), 0, Vec::new());
    println!("| vocabulary | result |\n|---|---|");
    for path in &vocabs {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let inputs = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
        let outputs = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
        let inputs: Vec<&str> = inputs.split(sep).collect();
        let outputs: Vec<Vec<u32>> = outputs
            .lines()
            .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
            .collect();
        let tok = match Model::load_tokenizer(path.to_str().unwrap()) {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("is not supported") && msg.contains(&name),
                    "{name}: refused without naming what is unsupported: {msg}"
                );
                println!("| {name} | refused: {msg} |");
                refused.push(name);
                continue;
            }
        };
        supported += 1;
        let mut ok = 0;
        for (i, (text, want)) in inputs.iter().zip(&outputs).enumerate() {
            let got = tok.encode_with(text, false, false).unwrap();
            if &got == want {
                ok += 1;
            } else {
                failures.push(format!(
                    "{name} #{i} {text:?}: got {got:?}, llama.cpp {want:?}"
                ));
            }
        }
        println!(
            "| {name} | {ok}/{} inputs match llama.cpp |",
            inputs.len().min(outputs.len())
        );
    }
    println!(
        "{supported} vocabularies read, {} refused: {}",
        refused.len(),
        refused.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} input(s) differ from llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
