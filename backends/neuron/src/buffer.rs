//! Device buffers of the Neuron backend: libnrt device tensors with a dtype and shape.

use crate::handles::NrtTensorHandle;
use std::sync::Arc;
use switchyard_runtime::{DType, DeviceBuffer};

/// A tensor in NeuronCore memory.
#[derive(Clone)]
pub struct NeuronBuffer {
    pub(crate) tensor: Arc<NrtTensorHandle>,
    pub(crate) dtype: DType,
    pub(crate) dims: Vec<usize>,
}

impl std::fmt::Debug for NeuronBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NeuronBuffer({}{:?}, {} bytes)",
            self.dtype,
            self.dims,
            self.tensor.size()
        )
    }
}

impl DeviceBuffer for NeuronBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn dims(&self) -> &[usize] {
        &self.dims
    }
}
