//! GGUF files: a fixture written as GGUF (by `switchyard quantize`) loads back with its config,
//! weights and embedded tokenizer, and computes what the safetensors model it was made from
//! computes — f32 within 1e-5, block-quantized types within stated tolerances — and
//! quantizing on load (`--quantize`) gives exactly what the quantized file gives. Damaged or
//! unsupported files are refused with the key or tensor named.

use std::path::{Path, PathBuf};
use switchyard::candle::{CandleDevice, CpuKernels};
use switchyard::models::gguf::{GgufValue, GgufWriter};
use switchyard::models::{Engine, EngineOptions, Model, WeightSource};
use switchyard::quantize::{quantize_to_gguf, QuantizedWeights};
use switchyard::{DType, HostTensor};

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(arch)
}

const PROMPT: &str = "Hello world! The quick brown fox jumps over the lazy dog.";

/// Last-prompt logits and 20 greedy tokens of `model` on the CPU.
fn run(model: &Model, prompt: &[u32]) -> (Vec<f32>, Vec<u32>) {
    run_with(CpuKernels::best(), model, prompt)
}

/// The same with the CPU kernel variant `kernels`.
fn run_with(kernels: CpuKernels, model: &Model, prompt: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let engine = Engine::new(
        CandleDevice::cpu_with_kernels(kernels).unwrap(),
        &model.config,
        model.weights.as_ref(),
        &EngineOptions::default(),
    )
    .unwrap();
    let mut s = engine.new_session().unwrap();
    let logits = engine.prefill(&mut s, prompt).unwrap();
    let mut tok = switchyard::models::argmax(&logits);
    let mut out = vec![tok];
    for _ in 0..19 {
        tok = engine.decode_greedy(&mut s, tok).unwrap();
        out.push(tok);
    }
    (logits, out)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn exported(dir: &Path, to: DType) -> PathBuf {
    exported_arch(dir, "llama", to)
}

fn exported_arch(dir: &Path, arch: &str, to: DType) -> PathBuf {
    let src = Model::load_dir(&fixture(arch)).unwrap();
    let out = dir.join(format!("{arch}-{to}.gguf"));
    quantize_to_gguf(&src, to, &out).unwrap();
    out
}

const ARCHS: [&str; 8] = [
    "llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];

/// Every fixture architecture written as an f32 GGUF loads back computing what its checkpoint
/// computes (Mistral and Phi-3 without their sliding windows, which llama.cpp does not apply), and
/// its embedded vocabulary tokenizes like the checkpoint's tokenizer.json.
#[test]
fn an_f32_gguf_computes_what_its_safetensors_model_computes() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let path = exported_arch(tmp.path(), arch, DType::F32);
        let mut src = Model::load_dir(&fixture(arch)).unwrap();
        if matches!(arch, "mistral" | "phi3") {
            src.config.layer_windows = vec![None; src.config.num_layers];
        }
        let gguf = Model::load(path.to_str().unwrap()).unwrap();
        assert_eq!(gguf.config.num_layers, src.config.num_layers, "{arch}");
        assert_eq!(gguf.config.vocab_size, src.config.vocab_size, "{arch}");
        // The embedded tokenizer tokenizes like tokenizer.json, and plain text like the file
        // llama.cpp's converter writes from the same checkpoint. Two differences are llama.cpp's
        // and the converter's: in a SentencePiece vocabulary, text after a special or
        // user-defined token gets the leading space of a new text (transformers continues the
        // text), and the converter writes SentencePiece user-defined symbols (`<|user|>` here)
        // as normal pieces, which then do not match as one token; the text with those tokens is
        // compared with neither for SentencePiece fixtures.
        let peer =
            Model::load_tokenizer(fixture(arch).join("peer-f32.gguf").to_str().unwrap()).unwrap();
        let (t_src, t_gguf) = (
            src.tokenizer.as_ref().unwrap(),
            gguf.tokenizer.as_ref().unwrap(),
        );
        let sentencepiece = fixture(arch).join("tokenizer.model").is_file();
        for text in [
            PROMPT,
            "héllo wörld 世界\nnew line\ttab  two spaces",
            "<s>special</s> <|user|>hi",
            "",
        ] {
            for special in [true, false] {
                let ours = t_gguf.encode(text, special).unwrap();
                let what = format!("{arch}: {text:?} (special tokens: {special})");
                if sentencepiece && text.contains("<|user|>") {
                    continue;
                }
                assert_eq!(
                    ours,
                    t_src.encode(text, special).unwrap(),
                    "{what}: vs tokenizer.json"
                );
                if !text.contains('<') {
                    let theirs = peer.encode(text, special).unwrap();
                    assert_eq!(ours, theirs, "{what}: vs llama.cpp's converter");
                }
            }
        }
        let ids = t_src.encode(PROMPT, true).unwrap();
        assert_eq!(
            t_gguf.decode(&ids, true).unwrap(),
            t_src.decode(&ids, true).unwrap(),
            "{arch}"
        );
        let (la, ga) = run(&src, &ids);
        let (lb, gb) = run(&gguf, &ids);
        let err = max_diff(&la, &lb);
        println!("{arch}: f32 GGUF vs safetensors: max abs logit difference {err:.2e}");
        assert!(err <= 1e-5, "{arch} f32: {err:e}");
        assert_eq!(ga, gb, "{arch}: greedy tokens");
    }
}

