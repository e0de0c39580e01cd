//! # switchyard-neuron
//!
//! Switchyard's AWS Neuron backend. [`NeuronDevice`] (`neuron:N`) implements the
//! [`Device`](switchyard_runtime::Device) trait on one NeuronCore through libnrt, loaded at run
//! time by `switchyard-neuron-sys` (so this builds and runs everywhere; a missing library is a
//! clear "unavailable" error). Safe wrappers keep libnrt's rules: one process-wide runtime that
//! closes only after every model is unloaded and tensor freed; tensor sets that keep their tensors
//! alive; every handle freed exactly once. Inputs, state and outputs are bound **by name**
//! through tensor sets, state under both its input and its aliased output name so it is updated
//! in place.
//!
//! Without Trainium, the project's ABI-compatible emulator (`switchyard-nrt-emulator`) stands in
//! for `libnrt.so.1`; a device on it presents itself as `neuron:N (emulated)`.
#![warn(missing_docs)]

pub mod artifact;
mod buffer;
pub mod cache;
pub mod compiler;
mod device;
pub mod emulator;
mod executable;
mod handles;
pub mod hlo;
mod runtime;

pub use buffer::NeuronBuffer;
pub use device::NeuronDevice;
pub use executable::NeuronExecutable;
pub use handles::TensorInfo;
pub use runtime::{call_error, NrtRuntime};
