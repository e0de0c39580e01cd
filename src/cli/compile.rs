//! `switchyard compile`: every executable a Neuron engine needs, as XLA HLO modules, compiled to
//! NEFFs with `neuronx-cc` when it is installed (else the commands to run where it is).

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use switchyard::models::{
    check_quantized_support, plan_executables, plan_pool, stored_quantized, BatchOptions,
    EngineOptions, Model,
};
use switchyard::neuron::artifact::IoNames;
use switchyard::neuron::compiler::{find_neuronx_cc, is_decode, neff_key, CompileJob, Target};
use switchyard::neuron::hlo;
use switchyard::DType;
use switchyard::ShapeSupport;

#[derive(Args)]
pub struct CompileArgs {
    /// builtin:NAME, a model directory, a .gguf file or a hub id.
    #[arg(long)]
    model: String,
    /// Instance family: trn1, trn1n, trn2 or inf2.
    #[arg(long)]
    target: String,
    /// KV-cache length (default: the model's maximum, capped at 4096).
    #[arg(long)]
    max_context: Option<usize>,
    #[command(flatten)]
    engine: super::options::EngineArgs,
    /// Where the HLO modules, their text dumps, the manifest and compile.sh go.
    #[arg(long, default_value = "switchyard-hlo")]
    out: PathBuf,
    /// The NEFF cache the Neuron device reads (default: SWITCHYARD_NEURON_CACHE, else the user
    /// cache directory).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Compilations run at once (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Logical NeuronCore size on trn2 (default 2).
    #[arg(long)]
    lnc: Option<u32>,
    /// Also export the batched executables of a KV pool with this many sequence slots, as
    /// `switchyard serve --slots N` and `switchyard bench --batch` compile them.
    #[arg(long)]
    slots: Option<usize>,
    /// With --slots: tokens per batched step (default: as `serve` chooses).
    #[arg(long, requires = "slots")]
    step_tokens: Option<usize>,
}

/// One executable to export: a single-sequence entry, or a batched step of the KV pool.
struct Export {
    entry: &'static str,
    bucket: usize,
    /// Token width of a batched step.
    tokens: Option<usize>,
    graph: switchyard::Graph,
}

impl Export {
    fn stem(&self) -> String {
        match self.tokens {
            Some(t) => format!("{}-t{t}-kv{}", self.entry, self.bucket),
            None => format!("{}-kv{}", self.entry, self.bucket),
        }
    }
}

/// A Neuron device as the planners see it before one exists: static shapes, memory unknown.
fn neuron_target_info(target: &Target) -> switchyard::DeviceInfo {
    switchyard::DeviceInfo {
        name: "neuron:0".into(),
        kind: switchyard::runtime::DeviceKind::Neuron,
        ordinal: 0,
        preferred_dtype: None,
        threads: None,
        description: format!("a {target} NeuronCore"),
        emulated: false,
        memory_total: None,
        memory_free: None,
        peak_bandwidth: None,
        shape_support: ShapeSupport::Static,
        dtypes: vec![DType::F32, DType::F16, DType::BF16],
        quantized: Vec::new(),
        runtime_compile: false,
        details: Vec::new(),
    }
}

