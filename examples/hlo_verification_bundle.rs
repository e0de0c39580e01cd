//! Writes graphs as XLA HLO modules together with inputs and the outputs Switchyard's CPU device
//! computes from them, for `scripts/verify_hlo.py` to execute with XLA and compare: every
//! conformance case, the prefill and decode executables of every fixture architecture at two
//! KV buckets (as `switchyard compile` exports them), and its batched pool executables (a step of
//! decodes in three slots, and one mixing a prompt chunk with decodes and a padding row); and
//! every encoder fixture's graph for a padded batch of four texts of mixed lengths.
//!
//! Run with: `cargo run --release --example hlo_verification_bundle -- OUT_DIR [FIXTURES_DIR]`
//! (or `scripts/verify_hlo.sh`, which also runs the comparison).

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use switchyard::models::{
    build_encoder_graph, plan_executables, plan_pool, BatchOptions, EncoderGraphOptions,
    EncoderModel, EngineOptions, EntryKind, Model,
};
use switchyard::neuron::hlo;
use switchyard::runtime::conformance::{all_cases, Tolerance};
use switchyard::runtime::OP_NAMES;
use switchyard::runtime::{bind_args, ParamKind};
use switchyard::{AnyDevice, DType, Device, ExecuteArgs, Graph, HostTensor, SymbolBindings};

/// Deterministic pseudo-random numbers (xorshift), so the bundle is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn normal_ish(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next() % 2001) as f32 / 1000.0 - 1.0) * scale)
            .collect()
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .context("usage: hlo_verification_bundle OUT_DIR [FIXTURES_DIR]")?;
    let fixtures = args
        .next()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures").into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let cpu = AnyDevice::open("cpu")?;
    let mut cases = Vec::new();
    let mut skipped = Vec::new();

    for case in all_cases() {
        if let Some((name, t)) = case.inputs.iter().find(|(_, t)| t.dtype().is_quantized()) {
            skipped.push(json!({"name": case.name, "reason": format!(
                "weight '{name}' is {}: HLO has no block-quantized types", t.dtype())}));
            continue;
        }
        let mut state = case.state.clone();
        let mut bind = ExecuteArgs::<HostTensor>::new()
            .inputs_from(case.inputs.iter().map(|(n, t)| (n.as_str(), t)))
            .states_from(state.iter_mut().map(|(n, t)| (n.as_str(), t)));
        for (n, v) in case.dims.iter() {
            bind = bind.dim(n, v);
        }
        let bound = bind_args(&case.graph.signature(), &bind)?;
        let graph = case.graph.bind(&bound.dims)?;
        let named: Vec<(String, HostTensor)> =
            case.inputs.iter().chain(&case.state).cloned().collect();
        let ops: Vec<&str> = case.ops().into_iter().collect();
        cases.push(record(
            &cpu,
            out,
            &format!("op-{}", cases.len()),
            &case.name,
            &graph,
            &named,
            case.tolerance,
            &ops,
        )?);
    }

    let mut dirs: Vec<_> = std::fs::read_dir(&fixtures)
        .with_context(|| format!("reading {fixtures}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        // (case name, graph, its inputs) of every executable of this model.
        let mut graphs = Vec::new();
        if EncoderModel::is_encoder(&dir.display().to_string()) {
            graphs.push(encoder_case(&dir)?);
        } else {
            let model = Model::load(&dir.display().to_string())?;
            let options = EngineOptions {
                dtype: Some(DType::F32),
                max_context: Some(64),
                prefill_chunk: Some(16),
                kv_buckets: Some(vec![32]),
            };
            let plan = plan_executables(
                &model.config,
                &options,
                DType::F32,
                &Default::default(),
                switchyard::ShapeSupport::Static,
            )?;
            let mut rng = Rng(0x5eed ^ dir.display().to_string().len() as u64);
            let arch = dir
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            for e in plan.executables {
                let bucket = e.bucket.expect("static plans specialize every executable");
                let named = model_inputs(&model, &e.graph, e.entry, bucket, &mut rng)?;
                graphs.push((format!("{arch}/{}/kv{bucket}", e.entry), e.graph, named));
            }
            // The batched pool executables a static device compiles: 3 slots (and the scratch
            // slot), token buckets 3 and 8, KV buckets 32 and 64.
            let mut info = cpu.info().clone();
            info.shape_support = switchyard::ShapeSupport::Static;
            info.memory_free = None;
            let pool = plan_pool(
                &model.config,
                &options,
                &BatchOptions {
                    slots: Some(3),
                    step_tokens: Some(8),
                    token_buckets: Some(vec![3]),
                },
                DType::F32,
                &Default::default(),
                &info,
            )?;
            for e in pool.executables {
                let (width, bucket) = (
                    e.tokens.context("static pools specialize the width")?,
                    e.kv_bucket
                        .context("static pools specialize the KV length")?,
                );
                let named = pool_inputs(&model, &e.graph, width, bucket, &mut rng)?;
                graphs.push((format!("{arch}/pool/t{width}/kv{bucket}"), e.graph, named));
            }
        }
        for (name, graph, named) in graphs {
            let ops = op_names(&graph);
            let case_dir = format!("model-{}", cases.len());
            cases.push(record(
                &cpu,
                out,
                &case_dir,
                &name,
                &graph,
                &named,
                Tolerance::for_dtype(DType::F32),
                &ops,
            )?);
        }
    }
    let manifest = json!({"op_names": OP_NAMES, "cases": cases, "skipped": skipped});
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!(
        "wrote {} cases ({} skipped) to {}",
        manifest["cases"].as_array().map_or(0, |c| c.len()),
        skipped.len(),
        out.display()
    );
    Ok(())
}

