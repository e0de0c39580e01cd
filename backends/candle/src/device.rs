//! The candle device: CPU, and NVIDIA GPUs behind the `cuda` feature, through candle's kernels.

use crate::buffer::{self, to_candle_dtype, CandleBuffer};
use crate::cpu::kernels::{CpuKernels, Isa};
use crate::cpu::packed::PackedMatrix;
use crate::executable::CandleExecutable;
use candle_core::{Device as CDevice, Tensor};
use switchyard_runtime::{
    CompileOptions, DType, Device, DeviceInfo, DeviceKind, Error, ExecuteArgs, Graph, HostTensor,
    Result, ShapeSupport, WeightPlan, WeightUse,
};

/// A device backed by candle: `cpu` (and `cuda:N` when built with the `cuda` feature).
///
/// ```
/// use switchyard_candle::CandleDevice;
/// use switchyard_runtime::Device;
/// let cpu = CandleDevice::cpu();
/// assert_eq!(cpu.info().name, "cpu");
/// ```
pub struct CandleDevice {
    device: CDevice,
    info: DeviceInfo,
    /// Which CPU kernels of `crate::cpu` may replace candle's (only on the CPU).
    isa: Isa,
}

pub(crate) const PLAIN: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::I64,
    DType::U32,
    DType::U8,
];

pub(crate) const QUANTIZED: [DType; 10] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

impl std::fmt::Debug for CandleDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CandleDevice({})", self.info.name)
    }
}

impl CandleDevice {
    /// The host CPU with the best kernels it runs, or those `SWITCHYARD_CPU_KERNELS` names
    /// (see [`CpuKernels::default_for_this_cpu`]).
    pub fn cpu() -> Self {
        let isa = Isa::new(CpuKernels::default_for_this_cpu()).expect("a variant this CPU runs");
        Self::cpu_with(isa)
    }

