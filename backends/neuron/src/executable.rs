//! A loaded model plus how graph parameters and outputs map to its named inputs and outputs.

use crate::handles::NrtModelHandle;
use switchyard_runtime::artifact::IoNames;
use switchyard_runtime::{Executable, Signature};

/// A graph compiled for (and loaded on) a NeuronCore.
pub struct NeuronExecutable {
    pub(crate) model: NrtModelHandle,
    pub(crate) signature: Signature,
    pub(crate) names: IoNames,
    pub(crate) fingerprint: String,
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
}
