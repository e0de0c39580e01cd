//! The Neuron device: one NeuronCore (`neuron:N`) through libnrt.

use crate::artifact::{EmulationArtifact, IoNames};
use crate::buffer::NeuronBuffer;
use crate::cache::CompileCache;
use crate::compiler::{compile_into_cache, find_neuronx_cc, neff_key, Target};
use crate::executable::{BoundSets, NeuronExecutable};
use crate::handles::{NrtModelHandle, NrtTensorHandle, TensorSet};
use crate::runtime::NrtRuntime;
use std::sync::Arc;
use switchyard_neuron_sys::NrtVncMemoryStats;
use switchyard_runtime::{
    bind_args, ArgSource, CompileOptions, DType, Device, DeviceInfo, DeviceKind, Error,
    ExecuteArgs, Graph, HostTensor, Result, ShapeSupport, Signature, WeightPlan,
};

/// One NeuronCore. Its graphs must have fixed shapes (bind symbolic dimensions to bucket sizes
/// with `Graph::bind` before compiling).
///
/// On a real runtime `compile` loads the graph's NEFF from the compile cache (where
/// `switchyard compile` writes them), or lowers the graph to XLA HLO and runs `neuronx-cc` when it
/// is installed; on Switchyard's libnrt emulator it packages the graph as an emulation artifact.
pub struct NeuronDevice {
    rt: Arc<NrtRuntime>,
    vnc: i32,
    info: DeviceInfo,
    cache: CompileCache,
    /// Set when a call reported a hardware or unrecoverable execution error: the core needs a
    /// reset, so every later call is refused with the reason instead of trusting its results.
    unusable: std::sync::Mutex<Option<String>>,
}

/// Statuses after which a NeuronCore cannot be trusted until it is reset
/// ([`NrtStatus::is_fatal`]: hardware errors, an unrecoverable execution unit).
fn fatal_status(code: i64) -> bool {
    u32::try_from(code).is_ok_and(|c| switchyard_neuron_sys::NrtStatus(c).is_fatal())
}

impl std::fmt::Debug for NeuronDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NeuronDevice({})", self.info.display_name())
    }
}

/// Peak memory bandwidth of one NeuronCore by instance family (bytes/s): the chip's HBM
/// bandwidth shared by its cores (Trainium1/Inferentia2: 820 GiB/s, 2 cores; Trainium2:
/// 2.9 TB/s, 8 cores), from AWS's published figures.
fn core_bandwidth(family: Option<&str>) -> Option<f64> {
    match family? {
        "trn1" | "trn1n" | "inf2" => Some(820.0 * (1u64 << 30) as f64 / 2.0),
        "trn2" => Some(2.9e12 / 8.0),
        _ => None,
    }
}

impl NeuronDevice {
    /// Opens NeuronCore `index` (among the visible ones). Fails with `DeviceUnavailable` and the
    /// reason when the library is missing, `nrt_init` fails (no Neuron device) or the core does
    /// not exist.
    pub fn open(index: usize) -> Result<NeuronDevice> {
        Self::open_with_library(index, None)
    }