/// Tensors by parameter name.
type Named = Vec<(String, HostTensor)>;

/// The op kinds of `graph`, once each.
fn op_names(graph: &Graph) -> Vec<&'static str> {
    graph
        .nodes()
        .iter()
        .map(|n| n.op.name())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An encoder's graph as a static device compiles it (4 texts of up to 8 tokens; lengths 8, 3,
/// 1 and 5, so the padding masks and pooling are exercised), with its weights and inputs.
fn encoder_case(dir: &Path) -> Result<(String, Graph, Named)> {
    let model = EncoderModel::load(&dir.display().to_string())?;
    let sentence = model
        .sentence
        .clone()
        .context("encoder fixtures are sentence-transformers directories")?;
    let graph = build_encoder_graph(
        &model.config,
        &EncoderGraphOptions {
            compute: DType::F32,
            max_batch: 4,
            max_tokens: 8,
            pooling: sentence.pooling,
            normalize: sentence.normalize,
            quantized: Default::default(),
        },
    )?
    .bind(&SymbolBindings::new().with("batch", 4).with("t", 8))?;
    let mut rng = Rng(0xe4c0de);
    let vocab = model.config.vocab_size as u64;
    let mut named = Vec::new();
    for p in graph.signature().params {
        let dims = p
            .spec
            .shape
            .fixed_dims()
            .context("bound graphs are fixed")?;
        let t = match (p.kind, p.name.as_str()) {
            (ParamKind::Weight, name) => model.weights.tensor(name)?.to_dtype(DType::F32)?,
            (_, "tokens") => {
                let n: usize = dims.iter().product();
                let ids: Vec<u32> = (0..n).map(|_| (rng.next() % vocab) as u32).collect();
                HostTensor::from_u32(&dims, &ids)?
            }
            (_, "lengths") => HostTensor::from_u32(&dims, &[8, 3, 1, 5])?,
            (_, other) => anyhow::bail!("unexpected input '{other}' of {}", graph.name()),
        };
        named.push((p.name, t));
    }
    let arch = dir
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok((format!("{arch}/encode/b4/t8"), graph, named))
}

/// Inputs, weights and a random KV cache for one static executable of a model.
fn model_inputs(
    model: &Model,
    graph: &Graph,
    entry: EntryKind,
    bucket: usize,
    rng: &mut Rng,
) -> Result<Vec<(String, HostTensor)>> {
    let vocab = model.config.vocab_size as u64;
    let mut named = Vec::new();
    for p in graph.signature().params {
        let dims = p
            .spec
            .shape
            .fixed_dims()
            .context("bound graphs are fixed")?;
        let n: usize = dims.iter().product();
        let t = match (p.kind, p.name.as_str()) {
            (ParamKind::Weight, name) => weight(model, name)?,
            (ParamKind::State, _) => HostTensor::from_f32(&dims, &rng.normal_ish(n, 1.0))?,
            (_, "tokens") => {
                let ids: Vec<u32> = (0..n).map(|_| (rng.next() % vocab) as u32).collect();
                HostTensor::from_u32(&dims, &ids)?
            }
            (_, "positions") => {
                // A prefill chunk in the middle of the bucket; a decode step at its last slot.
                let first = if entry == EntryKind::Decode {
                    bucket - 1
                } else {
                    bucket / 2
                };
                let pos: Vec<i32> = (0..n).map(|i| (first + i) as i32).collect();
                HostTensor::from_i32(&dims, &pos)?
            }
            (_, "last_index") => HostTensor::from_u32(&dims, &[(rng.next() % 16) as u32])?,
            (_, other) => anyhow::bail!("unexpected input '{other}' of {}", graph.name()),
        };
        named.push((p.name, t));
    }
    Ok(named)
}