pub fn run(a: CompileArgs) -> Result<()> {
    let target: Target = a
        .target
        .parse()
        .map_err(|e| anyhow::anyhow!("--target: {e}"))?;
    let dtype = a.engine.dtype()?;
    if let Some(q) = a.engine.quantize()? {
        bail!("--quantize {q}: a NeuronCore takes no block-quantized weights (use --dtype bf16 or f16)");
    }
    if let Some(d) = dtype {
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            bail!("--dtype {d}: Neuron graphs compute in f32, f16 or bf16");
        }
    }
    if a.jobs == Some(0) {
        bail!("--jobs 0: at least one compilation must run");
    }
    let cache = a
        .cache
        .clone()
        .or_else(switchyard::neuron::cache::default_dir)
        .context("no cache directory: pass --cache DIR")?;
    let model = Model::load(&a.model)?;
    let compute = dtype.unwrap_or(model.config.torch_dtype.unwrap_or(DType::F32));
    let options = EngineOptions {
        dtype: Some(compute),
        max_context: a.max_context,
        prefill_chunk: a.engine.prefill_chunk,
        kv_buckets: a.engine.buckets.clone(),
    };
    // The plan a Neuron engine makes (no block-quantized weights: a NeuronCore takes none).
    let quantized = stored_quantized(&model.config, model.weights.as_ref())?;
    check_quantized_support(&quantized, &[], &format!("a Neuron {target} device"))?;
    let plan = plan_executables(
        &model.config,
        &options,
        compute,
        &quantized,
        ShapeSupport::Static,
    )?;
    let mut executables: Vec<Export> = plan
        .executables
        .into_iter()
        .map(|e| Export {
            entry: e.entry.name(),
            bucket: e.bucket.unwrap_or_default(),
            tokens: None,
            graph: e.graph,
        })
        .collect();
    if let Some(slots) = a.slots {
        let pool = plan_pool(
            &model.config,
            &options,
            &BatchOptions {
                slots: Some(slots),
                step_tokens: a.step_tokens,
                ..Default::default()
            },
            compute,
            &quantized,
            &neuron_target_info(&target),
        )?;
        executables.extend(pool.executables.into_iter().map(|e| Export {
            entry: "pool",
            bucket: e.kv_bucket.unwrap_or_default(),
            tokens: e.tokens,
            graph: e.graph,
        }));
    }
    // Every graph is lowered before anything is written: an op without a lowering stops here.
    let mut lowered = Vec::with_capacity(executables.len());
    for e in &executables {
        let module = hlo::lower(&e.graph)
            .with_context(|| format!("lowering the {} graph {}", e.entry, e.stem()))?;
        lowered.push(module);
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let compile_options = Default::default();
    // The compiler's version is part of every key: the one on PATH here, as the device will
    // ask the one on its PATH.
    let compiler = find_neuronx_cc();
    let mut jobs = Vec::new();
    let mut manifest = Vec::new();
    for (e, module) in executables.iter().zip(&lowered) {
        let stem = e.stem();
        let pb = a.out.join(format!("{stem}.hlo.pb"));
        let txt = a.out.join(format!("{stem}.hlo.txt"));
        write_atomic(&pb, &module.to_bytes())?;
        write_atomic(&txt, module.to_text().as_bytes())?;
        let key = neff_key(&e.graph, &compile_options, &target, compiler.as_deref());
        let job = CompileJob {
            hlo: pb.clone(),
            neff: cache.join(format!("{key}.neff")),
            target: target.clone(),
            decode: is_decode(&e.graph),
            lnc: a.lnc,
        };
        let names = IoNames::of(&e.graph);
        let sig = e.graph.signature();
        manifest.push(json!({
            "entry": e.entry,
            "bucket": e.bucket,
            "tokens": e.tokens,
            "graph": e.graph.name(),
            "fingerprint": e.graph.fingerprint(),
            "hlo": pb.file_name().map(|f| f.to_string_lossy().to_string()),
            "neff": job.neff,
            "command": job.command_line(),
            "inputs": sig.params.iter().zip(&names.inputs).map(|(p, (_, n))| json!({
                "name": n, "parameter": p.name, "kind": p.kind.name(),
                "dtype": p.spec.dtype.name(), "shape": p.spec.shape.to_string(),
            })).collect::<Vec<_>>(),
            "outputs": names.outputs.iter().map(|(src, n)| json!({"name": n, "value": src})).collect::<Vec<_>>(),
            "aliases": names.aliases.iter().map(|(i, o)| json!({"input": i, "output": o})).collect::<Vec<_>>(),
        }));
        jobs.push(job);
    }
    let manifest = json!({
        "model": a.model,
        "target": target.to_string(),
        "dtype": compute.name(),
        "executables": manifest,
    });
    write_atomic(
        &a.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let script: String = std::iter::once(format!(
        "#!/bin/sh\n# NEFFs for {} on {target}; run where neuronx-cc is installed.\nset -e\nmkdir -p '{}'\n",
        a.model,
        cache.display()
    ))
    .chain(jobs.iter().map(|j| format!("{}\n", j.command_line())))
    .collect();
    write_atomic(&a.out.join("compile.sh"), script.as_bytes())?;
    set_mode(&a.out.join("compile.sh"), 0o755)?;
    eprintln!(
        "wrote {} HLO modules ({}: prefill + decode per bucket, batched steps with --slots; {compute}) to {}",
        jobs.len(),
        model.config.arch,
        a.out.display()
    );
    let Some(compiler) = compiler else {
        println!(
            "neuronx-cc is not on PATH: run these on a machine with the Neuron SDK (also in {}), then point SWITCHYARD_NEURON_CACHE at {}:",
            a.out.join("compile.sh").display(),
            cache.display()
        );
        for j in &jobs {
            println!("{}", j.command_line());
        }
        return Ok(());
    };
    compile_all(&jobs, &compiler, a.jobs)
}

/// Runs the jobs on up to `parallel` threads; reports every failure.
fn compile_all(jobs: &[CompileJob], compiler: &Path, parallel: Option<usize>) -> Result<()> {
    let parallel = parallel
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(jobs.len())
        .max(1);
    eprintln!(
        "compiling {} NEFFs with {} ({parallel} at a time)",
        jobs.len(),
        compiler.display()
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let start = std::time::Instant::now();
                match job.run(compiler) {
                    Ok(()) => eprintln!(
                        "  {} -> {} ({:.0} s)",
                        job.hlo.display(),
                        job.neff.display(),
                        start.elapsed().as_secs_f64()
                    ),
                    Err(e) => failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(e.to_string()),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    if !failures.is_empty() {
        bail!(
            "{} of {} compilations failed:\n  {}",
            failures.len(),
            jobs.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Temporary files are private; these are ordinary outputs.
    set_mode(path, 0o644)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
