//! Picking a device at run time from a string (`cpu`, `cuda:0`, `neuron:0`).

use switchyard_candle::{CandleBuffer, CandleDevice, CandleExecutable, CpuKernels};
use switchyard_neuron::{NeuronBuffer, NeuronDevice, NeuronExecutable};
use switchyard_runtime::{
    CompileOptions, DType, Device, DeviceBuffer, DeviceInfo, Error, Executable, ExecuteArgs, Graph,
    HostTensor, Result, Signature, WeightPlan,
};

/// Any device this build supports, chosen at run time. It implements [`Device`] itself, so
/// generic code (`Engine<D: Device>`) runs on it unchanged.
///
/// ```
/// use switchyard::{AnyDevice, Device};
/// let cpu = AnyDevice::open("cpu").unwrap();
/// assert_eq!(cpu.info().name, "cpu");
/// let err = AnyDevice::open("tpu:0").unwrap_err().to_string();
/// assert!(err.contains("unknown device 'tpu:0'") && err.contains("cpu"));
/// ```
#[derive(Debug)]
pub enum AnyDevice {
    /// A candle device (CPU, or a GPU with the `cuda` feature).
    Candle(CandleDevice),
    /// A NeuronCore (real or emulated).
    Neuron(NeuronDevice),
}

/// A buffer of an [`AnyDevice`].
#[derive(Clone, Debug)]
pub enum AnyBuffer {
    /// A candle buffer.
    Candle(CandleBuffer),
    /// A Neuron device tensor.
    Neuron(NeuronBuffer),
}

/// An executable of an [`AnyDevice`].
pub enum AnyExecutable {
    /// A candle executable.
    Candle(CandleExecutable),
    /// A model loaded on a NeuronCore.
    Neuron(NeuronExecutable),
}

/// What [`AnyDevice::probe_all`] found for one device string.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// The device string.
    pub name: String,
    /// Its info, or why it cannot be used here.
    pub status: std::result::Result<DeviceInfo, String>,
}

/// How a device string parses.
enum Requested {
    Cpu,
    Cuda(usize),
    Neuron(usize),
}

fn parse(name: &str) -> Option<Requested> {
    let lower = name.trim().to_ascii_lowercase();
    let indexed = |prefix: &str| -> Option<usize> {
        match lower.strip_prefix(prefix) {
            Some("") => Some(0),
            Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse().ok()),
            None => None,
        }
    };
    match lower.as_str() {
        "cpu" => Some(Requested::Cpu),
        "gpu" => Some(Requested::Cuda(0)),
        _ => indexed("cuda")
            .map(Requested::Cuda)
            .or_else(|| indexed("neuron").map(Requested::Neuron)),
    }
}

fn mismatch() -> Error {
    Error::Backend {
        device: "any".into(),
        message: "a buffer or executable of one device was passed to another".into(),
    }
}

impl AnyDevice {
    /// Opens the device named by `name` (`cpu`, `cuda:N`, `neuron:N`). An unknown string is an
    /// error that lists the devices this build can see; a known but unusable one says why.
    pub fn open(name: &str) -> Result<AnyDevice> {
        match parse(name) {
            Some(Requested::Cpu) => {
                let kernels = CpuKernels::from_env()
                    .map_err(|reason| Error::DeviceUnavailable {
                        device: "cpu".into(),
                        reason,
                    })?
                    .unwrap_or_else(CpuKernels::best);
                Ok(AnyDevice::Candle(CandleDevice::cpu_with_kernels(kernels)?))
            }
            Some(Requested::Cuda(n)) => CandleDevice::cuda(n).map(AnyDevice::Candle),
            Some(Requested::Neuron(n)) => NeuronDevice::open(n).map(AnyDevice::Neuron),
            None => Err(Error::UnknownDevice {
                requested: name.to_string(),
                available: Self::probe_all()
                    .into_iter()
                    .filter(|s| s.status.is_ok())
                    .map(|s| s.name)
                    .collect(),
            }),
        }
    }

    /// Every device this build knows, each with its info or the reason it is unavailable
    /// (every visible NeuronCore when a Neuron runtime opens).
    pub fn probe_all() -> Vec<DeviceStatus> {
        let status = |name: &str| DeviceStatus {
            name: name.to_string(),
            status: AnyDevice::open(name)
                .map(|d| d.info().clone())
                .map_err(|e| match e {
                    Error::DeviceUnavailable { reason, .. } => reason,
                    other => other.to_string(),
                }),
        };
        let mut out = vec![status("cpu"), status("cuda:0")];
        for i in 1..CandleDevice::cuda_device_count() {
            out.push(status(&format!("cuda:{i}")));
        }
        let neuron0 = status("neuron:0");
        let visible = neuron0
            .status
            .as_ref()
            .ok()
            .and_then(|_| NeuronDevice::open(0).ok())
            .map_or(1, |d| d.runtime().visible_cores as usize);
        out.push(neuron0);
        for i in 1..visible {
            out.push(status(&format!("neuron:{i}")));
        }
        out
    }
}

impl DeviceBuffer for AnyBuffer {
    fn dtype(&self) -> DType {
        match self {
            AnyBuffer::Candle(b) => b.dtype(),
            AnyBuffer::Neuron(b) => b.dtype(),
        }
    }

    fn dims(&self) -> &[usize] {
        match self {
            AnyBuffer::Candle(b) => b.dims(),
            AnyBuffer::Neuron(b) => b.dims(),
        }
    }
}