    /// The host CPU with the kernel variant `kernels`, or an error naming the variant when this
    /// CPU cannot execute it.
    pub fn cpu_with_kernels(kernels: CpuKernels) -> Result<Self> {
        let isa = Isa::new(kernels).ok_or_else(|| Error::DeviceUnavailable {
            device: "cpu".into(),
            reason: format!(
                "this CPU cannot execute the {kernels} kernels (it runs: {})",
                CpuKernels::available()
                    .iter()
                    .map(|k| k.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        crate::cpu::prefetch::from_env().map_err(|reason| Error::DeviceUnavailable {
            device: "cpu".into(),
            reason,
        })?;
        Ok(Self::cpu_with(isa))
    }

    fn cpu_with(isa: Isa) -> Self {
        let cpu = crate::cpu_info::describe();
        let mut details = cpu.details;
        details.push(("kernels".into(), isa.kernels().label().into()));
        let here: Vec<&str> = CpuKernels::available().iter().map(|k| k.label()).collect();
        details.push((
            "kernel variants".into(),
            format!("{} (SWITCHYARD_CPU_KERNELS)", here.join(", ")),
        ));
        details.push(("weight prefetch".into(), crate::cpu::prefetch::describe()));
        CandleDevice {
            device: CDevice::Cpu,
            isa,
            info: DeviceInfo {
                name: "cpu".into(),
                kind: DeviceKind::Cpu,
                ordinal: 0,
                preferred_dtype: Some(DType::F32),
                threads: Some(cpu.threads),
                description: cpu.description,
                emulated: false,
                memory_total: cpu.memory_total,
                memory_free: cpu.memory_free,
                peak_bandwidth: None,
                shape_support: ShapeSupport::Dynamic,
                dtypes: PLAIN.to_vec(),
                quantized: QUANTIZED.to_vec(),
                runtime_compile: true,
                details,
            },
        }
    }

    /// The CPU kernel variant this device runs ([`CpuKernels::Portable`] off the CPU).
    pub fn kernels(&self) -> CpuKernels {
        self.isa.kernels()
    }

    /// GPU `ordinal` (`cuda:N`) through candle's CUDA kernels: the same graph compiler as the
    /// CPU. In a build without the `cuda` feature, or on a machine without an NVIDIA driver or
    /// GPU, an [`Error::DeviceUnavailable`] that says which.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        let (device, info) = crate::cuda::open(ordinal)?;
        Ok(CandleDevice {
            device,
            info,
            isa: Isa::PORTABLE,
        })
    }

    /// The CPU through candle's own kernels only, without the CPU kernels of this crate: the
    /// code path every other candle device (CUDA) takes, so tests on a machine without a GPU
    /// cover it. Shown as `cpu` with `kernels: portable`.
    pub fn cpu_portable() -> Self {
        Self::cpu_with(Isa::PORTABLE)
    }

    /// GPUs the CUDA driver sees (0 without the `cuda` feature or a driver).
    pub fn cuda_device_count() -> usize {
        crate::cuda::device_count()
    }

    /// The underlying candle device.
    pub fn candle_device(&self) -> &CDevice {
        &self.device
    }
}

impl Device for CandleDevice {
    type Buffer = CandleBuffer;
    type Executable = CandleExecutable;

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn allocate(&self, dtype: DType, dims: &[usize]) -> Result<CandleBuffer> {
        let d = to_candle_dtype(dtype).ok_or_else(|| Error::Unsupported {
            device: self.info.name.clone(),
            what: format!("allocating {dtype} buffers (upload quantized weights instead)"),
        })?;
        let t = Tensor::zeros(dims, d, &self.device)
            .map_err(|e| buffer::backend_err(&self.info.name, "allocate", e))?;
        Ok(CandleBuffer::Tensor(t))
    }

    fn upload(&self, host: &HostTensor) -> Result<CandleBuffer> {
        buffer::upload(&self.device, &self.info.name, host)
    }

    fn download(&self, buffer: &CandleBuffer) -> Result<HostTensor> {
        buffer::download(&self.info.name, buffer)
    }

    /// On the CPU, f32 matrices used only as transposed matmul operands (and gather tables), or
    /// only as plain ones, are packed into the panel layout of the CPU kernels, once; everything
    /// else is uploaded as is.
    fn upload_weights(
        &self,
        plans: &[WeightPlan],
        fetch: &mut dyn FnMut(usize) -> Result<HostTensor>,
    ) -> Result<Vec<CandleBuffer>> {
        let mut out = Vec::with_capacity(plans.len());
        for (i, plan) in plans.iter().enumerate() {
            let host = fetch(i)?;
            let packable = crate::cpu::gemm::available(self.isa)
                && host.dtype() == DType::F32
                && host.dims().len() == 2
                && plan.uses.contains(&WeightUse::MatMulTransposed)
                && plan
                    .uses
                    .iter()
                    .all(|u| matches!(u, WeightUse::MatMulTransposed | WeightUse::Gather));
            // A plain matmul's `[K, N]` operand (GPT-2's `Conv1D`), used only so, is packed
            // from its columns for the same kernels.
            let columns = crate::cpu::gemm::available(self.isa)
                && host.dtype() == DType::F32
                && host.dims().len() == 2
                && !plan.uses.is_empty()
                && plan.uses.iter().all(|u| *u == WeightUse::MatMul);
            let blocks = crate::cpu::quant::available(host.dtype(), self.isa)
                && host.dims().len() == 2
                && host.dims()[1].is_multiple_of(host.dtype().block_len());
            if packable {
                let (n, k) = (host.dims()[0], host.dims()[1]);
                // Packed straight from the file's bytes where they are aligned f32 (no
                // temporary copy of the whole matrix beside the packed one).
                let copied;
                let values: &[f32] = match bytemuck::try_cast_slice(host.as_bytes()) {
                    Ok(values) => values,
                    Err(_) => {
                        copied = host.to_f32_vec()?;
                        &copied
                    }
                };
                // Only the packed copy is read from now on: a memory-mapped file's pages go as
                // they are packed, so the weight is never resident twice.
                let packed = PackedMatrix::pack_reporting(values, n, k, |rows| {
                    host.release_pages_of(rows.start * k * 4..rows.end * k * 4)
                });
                out.push(CandleBuffer::Packed(std::sync::Arc::new(packed)));
                host.release_pages();
            } else if columns {
                let (k, n) = (host.dims()[0], host.dims()[1]);
                let packed = PackedMatrix::pack_columns(&host.to_f32_vec()?, k, n);
                out.push(CandleBuffer::Packed(std::sync::Arc::new(packed)));
                host.release_pages();
            } else if blocks {
                // Read in place by the CPU kernels: a GGUF weight stays in the memory map.
                out.push(CandleBuffer::Blocks(host));
            } else {
                out.push(self.upload(&host)?);
                host.release_pages();
            }
        }
        Ok(out)
    }

    fn compile(&self, graph: &Graph, _options: &CompileOptions) -> Result<CandleExecutable> {
        CandleExecutable::compile(
            &self.device,
            self.info.id(),
            &self.info.name,
            graph,
            self.isa,
        )
    }

    fn execute(
        &self,
        exe: &CandleExecutable,
        args: ExecuteArgs<'_, CandleBuffer>,
    ) -> Result<Vec<CandleBuffer>> {
        self.info
            .check_executable(switchyard_runtime::Executable::device(exe))?;
        exe.execute(&self.device, &self.info.name, args)
    }

    fn synchronize(&self) -> Result<()> {
        self.device
            .synchronize()
            .map_err(|e| buffer::backend_err(&self.info.name, "synchronize", e))
    }
}
