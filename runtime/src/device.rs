//! The device trait: what every backend (CPU, CUDA, Neuron) implements.
//!
//! The unit of work is a whole [`Graph`]: a device compiles it once into an executable and then
//! executes that many times with named inputs, weights and state. There is no op-by-op dispatch
//! in this trait, so devices that only run precompiled static graphs (Neuron) fit as well as
//! eager ones (candle).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Graph, ParamKind, Signature, WeightUse};
use crate::shape::SymbolBindings;
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

/// Whether a device runs graphs with symbolic dimensions as they are, or needs them bound to
/// fixed sizes (buckets) before compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShapeSupport {
    /// Symbolic dimensions are bound per call (candle CPU/CUDA).
    Dynamic,
    /// Every dimension must be fixed at compile time (Neuron).
    Static,
}

/// What kind of device a backend drives: code decides by this, never by a device's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
    /// An AWS NeuronCore (Trainium, Inferentia), real or emulated.
    Neuron,
}

/// Identity and capabilities of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device string: `cpu`, `cuda:0`, `neuron:0`.
    pub name: String,
    /// What kind of device it is.
    pub kind: DeviceKind,
    /// Which one of its kind (`cuda:1` is 1, the NeuronCore index, 0 for the CPU).
    pub ordinal: usize,
    /// The dtype the device computes best in when the user does not choose (`f32` on the CPU,
    /// whose bf16 matmul is slow, and on emulated devices, for parity with the CPU); `None`: the
    /// model's own dtype.
    pub preferred_dtype: Option<DType>,
    /// Compute threads, for devices that run on host threads.
    pub threads: Option<usize>,
    /// A human description (processor model, GPU name, runtime version).
    pub description: String,
    /// True when the device is an emulation (reported as `(emulated)` everywhere).
    pub emulated: bool,
    /// Total memory in bytes, when known.
    pub memory_total: Option<u64>,
    /// Free memory in bytes, when known.
    pub memory_free: Option<u64>,
    /// Peak memory bandwidth in bytes per second, when known (used for the roofline).
    pub peak_bandwidth: Option<f64>,
    /// Dynamic or static shapes.
    pub shape_support: ShapeSupport,
    /// Dtypes the device computes with (weights may additionally be quantized).
    pub dtypes: Vec<DType>,
    /// Quantized weight types the device's matmul accepts.
    pub quantized: Vec<DType>,
    /// True when `compile` works on this machine at run time.
    pub runtime_compile: bool,
    /// Backend-specific facts as key/value pairs (threads, ISA, compute capability, versions).
    pub details: Vec<(String, String)>,
}

/// Which device compiled an executable: its kind and ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceId {
    /// The kind.
    pub kind: DeviceKind,
    /// The ordinal within the kind.
    pub ordinal: usize,
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.ordinal),
            DeviceKind::Neuron => write!(f, "neuron:{}", self.ordinal),
        }
    }
}

impl DeviceInfo {
    /// The device's identity (kind and ordinal).
    pub fn id(&self) -> DeviceId {
        DeviceId {
            kind: self.kind,
            ordinal: self.ordinal,
        }
    }

    /// Refuses an executable compiled for another device.
    pub fn check_executable(&self, compiled_for: DeviceId) -> Result<()> {
        if compiled_for == self.id() {
            Ok(())
        } else {
            Err(Error::WrongDevice {
                compiled_for: compiled_for.to_string(),
                device: self.display_name(),
            })
        }
    }

