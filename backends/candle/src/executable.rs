//! A graph compiled for candle: the node list with constants uploaded and value lifetimes known,
//! executed as a sequence of candle calls.

use crate::buffer::{backend_err, upload, CandleBuffer};
use crate::cpu::kernels::Isa;
use crate::ops::{self, EvalError};
use crate::profile;
use candle_core::Device as CDevice;
use std::sync::Arc;
use switchyard_runtime::{
    bind_args, ArgSource, Error, Executable, ExecuteArgs, Graph, Op, Result, Signature,
};

/// A compiled graph for a [`crate::CandleDevice`]. Compile once, execute many times: constants
/// are uploaded at compile time and each intermediate value is dropped right after its last use.
pub struct CandleExecutable {
    graph: Arc<Graph>,
    signature: Signature,
    fingerprint: String,
    /// Uploaded constants, by node index.
    constants: Vec<Option<CandleBuffer>>,
    /// Index of the last node reading each node (`usize::MAX`: kept to the end).
    last_use: Vec<usize>,
    /// Nodes whose value is a state buffer updated in place (outputs of those are copied).
    aliases_state: Vec<bool>,
    /// Which CPU kernels of `crate::cpu` may replace candle's.
    isa: Isa,
}

impl CandleExecutable {
    pub(crate) fn compile(device: &CDevice, name: &str, graph: &Graph, isa: Isa) -> Result<Self> {
        let mut constants = Vec::with_capacity(graph.nodes().len());
        let mut aliases_state = vec![false; graph.nodes().len()];
        for (i, node) in graph.nodes().iter().enumerate() {
            constants.push(match &node.op {
                Op::Constant { value } => Some(upload(device, name, value)?),
                _ => None,
            });
            if let Op::KvWrite { .. } = node.op {
                aliases_state[i] = true;
            }
        }
        Ok(CandleExecutable {
            signature: graph.signature(),
            fingerprint: graph.fingerprint(),
            last_use: graph.last_uses(),
            graph: Arc::new(graph.clone()),
            constants,
            aliases_state,
            isa: if device.is_cpu() { isa } else { Isa::PORTABLE },
        })
    }

    /// The graph this executable was compiled from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub(crate) fn execute(
        &self,
        device: &CDevice,
        name: &str,
        mut args: ExecuteArgs<'_, CandleBuffer>,
    ) -> Result<Vec<CandleBuffer>> {
        let bound = bind_args(&self.signature, &args)?;
        // State may change in place, so host copies of its values would go stale: drop them.
        for (_, buf) in args.state_mut().iter_mut() {
            if let CandleBuffer::Indices { tensor, .. } = &**buf {
                **buf = CandleBuffer::Tensor(tensor.clone());
            }
        }
        let nodes = self.graph.nodes();
        let mut values: Vec<Option<CandleBuffer>> = vec![None; nodes.len()];
        for (pid, src) in self.graph.params().iter().zip(&bound.sources) {
            values[pid.index()] = Some(match *src {
                ArgSource::Input(i) => args.inputs()[i].1.clone(),
                // Cloning shares the storage: kv_write updates the caller's buffer in place.
                ArgSource::State(i) => args.state_mut()[i].1.clone(),
            });
        }
        for (i, node) in nodes.iter().enumerate() {
            match &node.op {
                Op::Parameter { .. } => {}
                Op::Constant { .. } => values[i] = self.constants[i].clone(),
                op => {
                    let out = node.spec.shape.resolve(&bound.dims)?;
                    let operands: Vec<&CandleBuffer> = node
                        .inputs
                        .iter()
                        .map(|id| values[id.index()].as_ref().expect("operands precede users"))
                        .collect();
                    let started = profile::enabled().then(std::time::Instant::now);
                    let v = ops::eval(op, &operands, &out, node.spec.dtype, device, self.isa)
                        .map_err(|e| match e {
                            EvalError::Invalid(message) => Error::exec(op.name(), message),
                            EvalError::Candle(e) => {
                                backend_err(name, &format!("node %{i} ({})", op.name()), e)
                            }
                        })?;
                    if let Some(t) = started {
                        profile::record(op.name(), t.elapsed());
                    }
                    values[i] = Some(v);
                }
            }
            for id in &node.inputs {
                if self.last_use[id.index()] == i {
                    values[id.index()] = None;
                }
            }
        }
        self.graph
            .outputs()
            .iter()
            .map(|(_, id)| {
                let v = values[id.index()].clone().expect("outputs stay alive");
                match v {
                    // An output that is a state buffer would change under the caller at the
                    // next step: hand out a copy.
                    CandleBuffer::Tensor(t) if self.aliases_state[id.index()] => t
                        .copy()
                        .map(CandleBuffer::Tensor)
                        .map_err(|e| backend_err(name, "copy output", e)),
                    v => Ok(v),
                }
            })
            .collect()
    }
}

impl Executable for CandleExecutable {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
