//! # Switchyard
//!
//! A portable tensor-inference runtime: one model, every accelerator. Graphs built once run on
//! any [`Device`]: the CPU through candle today, with CUDA and AWS Neuron backends implementing
//! the same trait.
//!
//! This facade is the public API: [`TextGenerator`] for one-call text generation, [`AnyDevice`]
//! to pick a device from a string at run time, the benchmark ([`mod@bench`]) and projections
//! ([`project`]), and curated modules over the crates beneath ([`runtime`], [`models`],
//! [`candle`], [`neuron`]).
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
/// The runtime: dtypes, shapes, host tensors, the graph IR and its builder, the device trait,
/// the reference interpreter and the conformance suite.
pub mod runtime {
    pub use switchyard_runtime::conformance;
    pub use switchyard_runtime::graph::OP_NAMES;
    pub use switchyard_runtime::{
        bind_args, interpret, named_lookups, CompileOptions, DType, Device, DeviceBuffer, DeviceId,
        DeviceInfo, DeviceKind, Dim, Error, Executable, ExecuteArgs, Graph, GraphBuilder,
        HostTensor, Op, ParamInfo, ParamKind, Result, Shape, ShapeSupport, Signature,
        SymbolBindings, TensorSpec, WeightPlan, WeightUse,
    };
}

/// Models: loading (directories, GGUF, hub ids, built-ins), configs, tokenizers and chat
/// templates, graph builders, the plan of executables, the engine and its sessions, sampling and
/// generation.
pub mod models {
    pub use switchyard_models::gguf;
    pub use switchyard_models::{
        argmax, build_encoder_graph, build_graph, check_quantized_support, checkpoint_name,
        generate, plan_executables, plan_pool, slot_bytes, stored_quantized, weight_graph, Arch,
        Batch, BatchOptions, ChatMessage, Embedder, EmbedderOptions, EncoderActivation,
        EncoderArch, EncoderConfig, EncoderGraphOptions, EncoderModel, Engine, EngineOptions,
        Entry, EntryKind, ExecutablePlan, GenerateOptions, Generation, GenerationConfig,
        GraphOptions, Model, ModelConfig, ModelError, PlannedExecutable, PoolExecutable, PoolPlan,
        PoolShapes, Pooling, Result, Sampler, SamplingParams, SentenceConfig, SequenceId,
        SequenceParams, Session, Shapes, StepStats, StopReason, Timings, TokenEvent, Tokenizer,
        TokenizerConfig, WeightSource, BUILTIN_MODELS, DEFAULT_MAX_BATCH, DEFAULT_MAX_CONTEXT,
        DEFAULT_MAX_SLOTS, DEFAULT_PREFILL_CHUNK,
    };
}

/// The candle device (the CPU, and CUDA GPUs with the `cuda` feature) and its CPU kernel
/// variants.
pub mod candle {
    pub use switchyard_candle::{
        profile, to_ggml_dtype, CandleBuffer, CandleDevice, CandleExecutable, CpuKernels,
    };
}

/// AWS NeuronCores through libnrt: the device, its compile cache and `neuronx-cc`, the HLO
/// export, the emulation artifacts and the emulator's location.
pub mod neuron {
    pub use switchyard_neuron::{
        artifact, cache, compiler, emulator, hlo, NeuronBuffer, NeuronDevice, NeuronExecutable,
    };
}
pub use switchyard_runtime::{
    interpret, CompileOptions, DType, Device, DeviceBuffer, DeviceInfo, Dim, Error, Executable,
    ExecuteArgs, Graph, GraphBuilder, HostTensor, Result, Shape, ShapeSupport, SymbolBindings,
    TensorSpec,
};
pub use text_generator::{Completion, LoadOptions, TextError, TextGenerator, TextOptions};