    /// [`NeuronDevice::open`] with an explicit libnrt path instead of the search order (the
    /// process-wide runtime is shared: the path matters only when no runtime is open yet).
    pub fn open_with_library(
        index: usize,
        library: Option<&std::path::Path>,
    ) -> Result<NeuronDevice> {
        let name = format!("neuron:{index}");
        let rt = NrtRuntime::acquire(&name, library)?;
        if index >= rt.visible_cores as usize {
            return Err(Error::DeviceUnavailable {
                device: name,
                reason: format!("only {} NeuronCore(s) are visible", rt.visible_cores),
            });
        }
        let vnc = index as i32;
        let stats = rt.lib().optional.get_vnc_memory_stats.and_then(|f| {
            let mut s = NrtVncMemoryStats::default();
            let mut out = 0usize;
            // SAFETY: `s` and `out` are writable; the size of `s` is passed.
            let status = unsafe {
                f(
                    index as u32,
                    &mut s,
                    std::mem::size_of::<NrtVncMemoryStats>(),
                    &mut out,
                )
            };
            status.is_ok().then_some(s)
        });
        let family = rt.family.clone();
        let cache = CompileCache::new(crate::cache::default_dir());
        let cache_line = cache.describe();
        let what = if rt.emulated {
            "emulated NeuronCore"
        } else {
            "NeuronCore"
        };
        let info = DeviceInfo {
            name: name.clone(),
            kind: DeviceKind::Neuron,
            ordinal: index,
            // The emulator runs the reference interpreter: f32 keeps it comparable with the CPU.
            preferred_dtype: rt.emulated.then_some(DType::F32),
            threads: None,
            description: format!(
                "{what} {index} of {} visible ({}{}), runtime {}",
                rt.visible_cores,
                family.as_deref().unwrap_or("unknown instance"),
                if rt.emulated { ", host memory" } else { "" },
                rt.version
            ),
            emulated: rt.emulated,
            memory_total: stats.map(|s| s.bytes_limit as u64),
            memory_free: stats.map(|s| s.bytes_limit.saturating_sub(s.bytes_used) as u64),
            peak_bandwidth: if rt.emulated {
                None
            } else {
                core_bandwidth(family.as_deref())
            },
            shape_support: ShapeSupport::Static,
            dtypes: vec![
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::I32,
                DType::I64,
                DType::U32,
                DType::U8,
            ],
            quantized: vec![],
            // A real runtime compiles through neuronx-cc, when it is installed.
            runtime_compile: rt.emulated || find_neuronx_cc().is_some(),
            details: vec![
                (
                    "runtime library".into(),
                    rt.lib().path.display().to_string(),
                ),
                (
                    "NeuronCores".into(),
                    format!("{} visible of {}", rt.visible_cores, rt.total_cores),
                ),
                (
                    "instance family".into(),
                    family.unwrap_or_else(|| "unknown".into()),
                ),
                ("compile cache".into(), cache_line),
            ],
        };
        Ok(NeuronDevice {
            rt,
            vnc,
            info,
            cache,
            unusable: std::sync::Mutex::new(None),
        })
    }

    /// The same device compiling through the cache in `dir` instead of the default one
    /// (`SWITCHYARD_NEURON_CACHE`, else the user's cache directory); `None` disables caching.
    pub fn with_compile_cache(mut self, dir: Option<std::path::PathBuf>) -> NeuronDevice {
        self.cache = CompileCache::new(dir);
        let line = self.cache.describe();
        if let Some(d) = self
            .info
            .details
            .iter_mut()
            .find(|(k, _)| k == "compile cache")
        {
            d.1 = line;
        }
        self
    }