/// Inputs, weights and a random KV pool for one pool executable of `width` tokens: three decodes
/// in slots 2, 0, 1 (width 3), or a five-token prompt chunk in slot 1, decodes in slots 0 and 2
/// and a padding row in the scratch slot 3 (width 8).
fn pool_inputs(
    model: &Model,
    graph: &Graph,
    width: usize,
    bucket: usize,
    rng: &mut Rng,
) -> Result<Vec<(String, HostTensor)>> {
    let (slots, positions, rows): (Vec<i32>, Vec<i32>, Vec<u32>) = match width {
        3 => (
            vec![2, 0, 1],
            vec![bucket as i32 - 1, bucket as i32 / 2, 3],
            vec![0, 1, 2],
        ),
        8 => (
            vec![1, 1, 1, 1, 1, 0, 2, 3],
            vec![10, 11, 12, 13, 14, bucket as i32 - 1, 7, 0],
            vec![4, 5, 6],
        ),
        other => anyhow::bail!("no pool inputs for width {other}"),
    };
    let mut named = Vec::new();
    for p in graph.signature().params {
        let dims = p
            .spec
            .shape
            .fixed_dims()
            .context("bound graphs are fixed")?;
        let t = match p.name.as_str() {
            "slots" => HostTensor::from_i32(&dims, &slots)?,
            "positions" => HostTensor::from_i32(&dims, &positions)?,
            "rows" => HostTensor::from_u32(&dims, &rows)?,
            _ => match p.kind {
                ParamKind::Weight => weight(model, &p.name)?,
                ParamKind::State => {
                    HostTensor::from_f32(&dims, &rng.normal_ish(dims.iter().product(), 1.0))?
                }
                ParamKind::Input => {
                    let vocab = model.config.vocab_size as u64;
                    let ids: Vec<u32> = (0..width).map(|_| (rng.next() % vocab) as u32).collect();
                    HostTensor::from_u32(&dims, &ids)?
                }
            },
        };
        named.push((p.name, t));
    }
    Ok(named)
}

/// A model weight by its graph name, as f32 (GPT-2 checkpoints may prefix `transformer.`).
fn weight(model: &Model, name: &str) -> Result<HostTensor> {
    let stored = if model.weights.contains(name) {
        name.to_string()
    } else {
        format!("transformer.{name}")
    };
    Ok(model.weights.tensor(&stored)?.to_dtype(DType::F32)?)
}

/// Lowers `graph`, runs it on the CPU device with `named` tensors, and writes the module, the
/// inputs (in parameter order) and the outputs (graph outputs, then updated state) to `dir`.
#[allow(clippy::too_many_arguments)]
fn record(
    cpu: &AnyDevice,
    out: &Path,
    dir: &str,
    name: &str,
    graph: &Graph,
    named: &[(String, HostTensor)],
    tolerance: Tolerance,
    ops: &[&str],
) -> Result<Value> {
    let module = hlo::lower(graph).with_context(|| format!("lowering {name}"))?;
    let case_dir = out.join(dir);
    std::fs::create_dir_all(&case_dir)?;
    std::fs::write(case_dir.join("module.pb"), module.to_bytes())?;
    std::fs::write(case_dir.join("module.hlo.txt"), module.to_text())?;
    let sig = graph.signature();
    let tensor = |p: &str| {
        named
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, t)| t)
            .with_context(|| format!("{name}: no value for parameter '{p}'"))
    };
    let describe = |file: String, t: &HostTensor| json!({"file": file, "dtype": t.dtype().name(), "dims": t.dims()});
    let mut inputs = Vec::new();
    for (i, p) in sig.params.iter().enumerate() {
        let t = tensor(&p.name)?;
        let file = format!("{dir}/in{i}.bin");
        std::fs::write(out.join(&file), t.as_bytes())?;
        inputs.push(describe(file, t));
    }
    // The CPU device's results on the same inputs.
    let exe = cpu.compile(graph, &Default::default())?;
    let mut plain = Vec::new();
    let mut state = Vec::new();
    for p in &sig.params {
        let buf = cpu.upload(tensor(&p.name)?)?;
        if p.kind == ParamKind::State {
            state.push((p.name.clone(), buf));
        } else {
            plain.push((p.name.clone(), buf));
        }
    }
    let results = cpu.execute(
        &exe,
        ExecuteArgs::new()
            .inputs_from(plain.iter().map(|(n, b)| (n.as_str(), b)))
            .states_from(state.iter_mut().map(|(n, b)| (n.as_str(), b))),
    )?;
    let mut outputs = Vec::new();
    for (j, ((out_name, _), buf)) in graph.outputs().iter().zip(&results).enumerate() {
        let t = cpu.download(buf)?;
        let file = format!("{dir}/out{j}.bin");
        std::fs::write(out.join(&file), t.as_bytes())?;
        let mut d = describe(file, &t);
        d["name"] = json!(out_name);
        d["alias_of"] = Value::Null;
        outputs.push(d);
    }
    for s in &sig.updated_states {
        let j = outputs.len();
        let (_, buf) = state
            .iter()
            .find(|(n, _)| n == s)
            .context("updated state")?;
        let t = cpu.download(buf)?;
        let file = format!("{dir}/out{j}.bin");
        std::fs::write(out.join(&file), t.as_bytes())?;
        let mut d = describe(file, &t);
        d["name"] = json!(format!("state {s}"));
        d["alias_of"] = json!(sig.params.iter().position(|p| &p.name == s));
        outputs.push(d);
    }
    Ok(json!({
        "name": name,
        "kind": if dir.starts_with("model") { "model" } else { "op" },
        "module": format!("{dir}/module.pb"),
        "ops": ops,
        "tolerance": {"atol": tolerance.atol, "atol_rms": tolerance.atol_rms, "rtol": tolerance.rtol},
        "inputs": inputs,
        "outputs": outputs,
    }))
}