/// The weights of a model, dequantized to f32: what a quantized matmul approximates.
struct Dequantized(Box<dyn WeightSource>);

impl WeightSource for Dequantized {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> switchyard::models::Result<HostTensor> {
        Ok(self.0.tensor(name)?.to_dtype(DType::F32)?)
    }
    fn origin(&self, name: &str) -> String {
        self.0.origin(name)
    }
}

/// Quantized GGUF files, on every CPU kernel variant this machine runs (the AVX2 kernels an
/// AVX2-only machine uses included), compute what their own weights in f32 compute, up to the
/// 8-bit rounding of activations the quantized matmuls do (as llama.cpp's do).
///
/// Tolerance, derived: rounding a block of activations to 8 bits moves each element by a
/// uniform error of at most half a step (`amax/254`), an RMS of `amax/(127·√12)` ≈ 0.23% of the
/// block maximum, about 0.8% of the values' RMS for Gaussian blocks (maximum ≈ 3.5 σ over a
/// 256-value block). Each quantized matmul adds that much relative error to its output; the
/// fixture's logits pass through 15 of them (2 layers × 7, and the head) with independent
/// errors, so the logits move by about √15 × 0.8% ≈ 3.1% of their scale; the bound is four
/// times that (12.4% of the largest logit), which a mis-scaled or saturating kernel exceeds
/// many times over (single matmuls are held to their exact bounds in the conformance suite).
#[test]
fn quantized_ggufs_compute_their_weights_and_match_quantizing_on_load() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Model::load_dir(&fixture("llama")).unwrap();
    let ids = src
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(PROMPT, true)
        .unwrap();
    let (reference, _) = run(&src, &ids);
    let bound = 4.0 * 15f32.sqrt() * 0.008;
    for to in [DType::Q8_0, DType::Q6K, DType::Q4K, DType::Q4_0] {
        let path = exported(tmp.path(), to);
        let gguf = Model::load(path.to_str().unwrap()).unwrap();
        // The same weights in f32: what the quantized matmuls approximate.
        let plain = Model {
            weights: Box::new(Dequantized(
                Model::load(path.to_str().unwrap()).unwrap().weights,
            )),
            ..Model::load(path.to_str().unwrap()).unwrap()
        };
        let (lf, _) = run(&plain, &ids);
        let scale = lf.iter().fold(0f32, |m, x| m.max(x.abs()));
        for kernels in CpuKernels::available() {
            let (lq, _) = run_with(kernels, &gguf, &ids);
            let err = max_diff(&lf, &lq);
            println!(
                "{to} on {kernels}: vs its own weights in f32 {err:.3} ({:.1}% of the largest \
                 logit, bound {:.1}%); vs the f32 model {:.3}",
                100.0 * err / scale,
                100.0 * bound,
                max_diff(&reference, &lq)
            );
            assert!(
                err <= bound * scale,
                "{to} on {kernels}: {err} > {bound} x {scale}"
            );
        }
        // The same quantization applied on load gives the same numbers as the file.
        let (lq, _) = run(&gguf, &ids);
        let on_load =
            QuantizedWeights::wrap(Model::load_dir(&fixture("llama")).unwrap(), to).unwrap();
        let (lo, _) = run(&on_load, &ids);
        assert!(
            max_diff(&lq, &lo) <= 1e-5,
            "{to}: on-load quantization differs from the file"
        );
    }
}

/// Rewrites the GGUF `src` to `dst` after `edit` changes its metadata and tensors.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, GgufValue)>, &mut Vec<(String, HostTensor)>),
) {
    let f = switchyard::models::gguf::GgufFile::open(src).unwrap();
    let mut meta: Vec<(String, GgufValue)> = f
        .keys()
        .map(|k| (k.to_string(), f.get(k).unwrap().clone()))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors: Vec<(String, HostTensor)> = f
        .tensor_names()
        .iter()
        .map(|n| (n.clone(), f.tensor(n).unwrap()))
        .collect();
    edit(&mut meta, &mut tensors);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.meta(&k, v);
    }
    for (n, t) in tensors {
        w.tensor(&n, t).unwrap();
    }
    w.write(dst).unwrap();
}

