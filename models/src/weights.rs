//! Where an engine's weights come from: a checkpoint on disk, or generated in memory.

use crate::config::Arch;
use crate::error::Result;
use switchyard_runtime::HostTensor;

/// A source of named weight tensors.
///
/// Implemented by [`crate::Checkpoint`] (memory-mapped safetensors) and
/// [`crate::RandomWeights`] (deterministic random weights for benchmarks). The engine asks for
/// each weight its graphs declare, checks the shape, converts the dtype and uploads it, so a
/// source may produce tensors lazily, one at a time.
pub trait WeightSource: Send + Sync {
    /// True when the source has a tensor called `name`.
    fn contains(&self, name: &str) -> bool;

    /// The tensor called `name` (in whatever dtype it is stored).
    fn tensor(&self, name: &str) -> Result<HostTensor>;

    /// Where `name` comes from, for messages (a file path, or a description).
    fn origin(&self, name: &str) -> String;

    /// The dtype `name` is stored in, when the source knows it without reading the tensor; a
    /// block-quantized dtype makes the engine keep the weight quantized.
    fn stored_dtype(&self, _name: &str) -> Option<switchyard_runtime::DType> {
        None
    }
}

/// The name `source` holds a graph weight under: GPT-2 checkpoints may prefix `transformer.`.
pub fn checkpoint_name<'a>(
    source: &dyn WeightSource,
    name: &'a str,
    arch: Arch,
) -> std::borrow::Cow<'a, str> {
    if arch == Arch::Gpt2 && !source.contains(name) {
        let prefixed = format!("transformer.{name}");
        if source.contains(&prefixed) {
            return prefixed.into();
        }
    }
    name.into()
}

impl WeightSource for crate::Checkpoint {
    fn contains(&self, name: &str) -> bool {
        crate::Checkpoint::contains(self, name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        crate::Checkpoint::tensor(self, name)
    }

    fn origin(&self, name: &str) -> String {
        self.file_of(name)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the checkpoint".into())
    }
}
