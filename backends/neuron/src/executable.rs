//! A loaded model plus how graph parameters and outputs map to its named inputs and outputs.

use crate::artifact::IoNames;
use crate::buffer::NeuronBuffer;
use crate::handles::{NrtModelHandle, TensorSet};
use switchyard_runtime::{DeviceId, Executable, Signature};

/// A graph compiled for (and loaded on) a NeuronCore.
pub struct NeuronExecutable {
    pub(crate) model: NrtModelHandle,
    pub(crate) signature: Signature,
    pub(crate) names: IoNames,
    pub(crate) fingerprint: String,
    pub(crate) device_id: DeviceId,
    /// Per input position, the output name a state input is also bound under (resolved once).
    pub(crate) aliased_outputs: Vec<Option<String>>,
    /// The tensor sets of the last execution, kept for the next one.
    pub(crate) bound: std::sync::Mutex<Option<Box<BoundSets>>>,
}

/// An executable's input and output tensor sets, built on its first execution and reused: a
/// later execution re-binds only the positions whose tensor changed (another session's cache,
/// say), and reuses its output tensors once the caller has dropped the previous results. A
/// steady-state step therefore allocates no tensor and adds nothing to a set.
pub(crate) struct BoundSets {
    pub inputs: TensorSet,
    pub outputs: TensorSet,
    /// The tensor bound at each input position (its address: a bound tensor is kept alive by
    /// the set, so the address cannot be reused while it is bound).
    pub bound: Vec<usize>,
    /// The output buffers, shared with the caller between executions.
    pub results: Vec<NeuronBuffer>,
}

impl NeuronExecutable {
    /// The model's input and output names.
    pub fn io_names(&self) -> &IoNames {
        &self.names
    }
}

impl Executable for NeuronExecutable {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn device(&self) -> DeviceId {
        self.device_id
    }
}
