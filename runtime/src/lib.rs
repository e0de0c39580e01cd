//! # switchyard-runtime
//!
//! The core of Switchyard, shared by every backend and by the model code: element types
//! ([`DType`]), shapes with symbolic dimensions ([`Shape`], [`Dim`]), host tensors
//! ([`HostTensor`]), the graph IR ([`Graph`], built with [`GraphBuilder`]), the reference
//! interpreter ([`interpret`]) that is the oracle for every device, and the [`Device`] trait that
//! backends implement. It depends on no tensor library and no FFI.
//!
//! ```
//! use switchyard_runtime::{interpret, DType, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};
//!
//! // y = silu(x · wᵀ)
//! let mut b = GraphBuilder::new("example");
//! let x = b.input("x", TensorSpec::new(DType::F32, [1, 2]))?;
//! let w = b.weight("w", TensorSpec::new(DType::F32, [3, 2]))?;
//! let h = b.matmul_t(x, w)?;
//! let y = b.silu(h)?;
//! b.output("y", y)?;
//! let graph = b.finish()?;
//!
//! let x = HostTensor::from_f32(&[1, 2], &[1.0, -1.0])?;
//! let w = HostTensor::from_f32(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0])?;
//! let out = interpret(&graph, ExecuteArgs::new().input("x", &x).input("w", &w))?;
//! assert_eq!(out[0].dims(), &[1, 3]);
//! # Ok::<(), switchyard_runtime::Error>(())
//! ```
#![warn(missing_docs)]

// Host tensors hold little-endian bytes and some constructors view native values as bytes.
#[cfg(target_endian = "big")]
compile_error!("switchyard-runtime supports little-endian targets only");

mod device;
mod dtype;
mod error;
pub mod graph;
mod interpreter;
pub mod quant;
mod shape;
mod tensor;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use device::{
    bind_args, named_lookups, ArgSource, BoundArgs, CompileOptions, Device, DeviceBuffer, DeviceId,
    DeviceInfo, DeviceKind, Executable, ExecuteArgs, ShapeSupport, WeightPlan,
};
pub use dtype::{DType, UnknownDType, ALL_DTYPES};
pub use error::{Error, Result};
pub use graph::{
    AttentionAttrs, BinaryOp, CompareOp, Graph, GraphBuilder, Node, NodeId, Op, ParamInfo,
    ParamKind, ReduceOp, Signature, UnaryOp, WeightUse,
};
pub use interpreter::interpret;
pub use shape::{Dim, Shape, SymbolBindings};
pub use tensor::{HostTensor, PageRelease, TensorSpec};