    /// The directory of the compile cache, if any.
    pub fn compile_cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.dir()
    }

    /// The runtime this device uses (live-object counts and fault injection on the emulator).
    pub fn runtime(&self) -> &Arc<NrtRuntime> {
        &self.rt
    }

    fn name(&self) -> &str {
        &self.info.name
    }

    fn tensor(&self, bytes: usize, label: &str) -> Result<Arc<NrtTensorHandle>> {
        match NrtTensorHandle::allocate(&self.rt, self.name(), self.vnc, bytes, label) {
            Ok(t) => Ok(Arc::new(t)),
            // RESOURCE from an allocation is device memory running out: say how much was asked
            // for, for what, and how much is in use.
            Err(Error::DeviceCall {
                device,
                call,
                code: code @ 4,
                name,
            }) => {
                let usage = match (self.memory_in_use(), self.info.memory_total) {
                    (Some(u), Some(l)) => format!("; {u} of {l} bytes of device memory in use"),
                    (Some(u), None) => format!("; {u} bytes of device memory in use"),
                    (None, Some(l)) => format!("; the device has {l} bytes"),
                    (None, None) => String::new(),
                };
                Err(Error::DeviceOutOfMemory {
                    device,
                    call,
                    requested: bytes as u64,
                    what: label.to_string(),
                    detail: format!("status {code} {name}{usage}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Refuses work once the core was reported broken.
    fn usable(&self) -> Result<()> {
        let why = self.unusable.lock().unwrap_or_else(|p| p.into_inner());
        match why.as_ref() {
            Some(why) => Err(Error::DeviceUnavailable {
                device: self.info.display_name(),
                reason: format!(
                    "unusable after {why}: the NeuronCore needs a reset (reopen the device in a new process)"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Passes `r` through, remembering a fatal status so later calls are refused.
    fn watch<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::DeviceCall {
            call, code, name, ..
        }) = &r
        {
            if fatal_status(*code) {
                *self.unusable.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("{call} returned status {code} ({name})"));
            }
        }
        r
    }

    /// Checks a loaded model's inputs and outputs against the names and byte sizes `sig` implies.
    fn check_io(&self, model: &NrtModelHandle, sig: &Signature, names: &IoNames) -> Result<()> {
        let mismatch = |what: String| Error::Backend {
            device: self.name().to_string(),
            message: format!("the loaded model does not match the graph's signature: {what}"),
        };
        let expect_in: Vec<(String, usize)> = names
            .inputs
            .iter()
            .zip(&sig.params)
            .map(|((_, n), p)| (n.clone(), p.spec.max_bytes()))
            .collect();
        let out_bytes = |src: &str| -> usize {
            sig.outputs
                .iter()
                .find(|(o, _)| o == src)
                .map(|(_, s)| s.max_bytes())
                .or_else(|| sig.param(src).map(|p| p.spec.max_bytes()))
                .unwrap_or(0)
        };
        let expect_out: Vec<(String, usize)> = names
            .outputs
            .iter()
            .map(|(src, n)| (n.clone(), out_bytes(src)))
            .collect();
        for (kind, expected, got) in [
            ("input", &expect_in, &model.inputs),
            ("output", &expect_out, &model.outputs),
        ] {
            for (name, size) in expected {
                match got.iter().find(|t| &t.name == name) {
                    None => {
                        return Err(mismatch(format!(
                            "{kind} '{name}' ({size} bytes) is missing; the model has {}",
                            got.iter()
                                .map(|t| format!("'{}' ({} bytes)", t.name, t.size))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                    Some(t) if t.size != *size => {
                        return Err(mismatch(format!(
                            "{kind} '{name}' has {} bytes, the graph needs {size}",
                            t.size
                        )))
                    }
                    Some(_) => {}
                }
            }
            if let Some(extra) = got
                .iter()
                .find(|t| !expected.iter().any(|(n, _)| n == &t.name))
            {
                return Err(mismatch(format!("unexpected {kind} '{}'", extra.name)));
            }
        }
        Ok(())
    }
}

impl NeuronDevice {
    /// On a real runtime: the NEFF for `graph` from the compile cache (where `switchyard compile`
    /// puts them), else compiled now with `neuronx-cc` when it is installed.
    fn compile_neff(&self, graph: &Graph, options: &CompileOptions) -> Result<NeuronExecutable> {
        let unsupported = |what: String| Error::Unsupported {
            device: self.info.display_name(),
            what,
        };
        let family = self.rt.family.as_deref().unwrap_or("unknown");
        let target: Target = family.parse().map_err(|e| {
            unsupported(format!(
                "compiling for this instance ({e}); compile with `switchyard compile --target ...` and set SWITCHYARD_NEURON_CACHE to its cache"
            ))
        })?;
        let compiler = find_neuronx_cc();
        let key = neff_key(graph, options, &target, compiler.as_deref());
        let neff = match self.cache.get(&key, "neff", |b| !b.is_empty()) {
            Some(neff) => neff,
            None => {
                // Lowering first: an op with no HLO lowering is reported before anything else.
                crate::hlo::lower(graph)?;
                let Some(compiler) = compiler else {
                    return Err(unsupported(format!(
                        "compiling '{}' at run time: neuronx-cc is not on PATH and the compile cache {} has no NEFF for it; install the Neuron SDK's compiler, or run `switchyard compile --target {target}` where it is and point SWITCHYARD_NEURON_CACHE at the NEFFs",
                        graph.name(),
                        self.cache.describe()
                    )));
                };
                compile_into_cache(graph, options, &target, &self.cache, &compiler)?
            }
        };
        self.load_artifact(&neff, &graph.signature()).map(|mut e| {
            e.fingerprint = graph.fingerprint();
            e
        })
    }
}

/// The device operations, before the usability check and fatal-status tracking of the
/// `Device` implementation.
impl NeuronDevice {
    fn allocate_unchecked(&self, dtype: DType, dims: &[usize]) -> Result<NeuronBuffer> {
        let bytes = dtype.storage_bytes(dims.iter().product());
        let tensor = self.tensor(bytes, "buffer")?;
        tensor.memset(0)?;
        Ok(NeuronBuffer {
            tensor,
            dtype,
            dims: dims.to_vec(),
        })
    }

    fn upload_unchecked(&self, host: &HostTensor) -> Result<NeuronBuffer> {
        self.upload_labelled(host, "upload")
    }

    /// Uploads `host` into a new tensor named `label` (the name libnrt and error messages show).
    fn upload_labelled(&self, host: &HostTensor, label: &str) -> Result<NeuronBuffer> {
        let tensor = self.tensor(host.as_bytes().len(), label)?;
        tensor.write(host.as_bytes(), 0)?;
        Ok(NeuronBuffer {
            tensor,
            dtype: host.dtype(),
            dims: host.dims().to_vec(),
        })
    }

    /// Compiles once per graph: the result is kept in the on-disk compile cache keyed by the
    /// graph's fingerprint, the options and the runtime version; a cached entry that does not
    /// check out is rebuilt, not trusted.
    fn compile_unchecked(
        &self,
        graph: &Graph,
        options: &CompileOptions,
    ) -> Result<NeuronExecutable> {
        let fingerprint = graph.fingerprint();
        let key = crate::cache::CacheKey {
            fingerprint: &fingerprint,
            options,
            target: "emulator",
            compiler: &self.rt.version,
        }
        .hex();
        if !self.rt.emulated {
            return self.compile_neff(graph, options);
        }
        let bytes = match self.cache.get(&key, "swemu", |b| {
            EmulationArtifact::from_bytes(b).is_ok_and(|a| a.graph.fingerprint() == fingerprint)
        }) {
            Some(b) => b,
            None => {
                let b = EmulationArtifact::from_graph(graph)?.to_bytes();
                self.cache.put(&key, "swemu", &b);
                b
            }
        };
        self.load_artifact(&bytes, &graph.signature()).map(|mut e| {
            e.fingerprint = fingerprint;
            e
        })
    }

    fn load_artifact_unchecked(
        &self,
        artifact: &[u8],
        expected: &Signature,
    ) -> Result<NeuronExecutable> {
        let model = NrtModelHandle::load(&self.rt, self.name(), self.vnc, artifact)?;
        let names = IoNames::of_signature(expected);
        self.check_io(&model, expected, &names)?;
        Ok(NeuronExecutable {
            model,
            signature: expected.clone(),
            fingerprint: String::new(),
            device_id: self.info.id(),
            aliased_outputs: names
                .inputs
                .iter()
                .map(|(_, input)| {
                    names
                        .aliases
                        .iter()
                        .find(|(i, _)| i == input)
                        .map(|(_, o)| o.clone())
                })
                .collect(),
            names,
            bound: Default::default(),
        })
    }

    fn execute_unchecked(
        &self,
        exe: &NeuronExecutable,
        mut args: ExecuteArgs<'_, NeuronBuffer>,
    ) -> Result<Vec<NeuronBuffer>> {
        self.info.check_executable(exe.device_id)?;
        let sig = &exe.signature;
        let bound = bind_args(sig, &args)?;
        let out_dims = sig
            .outputs
            .iter()
            .map(|(_, spec)| spec.shape.resolve(&bound.dims))
            .collect::<Result<Vec<_>>>()?;
        let mut cached = match exe.bound.lock() {
            Ok(g) => g,
            // An execution panicked while binding: start again from fresh sets.
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                *g = None;
                g
            }
        };
        // Output tensors are reused when their shapes hold and the caller has dropped the
        // previous results (each is then held only by the set and by `results`).
        let reusable = cached.as_ref().is_some_and(|c| {
            c.results
                .iter()
                .zip(&out_dims)
                .all(|(r, d)| &r.dims == d && Arc::strong_count(&r.tensor) == 2)
        });
        if !reusable {
            *cached = None;
        }
        let sets = match cached.as_mut() {
            Some(sets) => sets,
            None => {
                let mut outputs = TensorSet::new(&self.rt, self.name())?;
                let mut results = Vec::with_capacity(sig.outputs.len());
                for (((_, spec), (_, out_name)), dims) in
                    sig.outputs.iter().zip(&exe.names.outputs).zip(out_dims)
                {
                    let bytes = spec.dtype.storage_bytes(dims.iter().product());
                    let tensor = self.tensor(bytes, out_name)?;
                    outputs.add(out_name, &tensor)?;
                    results.push(NeuronBuffer {
                        tensor,
                        dtype: spec.dtype,
                        dims,
                    });
                }
                cached.insert(Box::new(BoundSets {
                    inputs: TensorSet::new(&self.rt, self.name())?,
                    outputs,
                    bound: vec![0; sig.params.len()],
                    results,
                }))
            }
        };
        for (pos, (src, (_, input_name))) in bound.sources.iter().zip(&exe.names.inputs).enumerate()
        {
            let buf: &NeuronBuffer = match *src {
                ArgSource::Input(i) => args.inputs()[i].1,
                ArgSource::State(i) => &*args.state_mut()[i].1,
            };
            let id = Arc::as_ptr(&buf.tensor) as usize;
            if sets.bound[pos] == id {
                continue;
            }
            sets.inputs.add(input_name, &buf.tensor)?;
            // State is also bound under its aliased output name, so the model updates it in place.
            if let Some(out) = &exe.aliased_outputs[pos] {
                sets.outputs.add(out, &buf.tensor)?;
            }
            sets.bound[pos] = id;
        }
        exe.model.execute(&sets.inputs, &sets.outputs)?;
        Ok(sets.results.clone())
    }
}

impl Device for NeuronDevice {
    type Buffer = NeuronBuffer;
    type Executable = NeuronExecutable;

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn allocate(&self, dtype: DType, dims: &[usize]) -> Result<NeuronBuffer> {
        self.usable()?;
        self.watch(self.allocate_unchecked(dtype, dims))
    }

    fn upload(&self, host: &HostTensor) -> Result<NeuronBuffer> {
        self.usable()?;
        self.watch(self.upload_unchecked(host))
    }

    /// Weights are uploaded under their own names, so a failure (device memory running out)
    /// names the weight.
    fn upload_weights(
        &self,
        plans: &[WeightPlan],
        fetch: &mut dyn FnMut(usize) -> Result<HostTensor>,
    ) -> Result<Vec<NeuronBuffer>> {
        self.usable()?;
        let mut out = Vec::with_capacity(plans.len());
        for (i, plan) in plans.iter().enumerate() {
            let host = fetch(i)?;
            out.push(self.watch(self.upload_labelled(&host, &format!("weight '{}'", plan.name)))?);
            // The device holds its own copy: a memory-mapped file's pages need not stay.
            host.release_pages();
        }
        Ok(out)
    }

    /// Writes into the buffer's own tensor, so an executable that bound it keeps it bound.
    fn write(&self, buffer: &mut NeuronBuffer, host: &HostTensor) -> Result<()> {
        self.usable()?;
        if buffer.dtype != host.dtype() || buffer.dims != host.dims() {
            return Err(Error::DTypeMismatch {
                what: "write into a device buffer".into(),
                expected: format!("{}{:?}", buffer.dtype, buffer.dims),
                got: format!("{}{:?}", host.dtype(), host.dims()),
            });
        }
        self.watch(buffer.tensor.write(host.as_bytes(), 0))
    }

    fn download(&self, buffer: &NeuronBuffer) -> Result<HostTensor> {
        self.usable()?;
        self.watch(
            buffer
                .tensor
                .read()
                .and_then(|b| HostTensor::new(buffer.dtype, &buffer.dims, b)),
        )
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<NeuronExecutable> {
        self.usable()?;
        self.watch(self.compile_unchecked(graph, options))
    }

    fn load_artifact(&self, artifact: &[u8], expected: &Signature) -> Result<NeuronExecutable> {
        self.usable()?;
        self.watch(self.load_artifact_unchecked(artifact, expected))
    }

    fn execute(
        &self,
        exe: &NeuronExecutable,
        args: ExecuteArgs<'_, NeuronBuffer>,
    ) -> Result<Vec<NeuronBuffer>> {
        self.usable()?;
        self.watch(self.execute_unchecked(exe, args))
    }

    fn synchronize(&self) -> Result<()> {
        // nrt_execute is synchronous unless asynchronous execution is configured, which this
        // backend never does.
        Ok(())
    }

    fn memory_in_use(&self) -> Option<u64> {
        let f = self.rt.lib().optional.get_vnc_memory_stats?;
        let mut s = NrtVncMemoryStats::default();
        let mut out = 0usize;
        // SAFETY: `s` and `out` are writable; the size of `s` is passed.
        let status = unsafe {
            f(
                self.vnc as u32,
                &mut s,
                std::mem::size_of::<NrtVncMemoryStats>(),
                &mut out,
            )
        };
        status.is_ok().then_some(s.bytes_used as u64)
    }
}
