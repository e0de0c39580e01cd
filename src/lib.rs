//! # Switchyard
//!
//! A portable tensor-inference runtime: one model, every accelerator. Graphs built once run on
//! any [`Device`]: the CPU through candle today, with CUDA and AWS Neuron backends implementing
//! the same trait.
//!
//! This facade re-exports the runtime ([`runtime`]) and the backends ([`candle`]), and adds
//! [`AnyDevice`], which picks a device from a string at run time.
//!
//! ```
//! use switchyard::{AnyDevice, Device, DType, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};
//!
//! let device = AnyDevice::open("cpu")?;
//! let mut b = GraphBuilder::new("softmax");
//! let x = b.input("x", TensorSpec::new(DType::F32, [1, 4]))?;
//! let y = b.softmax(x)?;
//! b.output("y", y)?;
//! let exe = device.compile(&b.finish()?, &Default::default())?;
//! let x = device.upload(&HostTensor::from_f32(&[1, 4], &[1.0, 1.0, 1.0, 1.0])?)?;
//! let out = device.execute(&exe, ExecuteArgs::new().input("x", &x))?;
//! assert_eq!(device.download(&out[0])?.to_f32_vec()?, vec![0.25; 4]);
//! # Ok::<(), switchyard::Error>(())
//! ```
#![warn(missing_docs)]

mod any_device;
pub mod bench;
pub mod project;
pub mod quantize;
mod text_generator;

pub use any_device::{AnyBuffer, AnyDevice, AnyExecutable, DeviceStatus};
pub use switchyard_candle as candle;
pub use switchyard_models as models;
pub use switchyard_neuron as neuron;
pub use switchyard_runtime as runtime;
pub use switchyard_runtime::{
    interpret, CompileOptions, DType, Device, DeviceBuffer, DeviceInfo, Dim, Error, Executable,
    ExecuteArgs, Graph, GraphBuilder, HostTensor, Result, Shape, ShapeSupport, SymbolBindings,
    TensorSpec,
};
pub use text_generator::{Completion, LoadOptions, TextError, TextGenerator, TextOptions};
