//! NVIDIA GPUs (`cuda:N`) through candle's CUDA backend: opening a GPU, and what the device
//! reports about itself. Built only with the `cuda` feature; without it every `cuda:N` is
//! unavailable with the reason.

#[cfg(not(feature = "cuda"))]
use switchyard_runtime::{DeviceInfo, Error, Result};

/// The reason given for `cuda:N` in a build without the feature.
#[cfg(not(feature = "cuda"))]
pub(crate) const NOT_BUILT: &str =
    "this build has no CUDA support (rebuild with `--features cuda`)";

/// Opens GPU `ordinal`: the candle device and the info shown for it.
#[cfg(not(feature = "cuda"))]
pub(crate) fn open(ordinal: usize) -> Result<(candle_core::Device, DeviceInfo)> {
    Err(Error::DeviceUnavailable {
        device: format!("cuda:{ordinal}"),
        reason: NOT_BUILT.into(),
    })
}

/// GPUs the driver sees (0 without the feature or a driver).
#[cfg(not(feature = "cuda"))]
pub(crate) fn device_count() -> usize {
    0
}

/// Peak memory bandwidth (bytes/s) of well-known GPUs by name, for the roofline when the driver
/// does not report memory clock and bus width. Datasheet figures.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn datasheet_bandwidth(name: &str) -> Option<f64> {
    let n = name.to_ascii_lowercase();
    let table: [(&str, f64); 8] = [
        ("h200", 4.8e12),
        ("h100 nvl", 3.9e12),
        ("h100 pcie", 2.0e12),
        ("h100", 3.35e12),
        ("a100-sxm4-80gb", 2.039e12),
        ("a100", 1.555e12),
        ("l40s", 0.864e12),
        ("a10g", 0.6e12),
    ];
    table.iter().find(|(k, _)| n.contains(k)).map(|&(_, b)| b)
}

/// Peak DRAM bandwidth from the memory clock (kHz, double data rate) and bus width (bits).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn bandwidth_from_clock(memory_clock_khz: i32, bus_width_bits: i32) -> Option<f64> {
    (memory_clock_khz > 0 && bus_width_bits > 0)
        .then(|| memory_clock_khz as f64 * 1e3 * 2.0 * bus_width_bits as f64 / 8.0)
}

#[cfg(feature = "cuda")]
pub(crate) use built::{device_count, open};

