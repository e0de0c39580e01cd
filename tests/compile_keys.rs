//! One plan of executables: the NEFF cache keys `switchyard compile` writes are exactly the keys a
//! Neuron engine looks up, for every fixture architecture, with default and custom buckets. The
//! engine side runs on the emulator dressed as a real NeuronCore (same shapes and dtypes), and
//! records every graph it compiles; the key of each is what a real device would look up.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;
use switchyard::models::{BatchOptions, Engine, EngineOptions, Model};
use switchyard::neuron::compiler::{find_neuronx_cc, neff_key, Target};
use switchyard::neuron::{NeuronBuffer, NeuronDevice, NeuronExecutable};
use switchyard::runtime::{CompileOptions, Result as RtResult, Signature, WeightPlan};
use switchyard::{Device, DeviceInfo, ExecuteArgs, Graph, HostTensor};

const ARCHS: [&str; 8] = [
    "llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3", "gpt2",
];

/// The emulated NeuronCore with a real one's facts, recording the graphs it compiles.
struct Recording {
    inner: NeuronDevice,
    info: DeviceInfo,
    graphs: Mutex<Vec<Graph>>,
}

impl Device for Recording {
    type Buffer = NeuronBuffer;
    type Executable = NeuronExecutable;
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn allocate(&self, dtype: switchyard::DType, dims: &[usize]) -> RtResult<NeuronBuffer> {
        self.inner.allocate(dtype, dims)
    }
    fn upload(&self, host: &HostTensor) -> RtResult<NeuronBuffer> {
        self.inner.upload(host)
    }
    fn upload_weights(
        &self,
        plans: &[WeightPlan],
        fetch: &mut dyn FnMut(usize) -> RtResult<HostTensor>,
    ) -> RtResult<Vec<NeuronBuffer>> {
        self.inner.upload_weights(plans, fetch)
    }
    fn download(&self, buffer: &NeuronBuffer) -> RtResult<HostTensor> {
        self.inner.download(buffer)
    }
    fn compile(&self, graph: &Graph, options: &CompileOptions) -> RtResult<NeuronExecutable> {
        self.graphs.lock().unwrap().push(graph.clone());
        self.inner.compile(graph, options)
    }
    fn load_artifact(&self, artifact: &[u8], expected: &Signature) -> RtResult<NeuronExecutable> {
        self.inner.load_artifact(artifact, expected)
    }
    fn execute(
        &self,
        exe: &NeuronExecutable,
        args: ExecuteArgs<'_, NeuronBuffer>,
    ) -> RtResult<Vec<NeuronBuffer>> {
        self.inner.execute(exe, args)
    }
    fn synchronize(&self) -> RtResult<()> {
        self.inner.synchronize()
    }
}

/// The keys an engine looks up, and with `slots` also those of a batch with that many slots.
fn engine_keys(
    model: &Model,
    options: &EngineOptions,
    target: &Target,
    slots: Option<usize>,
) -> BTreeSet<String> {
    let lib = switchyard::neuron::emulator::workspace_emulator().expect("the emulator builds");
    let inner = NeuronDevice::open_with_library(0, Some(&lib)).expect("emulated neuron:0");
    let mut info = inner.info().clone();
    info.emulated = false;
    info.preferred_dtype = None;
    let device = Recording {
        inner,
        info,
        graphs: Mutex::new(Vec::new()),
    };
    let engine = Engine::new(device, &model.config, model.weights.as_ref(), options).unwrap();
    if let Some(slots) = slots {
        let batch_options = BatchOptions {
            slots: Some(slots),
            ..Default::default()
        };
        engine.batch(None, &batch_options).unwrap();
    }
    let compiler = find_neuronx_cc();
    let graphs = engine.device().graphs.lock().unwrap();
    graphs
        .iter()
        .map(|g| neff_key(g, &Default::default(), target, compiler.as_deref()))
        .collect()
}

fn compiled_keys(arch_dir: &str, extra: &[&str]) -> BTreeSet<String> {
    let d = tempfile::tempdir().unwrap();
    let (out, cache) = (d.path().join("hlo"), d.path().join("cache"));
    let mut args = vec![
        "compile",
        "--model",
        arch_dir,
        "--target",
        "trn1",
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    manifest["executables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let neff = std::path::PathBuf::from(e["neff"].as_str().unwrap());
            neff.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn compile_writes_exactly_the_keys_the_engine_looks_up() {
    let target: Target = "trn1".parse().unwrap();
    for arch in ARCHS {
        let dir = format!("{}/tests/fixtures/{arch}", env!("CARGO_MANIFEST_DIR"));
        let model = Model::load(&dir).unwrap();
        // Default shapes, then a custom chunk, context and buckets.
        let default = EngineOptions::default();
        let custom = EngineOptions {
            max_context: Some(64),
            prefill_chunk: Some(8),
            kv_buckets: Some(vec![16, 32]),
            ..Default::default()
        };
        let cases: [(&EngineOptions, &[&str]); 2] = [
            (&default, &[]),
            (
                &custom,
                &[
                    "--max-context",
                    "64",
                    "--prefill-chunk",
                    "8",
                    "--buckets",
                    "16,32",
                ],
            ),
        ];
        for (options, flags) in cases {
            let engine = engine_keys(&model, options, &target, None);
            let written = compiled_keys(&dir, flags);
            assert!(!engine.is_empty());
            assert_eq!(engine, written, "{arch} {flags:?}");
        }
    }
}

#[test]
fn compile_with_slots_adds_exactly_the_batched_keys_serve_looks_up() {
    let target: Target = "trn1".parse().unwrap();
    for arch in ["llama", "gemma2"] {
        let dir = format!("{}/tests/fixtures/{arch}", env!("CARGO_MANIFEST_DIR"));
        let model = Model::load(&dir).unwrap();
        let options = EngineOptions {
            max_context: Some(64),
            prefill_chunk: Some(8),
            kv_buckets: Some(vec![32]),
            ..Default::default()
        };
        let flags = [
            "--max-context",
            "64",
            "--prefill-chunk",
            "8",
            "--buckets",
            "32",
            "--slots",
            "4",
        ];
        let engine = engine_keys(&model, &options, &target, Some(4));
        let single = engine_keys(&model, &options, &target, None);
        let written = compiled_keys(&dir, &flags);
        assert!(
            engine.len() > single.len(),
            "the batch compiles graphs of its own"
        );
        assert_eq!(engine, written, "{arch}");
    }
}