fn generate_with(model: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty() || out.status.success());
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn generate_runs_a_single_gguf_file_with_its_embedded_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let path = exported(tmp.path(), DType::Q8_0);
    let args = |model: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "generate",
                "--model",
                model,
                "--prompt",
                PROMPT,
                "--max-new-tokens",
                "12",
            ])
            .args(["--temperature", "0", "--ignore-eos", "--quantize", "q8_0"])
            .output()
            .unwrap()
    };
    let from_file = args(path.to_str().unwrap());
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let on_load = args(fixture("llama").to_str().unwrap());
    assert!(on_load.status.success());
    let text = String::from_utf8_lossy(&from_file.stdout);
    assert!(!text.trim().is_empty());
    assert_eq!(
        text,
        String::from_utf8_lossy(&on_load.stdout),
        "same text from the file and from quantizing on load"
    );
}

#[test]
fn damaged_and_unsupported_ggufs_are_refused_naming_the_key_or_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let good = exported(tmp.path(), DType::F32);
    let bytes = std::fs::read(&good).unwrap();
    let case = |name: &str| tmp.path().join(name);

    // Truncated: the last tensor runs past the end of the file.
    std::fs::write(case("cut.gguf"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (code, e) = generate_with(&case("cut.gguf"));
    assert!(
        code == 1 && e.contains("cut.gguf") && e.contains("truncated: tensor '"),
        "{e}"
    );

    // An unknown quantization type.
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 16;
    let mut v = bytes.clone();
    v[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    std::fs::write(case("type.gguf"), v).unwrap();
    let (code, e) = generate_with(&case("type.gguf"));
    assert!(
        code == 1 && e.contains("tensor 'blk.0.attn_q.weight' has ggml type 77"),
        "{e}"
    );

    // An architecture Switchyard does not read.
    rewrite(&good, &case("arch.gguf"), |m, _| {
        m.iter_mut()
            .find(|(k, _)| k == "general.architecture")
            .unwrap()
            .1 = GgufValue::Str("mamba".into());
    });
    let (code, e) = generate_with(&case("arch.gguf"));
    assert!(
        code == 1 && e.contains("unsupported model_type 'mamba'") && e.contains("llama"),
        "{e}"
    );

    // A vocabulary kind Switchyard cannot tokenize, and a pre-tokenizer it does not know: refused
    // by name (the weights are not read first).
    for (key, value, expect) in [
        (
            "tokenizer.ggml.model",
            "t5",
            "vocabulary kind 't5' is not supported",
        ),
        (
            "tokenizer.ggml.pre",
            "tekken",
            "pre-tokenizer 'tekken' is not supported",
        ),
    ] {
        let file = case(&format!("{value}.gguf"));
        rewrite(&good, &file, |m, _| {
            m.retain(|(k, _)| k != key);
            m.push((key.to_string(), GgufValue::Str(value.into())));
        });
        let (code, e) = generate_with(&file);
        assert!(
            code == 1
                && e.contains(&format!("{value}.gguf"))
                && e.contains(key)
                && e.contains(expect),
            "{e}"
        );
    }

    // Metadata that disagrees with the tensors: fewer blocks than the file has.
    rewrite(&good, &case("blocks.gguf"), |m, _| {
        m.iter_mut()
            .find(|(k, _)| k == "llama.block_count")
            .unwrap()
            .1 = GgufValue::U32(1);
    });
    let (code, e) = generate_with(&case("blocks.gguf"));
    assert!(
        code == 1
            && e.contains("key 'llama.block_count': 1 blocks, but the file has tensor 'blk.1."),
        "{e}"
    );

    // A tensor whose shape disagrees with the metadata.
    rewrite(&good, &case("shape.gguf"), |_, t| {
        let (_, w) = t
            .iter_mut()
            .find(|(n, _)| n == "blk.0.ffn_down.weight")
            .unwrap();
        *w = HostTensor::from_f32_vec(&[8, 8], vec![0.0; 64]).unwrap();
    });
    let (code, e) = generate_with(&case("shape.gguf"));
    assert!(
        code == 1 && e.contains("blk.0.ffn_down.weight") && e.contains("[8, 8]"),
        "{e}"
    );

    // A missing tensor, and a missing key.
    rewrite(&good, &case("missing.gguf"), |_, t| {
        t.retain(|(n, _)| n != "blk.1.attn_v.weight")
    });
    let (code, e) = generate_with(&case("missing.gguf"));
    assert!(
        code == 1 && e.contains("blk.1.attn_v.weight") && e.contains("missing"),
        "{e}"
    );
    rewrite(&good, &case("key.gguf"), |m, _| {
        m.retain(|(k, _)| k != "llama.embedding_length")
    });
    let (code, e) = generate_with(&case("key.gguf"));
    assert!(
        code == 1 && e.contains("key 'llama.embedding_length': missing"),
        "{e}"
    );
}