impl Executable for AnyExecutable {
    fn signature(&self) -> &Signature {
        match self {
            AnyExecutable::Candle(e) => e.signature(),
            AnyExecutable::Neuron(e) => e.signature(),
        }
    }

    fn fingerprint(&self) -> &str {
        match self {
            AnyExecutable::Candle(e) => e.fingerprint(),
            AnyExecutable::Neuron(e) => e.fingerprint(),
        }
    }

    fn device(&self) -> crate::runtime::DeviceId {
        match self {
            AnyExecutable::Candle(e) => e.device(),
            AnyExecutable::Neuron(e) => e.device(),
        }
    }
}

fn candle(b: &AnyBuffer) -> Result<&CandleBuffer> {
    match b {
        AnyBuffer::Candle(c) => Ok(c),
        _ => Err(mismatch()),
    }
}

fn candle_mut(b: &mut AnyBuffer) -> Result<&mut CandleBuffer> {
    match b {
        AnyBuffer::Candle(c) => Ok(c),
        _ => Err(mismatch()),
    }
}

fn neuron(b: &AnyBuffer) -> Result<&NeuronBuffer> {
    match b {
        AnyBuffer::Neuron(n) => Ok(n),
        _ => Err(mismatch()),
    }
}

fn neuron_mut(b: &mut AnyBuffer) -> Result<&mut NeuronBuffer> {
    match b {
        AnyBuffer::Neuron(n) => Ok(n),
        _ => Err(mismatch()),
    }
}

impl Device for AnyDevice {
    type Buffer = AnyBuffer;
    type Executable = AnyExecutable;

    fn info(&self) -> &DeviceInfo {
        match self {
            AnyDevice::Candle(d) => d.info(),
            AnyDevice::Neuron(d) => d.info(),
        }
    }

    fn allocate(&self, dtype: DType, dims: &[usize]) -> Result<AnyBuffer> {
        match self {
            AnyDevice::Candle(d) => d.allocate(dtype, dims).map(AnyBuffer::Candle),
            AnyDevice::Neuron(d) => d.allocate(dtype, dims).map(AnyBuffer::Neuron),
        }
    }

    fn upload(&self, host: &HostTensor) -> Result<AnyBuffer> {
        match self {
            AnyDevice::Candle(d) => d.upload(host).map(AnyBuffer::Candle),
            AnyDevice::Neuron(d) => d.upload(host).map(AnyBuffer::Neuron),
        }
    }

    fn upload_weights(
        &self,
        plans: &[WeightPlan],
        fetch: &mut dyn FnMut(usize) -> Result<HostTensor>,
    ) -> Result<Vec<AnyBuffer>> {
        Ok(match self {
            AnyDevice::Candle(d) => d
                .upload_weights(plans, fetch)?
                .into_iter()
                .map(AnyBuffer::Candle)
                .collect(),
            AnyDevice::Neuron(d) => d
                .upload_weights(plans, fetch)?
                .into_iter()
                .map(AnyBuffer::Neuron)
                .collect(),
        })
    }

    fn write(&self, buffer: &mut AnyBuffer, host: &HostTensor) -> Result<()> {
        match self {
            AnyDevice::Candle(d) => d.write(candle_mut(buffer)?, host),
            AnyDevice::Neuron(d) => d.write(neuron_mut(buffer)?, host),
        }
    }

    fn download(&self, buffer: &AnyBuffer) -> Result<HostTensor> {
        match self {
            AnyDevice::Candle(d) => d.download(candle(buffer)?),
            AnyDevice::Neuron(d) => d.download(neuron(buffer)?),
        }
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<AnyExecutable> {
        match self {
            AnyDevice::Candle(d) => d.compile(graph, options).map(AnyExecutable::Candle),
            AnyDevice::Neuron(d) => d.compile(graph, options).map(AnyExecutable::Neuron),
        }
    }

    fn load_artifact(&self, artifact: &[u8], expected: &Signature) -> Result<AnyExecutable> {
        match self {
            AnyDevice::Candle(d) => d
                .load_artifact(artifact, expected)
                .map(AnyExecutable::Candle),
            AnyDevice::Neuron(d) => d
                .load_artifact(artifact, expected)
                .map(AnyExecutable::Neuron),
        }
    }

    fn execute(
        &self,
        exe: &AnyExecutable,
        args: ExecuteArgs<'_, AnyBuffer>,
    ) -> Result<Vec<AnyBuffer>> {
        self.info().check_executable(exe.device())?;
        match (self, exe) {
            (AnyDevice::Candle(d), AnyExecutable::Candle(e)) => {
                let args = args.try_map(candle, candle_mut)?;
                Ok(d.execute(e, args)?
                    .into_iter()
                    .map(AnyBuffer::Candle)
                    .collect())
            }
            (AnyDevice::Neuron(d), AnyExecutable::Neuron(e)) => {
                let args = args.try_map(neuron, neuron_mut)?;
                Ok(d.execute(e, args)?
                    .into_iter()
                    .map(AnyBuffer::Neuron)
                    .collect())
            }
            _ => Err(mismatch()),
        }
    }

    fn synchronize(&self) -> Result<()> {
        match self {
            AnyDevice::Candle(d) => d.synchronize(),
            AnyDevice::Neuron(d) => d.synchronize(),
        }
    }

    fn memory_in_use(&self) -> Option<u64> {
        match self {
            AnyDevice::Candle(d) => d.memory_in_use(),
            AnyDevice::Neuron(d) => d.memory_in_use(),
        }
    }
}
