//! # switchyard-candle
//!
//! Switchyard's candle backend. [`CandleDevice`] (the CPU, or an NVIDIA GPU with the `cuda`
//! feature: [`CandleDevice::cuda`]) implements the
//! [`Device`](switchyard_runtime::Device) trait by compiling a graph into a
//! [`CandleExecutable`]: the graph's nodes as candle calls, using candle-nn's fused kernels
//! (RMSNorm, LayerNorm, rotary embeddings, softmax) and candle's quantized matmul for GGUF weight
//! types. Symbolic dimensions are bound at execute time; the KV cache is updated in place.
//!
//! ```
//! use switchyard_candle::CandleDevice;
//! use switchyard_runtime::{DType, Device, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};
//!
//! let cpu = CandleDevice::cpu();
//! let mut b = GraphBuilder::new("scale");
//! let x = b.input("x", TensorSpec::new(DType::F32, [3]))?;
//! let y = b.affine(x, 2.0, 1.0)?;
//! b.output("y", y)?;
//! let exe = cpu.compile(&b.finish()?, &Default::default())?;
//! let x = cpu.upload(&HostTensor::from_f32(&[3], &[0.0, 1.0, 2.0])?)?;
//! let out = cpu.execute(&exe, ExecuteArgs::new().input("x", &x))?;
//! assert_eq!(cpu.download(&out[0])?.to_f32_vec()?, vec![1.0, 3.0, 5.0]);
//! # Ok::<(), switchyard_runtime::Error>(())
//! ```
#![warn(missing_docs)]

mod buffer;
mod cpu;
mod cpu_info;
mod cuda;
mod device;
mod executable;
mod fused;
mod fusion;
mod i32_on_host;
mod ops;
pub mod profile;

pub use buffer::{from_candle_dtype, to_candle_dtype, to_ggml_dtype, CandleBuffer};
pub use cpu::kernels::CpuKernels;
pub use cpu::packed::PackedMatrix;
pub use device::CandleDevice;
/// A GPU device (`cuda:N`) is a [`CandleDevice`] opened with [`CandleDevice::cuda`]: the same graph
/// compiler as the CPU over candle's CUDA tensors.
pub type CudaDevice = CandleDevice;
pub use executable::CandleExecutable;
