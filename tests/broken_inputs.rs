//! A corpus of broken inputs run through the real CLI: every one must end with a non-zero exit,
//! an error that names the problem (the file, tensor, key or flag), and no panic.
//!
//! The corpus is built from the llama fixture at test time (each entry a copy with one defect),
//! so it stays in step with the fixture; `CORPUS` below lists every entry and what its error must
//! name.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama")
}

fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The safetensors header (JSON) and the data after it.
fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        bytes[8 + n..].to_vec(),
    )
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, f: impl FnOnce(&mut Value, &mut Vec<u8>)) {
    let p = dir.join("model.safetensors");
    let (mut h, mut data) = split_safetensors(&std::fs::read(&p).unwrap());
    f(&mut h, &mut data);
    std::fs::write(&p, join_safetensors(&h, &data)).unwrap();
}

fn gguf(dir: &Path) -> PathBuf {
    let out = dir.join("model.gguf");
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["quantize", "--model"])
        .arg(fixture())
        .args(["--to", "q8_0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

/// One broken input: how to make it, the extra arguments, and what the error must mention.
struct Entry {
    name: &'static str,
    make: fn(&Path) -> PathBuf,
    args: &'static [&'static str],
    expect: &'static [&'static str],
}

const PROMPT: &[&str] = &["--prompt", "Hello", "--max-new-tokens", "2"];