    /// The name as shown to users: `neuron:0 (emulated)` for emulated devices.
    pub fn display_name(&self) -> String {
        if self.emulated {
            format!("{} (emulated)", self.name)
        } else {
            self.name.clone()
        }
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        writeln!(f, "{}: {}", self.display_name(), self.description)?;
        match (self.memory_total, self.memory_free) {
            (Some(t), Some(fr)) => writeln!(f, "  memory: {} total, {} free", gib(t), gib(fr))?,
            (Some(t), None) => writeln!(f, "  memory: {} total", gib(t))?,
            _ => writeln!(f, "  memory: unknown")?,
        }
        if let Some(bw) = self.peak_bandwidth {
            writeln!(f, "  peak bandwidth: {:.1} GB/s", bw / 1e9)?;
        }
        writeln!(
            f,
            "  shapes: {}; run-time compile: {}",
            match self.shape_support {
                ShapeSupport::Dynamic => "dynamic",
                ShapeSupport::Static => "static (bucketed)",
            },
            if self.runtime_compile { "yes" } else { "no" }
        )?;
        let names = |v: &[DType]| v.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ");
        writeln!(f, "  dtypes: {}", names(&self.dtypes))?;
        if !self.quantized.is_empty() {
            writeln!(f, "  quantized weights: {}", names(&self.quantized))?;
        }
        for (k, v) in &self.details {
            writeln!(f, "  {k}: {v}")?;
        }
        Ok(())
    }
}

/// Options for [`Device::compile`]. Part of the compile-cache key on devices that cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompileOptions {
    /// Optimization level for device compilers that have one (0 = fastest compile).
    pub opt_level: u8,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { opt_level: 2 }
    }
}

impl CompileOptions {
    /// The options as they enter a compile-cache key: a stable text (`opt-level 2`), never a
    /// debug dump, so a key changes only when an option does.
    pub fn cache_encoding(&self) -> String {
        format!("opt-level {}", self.opt_level)
    }
}

/// What every device buffer can say about itself.
pub trait DeviceBuffer {
    /// Element type.
    fn dtype(&self) -> DType;
    /// Concrete dimensions.
    fn dims(&self) -> &[usize];
}

impl DeviceBuffer for HostTensor {
    fn dtype(&self) -> DType {
        HostTensor::dtype(self)
    }
    fn dims(&self) -> &[usize] {
        HostTensor::dims(self)
    }
}

/// One weight to upload with [`Device::upload_weights`]: its name, dtype and shape, and how the
/// graphs that will bind it use it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightPlan {
    /// The parameter name.
    pub name: String,
    /// Dtype and (fixed) shape.
    pub spec: crate::TensorSpec,
    /// How the graphs consume it.
    pub uses: Vec<WeightUse>,
}

/// A compiled graph.
pub trait Executable {
    /// Parameters and outputs.
    fn signature(&self) -> &Signature;
    /// Fingerprint of the graph it was compiled from.
    fn fingerprint(&self) -> &str;
    /// The device that compiled it (the only one that may execute it).
    fn device(&self) -> DeviceId;
}

/// Named arguments of one execution: inputs and weights (read-only), state (updated in place),
/// and values for symbolic dimensions that no input carries.
///
/// ```
/// use switchyard_runtime::{ExecuteArgs, HostTensor};
/// let tokens = HostTensor::from_u32(&[1, 3], &[1, 2, 3]).unwrap();
/// let mut cache = HostTensor::zeros(switchyard_runtime::DType::F32, &[1, 2, 8, 4]).unwrap();
/// let args = ExecuteArgs::new()
///     .input("tokens", &tokens)
///     .state("cache", &mut cache)
///     .dim("kv_len", 3);
/// assert_eq!(args.inputs().len(), 1);
/// ```
pub struct ExecuteArgs<'a, B> {
    inputs: Vec<(&'a str, &'a B)>,
    state: Vec<(&'a str, &'a mut B)>,
    dims: SymbolBindings,
    /// Arguments given by position ([`ExecuteArgs::positional`]) rather than by name.
    positional: bool,
}

impl<B> Default for ExecuteArgs<'_, B> {
    fn default() -> Self {
        ExecuteArgs {
            inputs: Vec::new(),
            state: Vec::new(),
            dims: SymbolBindings::new(),
            positional: false,
        }
    }
}

