//! Picking a device at run time from a string (`cpu`, `cuda:0`).

use switchyard_candle::{CandleBuffer, CandleDevice, CandleExecutable};
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
    /// A candle device (CPU).
    Candle(CandleDevice),
}

/// A buffer of an [`AnyDevice`].
#[derive(Clone, Debug)]
pub enum AnyBuffer {
    /// A candle buffer.
    Candle(CandleBuffer),
}

/// An executable of an [`AnyDevice`].
pub enum AnyExecutable {
    /// A candle executable.
    Candle(CandleExecutable),
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
}

fn parse(name: &str) -> Option<Requested> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "cpu" => Some(Requested::Cpu),
        "cuda" | "gpu" => Some(Requested::Cuda(0)),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Requested::Cuda),
    }
}

impl AnyDevice {
    /// Opens the device named by `name` (`cpu`, `cuda:N`). An unknown string is an error that
    /// lists the devices this build can see; a known but unusable one says why.
    pub fn open(name: &str) -> Result<AnyDevice> {
        match parse(name) {
            Some(Requested::Cpu) => Ok(AnyDevice::Candle(CandleDevice::cpu())),
            Some(Requested::Cuda(n)) => Err(Error::DeviceUnavailable {
                device: format!("cuda:{n}"),
                reason: "this build has no CUDA support (rebuild with `--features cuda`)".into(),
            }),
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

    /// Every device this build knows, each with its info or the reason it is unavailable.
    pub fn probe_all() -> Vec<DeviceStatus> {
        ["cpu", "cuda:0"]
            .iter()
            .map(|name| DeviceStatus {
                name: name.to_string(),
                status: AnyDevice::open(name)
                    .map(|d| d.info().clone())
                    .map_err(|e| match e {
                        Error::DeviceUnavailable { reason, .. } => reason,
                        other => other.to_string(),
                    }),
            })
            .collect()
    }
}

impl DeviceBuffer for AnyBuffer {
    fn dtype(&self) -> DType {
        match self {
            AnyBuffer::Candle(b) => b.dtype(),
        }
    }

    fn dims(&self) -> &[usize] {
        match self {
            AnyBuffer::Candle(b) => b.dims(),
        }
    }
}

impl Executable for AnyExecutable {
    fn signature(&self) -> &Signature {
        match self {
            AnyExecutable::Candle(e) => e.signature(),
        }
    }

    fn fingerprint(&self) -> &str {
        match self {
            AnyExecutable::Candle(e) => e.fingerprint(),
        }
    }
}

impl Device for AnyDevice {
    type Buffer = AnyBuffer;
    type Executable = AnyExecutable;

    fn info(&self) -> &DeviceInfo {
        match self {
            AnyDevice::Candle(d) => d.info(),
        }
    }

    fn allocate(&self, dtype: DType, dims: &[usize]) -> Result<AnyBuffer> {
        match self {
            AnyDevice::Candle(d) => d.allocate(dtype, dims).map(AnyBuffer::Candle),
        }
    }

    fn upload(&self, host: &HostTensor) -> Result<AnyBuffer> {
        match self {
            AnyDevice::Candle(d) => d.upload(host).map(AnyBuffer::Candle),
        }
    }

    fn upload_weights(
        &self,
        plans: &[WeightPlan],
        fetch: &mut dyn FnMut(usize) -> Result<HostTensor>,
    ) -> Result<Vec<AnyBuffer>> {
        match self {
            AnyDevice::Candle(d) => Ok(d
                .upload_weights(plans, fetch)?
                .into_iter()
                .map(AnyBuffer::Candle)
                .collect()),
        }
    }

    fn download(&self, buffer: &AnyBuffer) -> Result<HostTensor> {
        match (self, buffer) {
            (AnyDevice::Candle(d), AnyBuffer::Candle(b)) => d.download(b),
        }
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<AnyExecutable> {
        match self {
            AnyDevice::Candle(d) => d.compile(graph, options).map(AnyExecutable::Candle),
        }
    }

    fn load_artifact(&self, artifact: &[u8], expected: &Signature) -> Result<AnyExecutable> {
        match self {
            AnyDevice::Candle(d) => d
                .load_artifact(artifact, expected)
                .map(AnyExecutable::Candle),
        }
    }

    fn execute(
        &self,
        exe: &AnyExecutable,
        args: ExecuteArgs<'_, AnyBuffer>,
    ) -> Result<Vec<AnyBuffer>> {
        match (self, exe) {
            (AnyDevice::Candle(d), AnyExecutable::Candle(e)) => {
                let args = args.try_map(
                    |b| match b {
                        AnyBuffer::Candle(c) => Ok(c),
                    },
                    |b| match b {
                        AnyBuffer::Candle(c) => Ok(c),
                    },
                )?;
                Ok(d.execute(e, args)?
                    .into_iter()
                    .map(AnyBuffer::Candle)
                    .collect())
            }
        }
    }

    fn synchronize(&self) -> Result<()> {
        match self {
            AnyDevice::Candle(d) => d.synchronize(),
        }
    }

    fn memory_in_use(&self) -> Option<u64> {
        match self {
            AnyDevice::Candle(d) => d.memory_in_use(),
        }
    }
}
