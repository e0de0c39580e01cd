//! The runtime's error type.

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building, compiling or running a graph, or opening a device.
///
/// Every variant names the thing at fault (op, tensor, symbol or device) and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An op was given operands it cannot take (wrong rank, dtype or sizes).
    #[error("invalid graph: op {op}: {message}")]
    Graph {
        /// The op's name (e.g. `matmul`).
        op: &'static str,
        /// What was wrong, with the shapes involved.
        message: String,
    },
    /// A tensor's shape does not match what was declared.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The tensor (input name or description).
        what: String,
        /// The declared shape.
        expected: String,
        /// The shape that was given.
        got: String,
    },
    /// A tensor's dtype does not match what was declared.
    #[error("dtype mismatch for {what}: expected {expected}, got {got}")]
    DTypeMismatch {
        /// The tensor (input name or description).
        what: String,
        /// The declared dtype.
        expected: String,
        /// The dtype that was given.
        got: String,
    },
    /// A graph input, weight or state was not supplied.
    #[error("missing {kind} '{name}' (the graph declares it but it was not supplied)")]
    MissingInput {
        /// `input`, `weight` or `state`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A supplied name matches no graph parameter.
    #[error("unknown {kind} '{name}': the graph has no such parameter")]
    UnknownInput {
        /// `input` or `state`.
        kind: &'static str,
        /// The name that was supplied.
        name: String,
    },
    /// A symbolic dimension had no value when the graph ran.
    #[error("symbolic dimension '{name}' is not bound: give its value with ExecuteArgs::dim or through an input that carries it")]
    UnboundSymbol {
        /// The symbol.
        name: String,
    },
    /// A symbolic dimension was bound beyond its declared maximum.
    #[error("symbolic dimension '{name}' = {value} exceeds its maximum {max}")]
    SymbolOutOfRange {
        /// The symbol.
        name: String,
        /// The value given.
        value: usize,
        /// The declared maximum.
        max: usize,
    },
    /// A host tensor's bytes do not fit its dtype and shape.
    #[error("invalid host tensor: {0}")]
    InvalidTensor(String),
    /// An op failed while executing (e.g. an index out of range).
    #[error("execution failed in op {op}: {message}")]
    Execution {
        /// The op's name.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A device string names no known device.
    #[error("unknown device '{requested}': available devices are {}", available.join(", "))]
    UnknownDevice {
        /// The string that was given.
        requested: String,
        /// The devices this build can see.
        available: Vec<String>,
    },
    /// An executable was run on a device other than the one that compiled it.
    #[error(
        "executable compiled for {compiled_for} cannot run on {device}: compile it on {device}"
    )]
    WrongDevice {
        /// The device that compiled it.
        compiled_for: String,
        /// The device it was given to.
        device: String,
    },
    /// The device exists in this build but cannot be used here.
    #[error("device {device} is unavailable: {reason}")]
    DeviceUnavailable {
        /// The device string.
        device: String,
        /// Why (no driver, library not found, no hardware, ...).
        reason: String,
    },
    /// The device cannot do what was asked.
    #[error("{device} does not support {what}")]
    Unsupported {
        /// The device.
        device: String,
        /// The operation or dtype.
        what: String,
    },
    /// A call into a device's runtime library returned an error status.
    #[error("{device}: {call} returned status {code} ({name})")]
    DeviceCall {
        /// The device.
        device: String,
        /// The library function.
        call: String,
        /// The numeric status.
        code: i64,
        /// The status's name.
        name: String,
    },
    /// A device allocation failed for lack of device memory.
    #[error(
        "{device}: out of device memory: {call} of {requested} bytes for {what} failed ({detail})"
    )]
    DeviceOutOfMemory {
        /// The device.
        device: String,
        /// The library function.
        call: String,
        /// Bytes asked for.
        requested: u64,
        /// What the memory was for.
        what: String,
        /// The status returned and the device's memory use when it failed, as far as known.
        detail: String,
    },
    /// A backend library reported an error.
    #[error("{device}: {message}")]
    Backend {
        /// The device.
        device: String,
        /// The backend's message, with the call that failed where known.
        message: String,
    },
    /// A serialized graph or artifact could not be read or written.
    #[error("serialization: {0}")]
    Serialization(String),
}

impl Error {
    /// Shorthand for [`Error::Graph`].
    pub fn graph(op: &'static str, message: impl Into<String>) -> Self {
        Error::Graph {
            op,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Execution`].
    pub fn exec(op: &'static str, message: impl Into<String>) -> Self {
        Error::Execution {
            op,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(device: impl Into<String>, message: impl ToString) -> Self {
        Error::Backend {
            device: device.into(),
            message: message.to_string(),
        }
    }
}