const CORPUS: &[Entry] = &[
    Entry {
        name: "safetensors truncated to half",
        make: |d| {
            let p = d.join("model.safetensors");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.safetensors"],
    },
    Entry {
        name: "safetensors header length larger than the file",
        make: |d| {
            let p = d.join("model.safetensors");
            let mut b = std::fs::read(&p).unwrap();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            std::fs::write(&p, b).unwrap();
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.safetensors"],
    },
    Entry {
        name: "safetensors header with flipped bits",
        make: |d| {
            let p = d.join("model.safetensors");
            let mut b = std::fs::read(&p).unwrap();
            for i in [9usize, 40, 77, 300] {
                b[i] ^= 0x80;
            }
            std::fs::write(&p, b).unwrap();
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.safetensors"],
    },
    Entry {
        name: "tensor offsets out of bounds",
        make: |d| {
            edit_weights(d, |h, _| {
                h["model.norm.weight"]["data_offsets"] = serde_json::json!([0, 1u64 << 33]);
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.safetensors"],
    },
    Entry {
        name: "overlapping tensor offsets",
        make: |d| {
            edit_weights(d, |h, _| {
                let o = h["model.embed_tokens.weight"]["data_offsets"].clone();
                let start = o[0].as_u64().unwrap();
                h["model.norm.weight"]["data_offsets"] = serde_json::json!([start, start + 256]);
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.safetensors"],
    },
    Entry {
        name: "a weight stored as integers",
        make: |d| {
            edit_weights(d, |h, _| {
                h["model.norm.weight"]["dtype"] = "I32".into();
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.norm.weight"],
    },
    Entry {
        name: "a weight whose shape disagrees with the config",
        make: |d| {
            edit_weights(d, |h, _| {
                h["model.norm.weight"]["shape"] = serde_json::json!([32, 2]);
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.norm.weight"],
    },
    Entry {
        name: "a missing weight",
        make: |d| {
            // A valid file without that tensor: the others repacked back to back.
            edit_weights(d, |h, data| {
                let map = h.as_object_mut().unwrap();
                map.remove("model.layers.1.mlp.down_proj.weight");
                let mut tensors: Vec<(String, u64, u64)> = map
                    .iter()
                    .filter(|(k, _)| *k != "__metadata__")
                    .map(|(k, v)| {
                        let o = &v["data_offsets"];
                        (k.clone(), o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
                    })
                    .collect();
                tensors.sort_by_key(|t| t.1);
                let mut packed = Vec::new();
                for (name, start, end) in tensors {
                    let at = packed.len() as u64;
                    packed.extend_from_slice(&data[start as usize..end as usize]);
                    map[&name]["data_offsets"] = serde_json::json!([at, at + end - start]);
                }
                *data = packed;
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["model.layers.1.mlp.down_proj.weight"],
    },
    Entry {
        name: "config without hidden_size",
        make: |d| {
            edit_json(&d.join("config.json"), |c| {
                c.as_object_mut().unwrap().remove("hidden_size");
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["config.json", "hidden_size"],
    },
    Entry {
        name: "config with 0 layers",
        make: |d| {
            edit_json(&d.join("config.json"), |c| {
                c["num_hidden_layers"] = 0.into()
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["config.json", "num_hidden_layers"],
    },
    Entry {
        // Found by fuzzing: the layer count was trusted and the graph grew without bound.
        name: "config with 2.1e18 layers",
        make: |d| {
            edit_json(&d.join("config.json"), |c| {
                c["num_hidden_layers"] = 2_111_111_111_111_111_111u64.into()
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["config.json", "num_hidden_layers", "at most"],
    },
    Entry {
        name: "config with heads that do not divide the hidden size",
        make: |d| {
            edit_json(&d.join("config.json"), |c| {
                c["num_attention_heads"] = 5.into();
                c.as_object_mut().unwrap().remove("head_dim");
            });
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["config.json", "num_attention_heads"],
    },
    Entry {
        name: "config with a negative vocabulary",
        make: |d| {
            edit_json(&d.join("config.json"), |c| c["vocab_size"] = (-3).into());
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["config.json", "vocab_size"],
    },
    Entry {
        name: "config that is not JSON",
        make: |d| {
            std::fs::write(d.join("config.json"), "{\"model_type\": \"llama\", ").unwrap();
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["config.json"],
    },
    Entry {
        name: "empty tokenizer",
        make: |d| {
            std::fs::write(d.join("tokenizer.json"), "").unwrap();
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["tokenizer.json"],
    },
    Entry {
        name: "corrupt tokenizer",
        make: |d| {
            std::fs::write(
                d.join("tokenizer.json"),
                "{\"model\": {\"type\": \"BPE\", \"vocab\": 7}}",
            )
            .unwrap();
            d.to_path_buf()
        },
        args: PROMPT,
        expect: &["tokenizer.json"],
    },
    Entry {
        name: "chat template that fails to render",
        make: |d| {
            edit_json(&d.join("tokenizer_config.json"), |c| {
                c["chat_template"] =
                    "{% for m in messages %}{{ m.content | nosuchfilter }}{% endfor %}".into();
            });
            d.to_path_buf()
        },
        args: &["--chat", "--prompt", "Hello", "--max-new-tokens", "2"],
        expect: &["chat template"],
    },
    Entry {
        name: "chat template with a syntax error",
        make: |d| {
            edit_json(&d.join("tokenizer_config.json"), |c| {
                c["chat_template"] = "{% if messages %}unclosed".into();
            });
            d.to_path_buf()
        },
        args: &["--chat", "--prompt", "Hello", "--max-new-tokens", "2"],
        expect: &["chat template"],
    },
    Entry {
        name: "chat template that would loop for ever",
        make: |d| {
            edit_json(&d.join("tokenizer_config.json"), |c| {
                c["chat_template"] =
                    "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}".into();
            });
            d.to_path_buf()
        },
        args: &["--chat", "--prompt", "Hello", "--max-new-tokens", "2"],
        expect: &["chat template", "fuel"],
    },
    Entry {
        name: "prompt longer than the context",
        make: |d| {
            copy_fixture(d);
            d.to_path_buf()
        },
        args: &[
            "--max-context",
            "8",
            "--prompt",
            "one two three four five six seven eight nine ten eleven",
            "--max-new-tokens",
            "2",
        ],
        expect: &["context", "8"],
    },
    Entry {
        name: "negative temperature",
        make: |d| d.to_path_buf(),
        args: &["--prompt", "Hello", "--temperature", "-1"],
        expect: &["--temperature"],
    },
    Entry {
        name: "top-p above 1",
        make: |d| d.to_path_buf(),
        args: &["--prompt", "Hello", "--top-p", "1.5"],
        expect: &["--top-p"],
    },
    Entry {
        name: "min-p below 0",
        make: |d| d.to_path_buf(),
        args: &["--prompt", "Hello", "--min-p", "-0.1"],
        expect: &["--min-p"],
    },
    Entry {
        name: "repetition penalty of 0",
        make: |d| d.to_path_buf(),
        args: &["--prompt", "Hello", "--repetition-penalty", "0"],
        expect: &["--repetition-penalty"],
    },
    Entry {
        name: "prompt ids outside the vocabulary",
        make: |d| d.to_path_buf(),
        args: &["--prompt-ids", "1,999999", "--max-new-tokens", "1"],
        expect: &["999999"],
    },
    Entry {
        name: "GGUF truncated",
        make: |d| {
            let g = gguf(d);
            let b = std::fs::read(&g).unwrap();
            std::fs::write(&g, &b[..b.len() * 2 / 3]).unwrap();
            g
        },
        args: PROMPT,
        expect: &["model.gguf"],
    },
    Entry {
        name: "GGUF cut inside its metadata",
        make: |d| {
            let g = gguf(d);
            let b = std::fs::read(&g).unwrap();
            std::fs::write(&g, &b[..200]).unwrap();
            g
        },
        args: PROMPT,
        expect: &["model.gguf"],
    },
    Entry {
        name: "GGUF with a corrupted key length",
        make: |d| {
            let g = gguf(d);
            let mut b = std::fs::read(&g).unwrap();
            // The first metadata key's length follows magic, version and the two counts.
            b[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            std::fs::write(&g, b).unwrap();
            g
        },
        args: PROMPT,
        expect: &["model.gguf"],
    },
    Entry {
        name: "GGUF with the wrong magic",
        make: |d| {
            let g = gguf(d);
            let mut b = std::fs::read(&g).unwrap();
            b[..4].copy_from_slice(b"GGML");
            std::fs::write(&g, b).unwrap();
            g
        },
        args: PROMPT,
        expect: &["model.gguf"],
    },
    Entry {
        name: "an empty file as the model",
        make: |d| {
            let p = d.join("empty.gguf");
            std::fs::write(&p, b"").unwrap();
            p
        },
        args: PROMPT,
        expect: &["empty.gguf"],
    },
    Entry {
        name: "a directory without a model",
        make: |d| {
            let p = d.join("nothing");
            std::fs::create_dir_all(&p).unwrap();
            p
        },
        args: PROMPT,
        expect: &["nothing"],
    },
];

#[test]
fn every_broken_input_fails_cleanly_with_a_message_naming_it() {
    let mut failures = Vec::new();
    for (i, entry) in CORPUS.iter().enumerate() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(format!("case{i}"));
        copy_fixture(&dir);
        let model = (entry.make)(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("generate")
            .arg("--model")
            .arg(&model)
            .args(entry.args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let mut problems = Vec::new();
        if code == Some(0) || code.is_none() {
            problems.push(format!("exit status {:?}", out.status));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("panic text".into());
        }
        for want in entry.expect {
            if !stderr.contains(want) {
                problems.push(format!("message does not name '{want}'"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                entry.name,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    eprintln!("{} broken inputs tried", CORPUS.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