/// Parameters matched to arguments by name since the process started ([`bind_args`] on named
/// [`ExecuteArgs`]): a steady-state step of a caller that binds positions once adds none.
static NAMED_LOOKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many parameters have been matched to arguments by name in this process (see
/// [`ExecuteArgs::positional`]).
pub fn named_lookups() -> u64 {
    NAMED_LOOKUPS.load(std::sync::atomic::Ordering::Relaxed)
}

impl<'a, B> ExecuteArgs<'a, B> {
    /// No arguments yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// No arguments yet, to be given by position: [`ExecuteArgs::arg`] once per non-state
    /// parameter and [`ExecuteArgs::state_arg`] once per state parameter, each in
    /// [`Signature::params`] order. Binding then compares no names: positions are resolved once,
    /// by whoever holds the executable, from its signature.
    ///
    /// ```
    /// use switchyard_runtime::{ExecuteArgs, HostTensor};
    /// let x = HostTensor::from_f32(&[1, 2], &[1.0, 2.0]).unwrap();
    /// let mut cache = HostTensor::zeros(switchyard_runtime::DType::F32, &[2]).unwrap();
    /// let args = ExecuteArgs::positional().arg(&x).state_arg(&mut cache);
    /// assert!(args.is_positional());
    /// ```
    pub fn positional() -> Self {
        ExecuteArgs {
            positional: true,
            ..Self::default()
        }
    }

    /// Adds the next non-state argument of positional arguments.
    pub fn arg(mut self, buffer: &'a B) -> Self {
        self.inputs.push(("", buffer));
        self
    }

    /// Adds the next state argument of positional arguments.
    pub fn state_arg(mut self, buffer: &'a mut B) -> Self {
        self.state.push(("", buffer));
        self
    }

    /// Whether the arguments are given by position.
    pub fn is_positional(&self) -> bool {
        self.positional
    }

    /// Adds an input or weight.
    pub fn input(mut self, name: &'a str, buffer: &'a B) -> Self {
        self.inputs.push((name, buffer));
        self
    }

    /// Adds many inputs or weights.
    pub fn inputs_from(mut self, it: impl IntoIterator<Item = (&'a str, &'a B)>) -> Self {
        self.inputs.extend(it);
        self
    }

    /// Adds a state buffer (read and written in place).
    pub fn state(mut self, name: &'a str, buffer: &'a mut B) -> Self {
        self.state.push((name, buffer));
        self
    }

    /// Adds many state buffers.
    pub fn states_from(mut self, it: impl IntoIterator<Item = (&'a str, &'a mut B)>) -> Self {
        self.state.extend(it);
        self
    }

    /// Binds a symbolic dimension that no input carries (e.g. the attended KV length).
    pub fn dim(mut self, name: &str, value: usize) -> Self {
        self.dims.set(name, value);
        self
    }

    /// The same arguments with every buffer converted by `input` (inputs and weights) and
    /// `state` (state buffers): how a wrapper device hands arguments to the device it wraps.
    pub fn try_map<C>(
        self,
        input: impl Fn(&'a B) -> Result<&'a C>,
        mut state: impl FnMut(&'a mut B) -> Result<&'a mut C>,
    ) -> Result<ExecuteArgs<'a, C>> {
        Ok(ExecuteArgs {
            inputs: self
                .inputs
                .into_iter()
                .map(|(n, b)| Ok((n, input(b)?)))
                .collect::<Result<_>>()?,
            state: self
                .state
                .into_iter()
                .map(|(n, b)| Ok((n, state(b)?)))
                .collect::<Result<_>>()?,
            dims: self.dims,
            positional: self.positional,
        })
    }

    /// The inputs and weights.
    pub fn inputs(&self) -> &[(&'a str, &'a B)] {
        &self.inputs
    }

    /// The state buffers.
    pub fn state_mut(&mut self) -> &mut [(&'a str, &'a mut B)] {
        &mut self.state
    }

    /// The explicit symbol bindings.
    pub fn dims(&self) -> &SymbolBindings {
        &self.dims
    }
}

/// Where each graph parameter's buffer comes from in an [`ExecuteArgs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgSource {
    /// Index into [`ExecuteArgs::inputs`].
    Input(usize),
    /// Index into the state list.
    State(usize),
}

/// The result of matching [`ExecuteArgs`] against a signature.
#[derive(Debug, Clone)]
pub struct BoundArgs {
    /// One source per parameter, in [`Signature::params`] order.
    pub sources: Vec<ArgSource>,
    /// Every symbol's value, from input shapes and explicit bindings.
    pub dims: SymbolBindings,
}

/// Matches `args` to `sig`: every parameter supplied exactly once under the right kind, dtypes
/// equal, shapes instances of the declared ones (binding symbols), explicit dims consistent.
/// Errors name the parameter. Shared by every backend so they all check arguments alike.
pub fn bind_args<B: DeviceBuffer>(sig: &Signature, args: &ExecuteArgs<'_, B>) -> Result<BoundArgs> {
    if args.positional {
        return bind_positions(sig, args);
    }
    let mut dims = args.dims.clone();
    let mut sources = Vec::with_capacity(sig.params.len());
    let mut used_inputs = vec![false; args.inputs.len()];
    let mut used_state = vec![false; args.state.len()];
    NAMED_LOOKUPS.fetch_add(
        sig.params.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    for p in &sig.params {
        let (found, dtype, shape_dims) = if p.kind == ParamKind::State {
            let i = args.state.iter().position(|(n, _)| *n == p.name);
            let i = i.ok_or_else(|| Error::MissingInput {
                kind: p.kind.name(),
                name: p.name.clone(),
            })?;
            if std::mem::replace(&mut used_state[i], true) {
                return Err(Error::UnknownInput {
                    kind: "state",
                    name: p.name.clone(),
                });
            }
            (
                ArgSource::State(i),
                args.state[i].1.dtype(),
                args.state[i].1.dims(),
            )
        } else {
            let i = args.inputs.iter().position(|(n, _)| *n == p.name);
            let i = i.ok_or_else(|| Error::MissingInput {
                kind: p.kind.name(),
                name: p.name.clone(),
            })?;
            used_inputs[i] = true;
            (
                ArgSource::Input(i),
                args.inputs[i].1.dtype(),
                args.inputs[i].1.dims(),
            )
        };
        if dtype != p.spec.dtype {
            return Err(Error::DTypeMismatch {
                what: format!("{} '{}'", p.kind.name(), p.name),
                expected: p.spec.dtype.to_string(),
                got: dtype.to_string(),
            });
        }
        p.spec.shape.bind_from(
            shape_dims,
            &mut dims,
            &format!("{} '{}'", p.kind.name(), p.name),
        )?;
        sources.push(found);
    }
    if let Some(i) = used_inputs.iter().position(|u| !u) {
        return Err(Error::UnknownInput {
            kind: "input",
            name: args.inputs[i].0.to_string(),
        });
    }
    if let Some(i) = used_state.iter().position(|u| !u) {
        return Err(Error::UnknownInput {
            kind: "state",
            name: args.state[i].0.to_string(),
        });
    }
    Ok(BoundArgs { sources, dims })
}

/// [`bind_args`] for positional arguments: the i-th non-state argument is the i-th non-state
/// parameter, the j-th state argument the j-th state parameter; dtypes and shapes are checked
/// (binding symbols) as for named arguments, and errors still name the parameter.
fn bind_positions<B: DeviceBuffer>(
    sig: &Signature,
    args: &ExecuteArgs<'_, B>,
) -> Result<BoundArgs> {
    let mut dims = args.dims.clone();
    let mut sources = Vec::with_capacity(sig.params.len());
    let (mut next_input, mut next_state) = (0, 0);
    for p in &sig.params {
        let (source, buffer): (ArgSource, &dyn DeviceBuffer) = if p.kind == ParamKind::State {
            let Some((_, b)) = args.state.get(next_state) else {
                return Err(Error::MissingInput {
                    kind: p.kind.name(),
                    name: p.name.clone(),
                });
            };
            next_state += 1;
            (ArgSource::State(next_state - 1), &**b)
        } else {
            let Some((_, b)) = args.inputs.get(next_input) else {
                return Err(Error::MissingInput {
                    kind: p.kind.name(),
                    name: p.name.clone(),
                });
            };
            next_input += 1;
            (ArgSource::Input(next_input - 1), *b)
        };
        if buffer.dtype() != p.spec.dtype {
            return Err(Error::DTypeMismatch {
                what: format!("{} '{}'", p.kind.name(), p.name),
                expected: p.spec.dtype.to_string(),
                got: buffer.dtype().to_string(),
            });
        }
        p.spec.shape.bind_from(
            buffer.dims(),
            &mut dims,
            &format!("{} '{}'", p.kind.name(), p.name),
        )?;
        sources.push(source);
    }
    if next_input != args.inputs.len() || next_state != args.state.len() {
        return Err(Error::UnknownInput {
            kind: if next_input != args.inputs.len() {
                "input"
            } else {
                "state"
            },
            name: format!(
                "positional argument beyond the signature's {} inputs and {} states",
                next_input, next_state
            ),
        });
    }
    Ok(BoundArgs { sources, dims })
}

/// A device that compiles and executes [`Graph`]s.
///
/// Typical use: upload weights once, allocate state once, compile each graph once, then execute
/// many times.
///
/// ```text
/// let w = device.upload(&weights)?;
/// let mut cache = device.allocate(DType::F32, &[1, 4, 512, 64])?;
/// let exe = device.compile(&graph, &CompileOptions::default())?;
/// let out = device.execute(&exe, ExecuteArgs::new().input("w", &w).state("k", &mut cache))?;
/// let logits = device.download(&out[0])?;
/// ```
pub trait Device: Send + Sync {
    /// A tensor in device memory (or a quantized weight).
    type Buffer: DeviceBuffer + Send + Sync;
    /// A compiled graph.
    type Executable: Executable + Send + Sync;

    /// Identity and capabilities.
    fn info(&self) -> &DeviceInfo;

    /// A zero-filled buffer.
    fn allocate(&self, dtype: DType, dims: &[usize]) -> Result<Self::Buffer>;

    /// Copies a host tensor to the device.
    fn upload(&self, host: &HostTensor) -> Result<Self::Buffer>;

    /// Copies a buffer back to the host.
    fn download(&self, buffer: &Self::Buffer) -> Result<HostTensor>;

    /// Copies `host` into `buffer`, which keeps its identity where the device can write in
    /// place (inputs bound once to an executable stay bound); dtype and shape must match. The
    /// default replaces the buffer with a new upload.
    fn write(&self, buffer: &mut Self::Buffer, host: &HostTensor) -> Result<()> {
        if buffer.dtype() != host.dtype() || buffer.dims() != host.dims() {
            return Err(Error::DTypeMismatch {
                what: "write into a device buffer".into(),
                expected: format!("{}{:?}", buffer.dtype(), buffer.dims()),
                got: format!("{}{:?}", host.dtype(), host.dims()),
            });
        }
        *buffer = self.upload(host)?;
        Ok(())
    }

    /// Uploads the weights of a model, each described by a [`WeightPlan`], with `fetch(i)`
    /// producing the `i`-th tensor on demand (one at a time, so the host never holds them all).
    /// A device may lay each weight out for its uses (the CPU device packs matmul weights into
    /// its kernels' panel layout); the default uploads them as they are.
    fn upload_weights(
        &self,
        plans: &[WeightPlan],
        fetch: &mut dyn FnMut(usize) -> Result<HostTensor>,
    ) -> Result<Vec<Self::Buffer>> {
        (0..plans.len()).map(|i| self.upload(&fetch(i)?)).collect()
    }

    /// Compiles a graph (a static-shape device needs every dimension fixed: see
    /// [`Graph::bind`]).
    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<Self::Executable>;

    /// Loads an artifact compiled elsewhere, checking its I/O against `expected`.
    fn load_artifact(&self, artifact: &[u8], expected: &Signature) -> Result<Self::Executable> {
        let _ = (artifact, expected);
        Err(Error::Unsupported {
            device: self.info().name.clone(),
            what: "loading precompiled artifacts".into(),
        })
    }

    /// Runs an executable. Returns the outputs in signature order; state buffers are updated in
    /// place.
    fn execute(
        &self,
        exe: &Self::Executable,
        args: ExecuteArgs<'_, Self::Buffer>,
    ) -> Result<Vec<Self::Buffer>>;

    /// Waits until all work submitted to the device has finished.
    fn synchronize(&self) -> Result<()>;

    /// Bytes of device memory in use, where the device reports it (`None` for the host CPU,
    /// whose memory is the process's).
    fn memory_in_use(&self) -> Option<u64> {
        None
    }

    /// Runs `f` between two synchronizations and returns its result with the elapsed time, so
    /// asynchronous devices are timed for the work done, not for the work queued.
    fn timed<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, Duration)>
    where
        Self: Sized,
    {
        self.synchronize()?;
        let start = Instant::now();
        let r = f()?;
        self.synchronize()?;
        Ok((r, start.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dim, GraphBuilder, TensorSpec};

    fn sig() -> Signature {
        let mut b = GraphBuilder::new("t");
        let x = b
            .input(
                "x",
                TensorSpec::new(DType::F32, vec![Dim::sym("t", 4), Dim::Fixed(2)]),
            )
            .unwrap();
        let c = b
            .state("c", TensorSpec::new(DType::F32, [1, 4, 2]))
            .unwrap();
        let p = b.input("p", TensorSpec::new(DType::I32, [1])).unwrap();
        let x3 = b
            .reshape(x, vec![Dim::Fixed(1), Dim::sym("t", 4), Dim::Fixed(2)])
            .unwrap();
        let w = b.kv_write(c, x3, p, 1).unwrap();
        b.update_state("c", w).unwrap();
        b.output("y", w).unwrap();
        b.finish().unwrap().signature()
    }

    #[test]
    fn binding_checks_names_kinds_and_shapes() {
        let sig = sig();
        let x = HostTensor::zeros(DType::F32, &[3, 2]).unwrap();
        let p = HostTensor::from_i32(&[1], &[0]).unwrap();
        let mut c = HostTensor::zeros(DType::F32, &[1, 4, 2]).unwrap();
        let b = bind_args(
            &sig,
            &ExecuteArgs::new()
                .input("x", &x)
                .input("p", &p)
                .state("c", &mut c),
        )
        .unwrap();
        assert_eq!(b.dims.get("t"), Some(3));
        assert_eq!(b.sources[1], ArgSource::State(0));

        let err =
            bind_args(&sig, &ExecuteArgs::new().input("x", &x).state("c", &mut c)).unwrap_err();
        assert!(err.to_string().contains("missing input 'p'"), "{err}");
        let err = bind_args(
            &sig,
            &ExecuteArgs::new()
                .input("x", &x)
                .input("p", &p)
                .input("c", &x),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing state 'c'"), "{err}");
        let err = bind_args(
            &sig,
            &ExecuteArgs::new()
                .input("x", &x)
                .input("p", &p)
                .input("z", &p)
                .state("c", &mut c),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown input 'z'"), "{err}");
        let bad = HostTensor::zeros(DType::F32, &[3, 5]).unwrap();
        let err = bind_args(
            &sig,
            &ExecuteArgs::new()
                .input("x", &bad)
                .input("p", &p)
                .state("c", &mut c),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("input 'x'") && err.to_string().contains("[3, 5]"),
            "{err}"
        );
        let err = bind_args(
            &sig,
            &ExecuteArgs::new()
                .input("x", &x)
                .input("p", &p)
                .state("c", &mut c)
                .dim("t", 2),
        )
        .unwrap_err();
        assert!(err.to_string().contains("t=2"), "{err}");
    }
}