#[cfg(feature = "cuda")]
mod built {
    use super::{bandwidth_from_clock, datasheet_bandwidth};
    use crate::device::{PLAIN, QUANTIZED};
    use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaContext, DriverError};
    use switchyard_runtime::{DeviceInfo, DeviceKind, Error, Result, ShapeSupport};

    /// Why the driver refused, in words a user can act on.
    fn reason(call: &str, e: &DriverError) -> String {
        use sys::cudaError_enum as E;
        let what = match e.0 {
            E::CUDA_ERROR_STUB_LIBRARY => {
                "the libcuda found is the link-time stub, not a driver: this machine has no NVIDIA driver"
            }
            E::CUDA_ERROR_NO_DEVICE => "the driver sees no CUDA-capable GPU",
            E::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => {
                "the NVIDIA kernel driver and libcuda do not match (or the driver is older than the CUDA 13.0 this build needs)"
            }
            E::CUDA_ERROR_INVALID_DEVICE => "no such GPU",
            _ => "the CUDA driver reported an error",
        };
        format!("{what} ({call} returned {:?})", e.0)
    }

    fn unavailable(ordinal: usize, reason: String) -> Error {
        Error::DeviceUnavailable {
            device: format!("cuda:{ordinal}"),
            reason,
        }
    }

    pub(crate) fn device_count() -> usize {
        result::init()
            .and_then(|_| CudaContext::device_count())
            .map_or(0, |n| n.max(0) as usize)
    }

    pub(crate) fn open(ordinal: usize) -> Result<(candle_core::Device, DeviceInfo)> {
        result::init().map_err(|e| unavailable(ordinal, reason("cuInit", &e)))?;
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(ordinal, reason("cuDeviceGetCount", &e)))?
            as usize;
        if ordinal >= count {
            return Err(unavailable(
                ordinal,
                format!(
                    "there are {count} GPU(s): cuda:0 to cuda:{}",
                    count.max(1) - 1
                ),
            ));
        }
        let device = candle_core::Device::new_cuda(ordinal)
            .map_err(|e| unavailable(ordinal, format!("candle could not open it: {e}")))?;
        let qmatmul = QuantMatMul::from_env().map_err(|e| unavailable(ordinal, e))?;
        candle_core::quantized::cuda::set_force_dmmv(qmatmul == QuantMatMul::Dequantize);
        let mut info = describe(&device, ordinal)?;
        info.details
            .push(("quantized matmul".into(), qmatmul.describe().into()));
        Ok((device, info))
    }

    /// How candle multiplies by a GGUF block-quantized weight on the GPU, chosen at run time
    /// with `SWITCHYARD_CUDA_QMATMUL` so each variant can be checked on a machine that has one.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum QuantMatMul {
        /// `fast` (the default): candle's MMVQ/MMQ kernels, activations quantized to q8_1.
        Fast,
        /// `dequantize`: weights dequantized, activations kept in f32 (slower, no activation
        /// rounding).
        Dequantize,
    }

    impl QuantMatMul {
        const VAR: &'static str = "SWITCHYARD_CUDA_QMATMUL";

        fn from_env() -> std::result::Result<Self, String> {
            match std::env::var(Self::VAR).as_deref() {
                Err(_) | Ok("") | Ok("fast") => Ok(Self::Fast),
                Ok("dequantize") => Ok(Self::Dequantize),
                Ok(other) => Err(format!(
                    "{}={other:?}: expected `fast` or `dequantize`",
                    Self::VAR
                )),
            }
        }

        fn describe(self) -> &'static str {
            match self {
                Self::Fast => "fast: MMVQ/MMQ, activations as q8_1 (SWITCHYARD_CUDA_QMATMUL)",
                Self::Dequantize => {
                    "dequantize: f32 activations, dequantized weights (SWITCHYARD_CUDA_QMATMUL)"
                }
            }
        }
    }

    fn describe(device: &candle_core::Device, ordinal: usize) -> Result<DeviceInfo> {
        let name = format!("cuda:{ordinal}");
        let err = |what: &str, e: DriverError| Error::backend(&name, format!("{what}: {e}"));
        let candle_core::Device::Cuda(cuda) = device else {
            unreachable!("new_cuda returns a CUDA device")
        };
        let stream = cuda.cuda_stream();
        let ctx = stream.context();
        let gpu = ctx.name().map_err(|e| err("cuDeviceGetName", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| err("compute capability", e))?;
        let (free, total) = ctx.mem_get_info().map_err(|e| err("cuMemGetInfo", e))?;
        let attr = |a| ctx.attribute(a).unwrap_or(0);
        use sys::CUdevice_attribute_enum as A;
        let sms = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        let clock = attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
        let bus = attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
        let (bandwidth, source) = match bandwidth_from_clock(clock, bus) {
            Some(b) => (
                Some(b),
                format!("{clock} kHz × {bus}-bit bus, double data rate"),
            ),
            None => match datasheet_bandwidth(&gpu) {
                Some(b) => (Some(b), "datasheet table".to_string()),
                None => (None, "unknown".to_string()),
            },
        };
        Ok(DeviceInfo {
            name,
            kind: DeviceKind::Cuda,
            ordinal,
            preferred_dtype: None,
            threads: None,
            description: format!("{gpu}, compute capability {major}.{minor}, {sms} SMs"),
            emulated: false,
            memory_total: Some(total as u64),
            memory_free: Some(free as u64),
            peak_bandwidth: bandwidth,
            shape_support: ShapeSupport::Dynamic,
            dtypes: PLAIN.to_vec(),
            quantized: QUANTIZED.to_vec(),
            runtime_compile: true,
            details: vec![
                ("compute capability".into(), format!("{major}.{minor}")),
                ("multiprocessors".into(), sms.to_string()),
                (
                    "memory bandwidth".into(),
                    match bandwidth {
                        Some(b) => format!("{:.0} GB/s ({source})", b / 1e9),
                        None => "unknown".into(),
                    },
                ),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(not(feature = "cuda"))]
    use switchyard_runtime::Error;

    #[test]
    fn bandwidth_from_the_memory_clock_and_the_datasheet() {
        // An H100 SXM reports a 2619 MHz memory clock on a 5120-bit bus: 3.35 TB/s.
        let b = bandwidth_from_clock(2_619_000, 5120).unwrap();
        assert!((b - 3.352e12).abs() < 1e9, "{b}");
        assert_eq!(bandwidth_from_clock(0, 5120), None);
        assert_eq!(datasheet_bandwidth("NVIDIA H100 80GB HBM3"), Some(3.35e12));
        assert_eq!(datasheet_bandwidth("NVIDIA H100 PCIe"), Some(2.0e12));
        assert_eq!(datasheet_bandwidth("NVIDIA H200"), Some(4.8e12));
        assert_eq!(datasheet_bandwidth("Some Other GPU"), None);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_cuda_is_unavailable_with_the_reason() {
        match open(0) {
            Err(Error::DeviceUnavailable { device, reason }) => {
                assert_eq!(device, "cuda:0");
                assert!(reason.contains("--features cuda"), "{reason}");
            }
            other => panic!("expected unavailable, got {:?}", other.map(|(_, i)| i)),
        }
    }
}
