//! A graph compiled for candle: the node list with constants uploaded and value lifetimes known,
//! executed as a sequence of candle calls.

use crate::buffer::{backend_err, upload, CandleBuffer};
use crate::cpu::kernels::Isa;
use crate::fusion::{self, Fusion};
use crate::ops::{self, EvalError};
use crate::profile;
use candle_core::Device as CDevice;
use std::sync::Arc;
use switchyard_runtime::{
    bind_args, ArgSource, DeviceId, Error, Executable, ExecuteArgs, Graph, Op, Result, Signature,
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
    /// Matmuls of one activation by several weights (a layer's q/k/v, its gate/up): at the first
    /// node of each group, the other nodes of the group (computed together when they can be).
    siblings: Vec<Vec<usize>>,
    /// Chains of nodes the CPU kernels run as one, by their first node (see [`crate::fusion`]).
    fusions: Vec<Option<Fusion>>,
    /// The device that compiled it.
    device_id: DeviceId,
}

/// Groups of transposed matmuls that read the same activation and a weight each: node index of
/// the first to the others.
fn sibling_matmuls(graph: &Graph) -> Vec<Vec<usize>> {
    let nodes = graph.nodes();
    let mut out = vec![Vec::new(); nodes.len()];
    let mut first_by_input: std::collections::HashMap<usize, usize> = Default::default();
    for (i, n) in nodes.iter().enumerate() {
        let Op::MatMul {
            transpose_rhs: true,
        } = n.op
        else {
            continue;
        };
        let rhs = &nodes[n.inputs[1].index()];
        if !matches!(rhs.op, Op::Parameter { .. }) {
            continue;
        }
        match first_by_input.entry(n.inputs[0].index()) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].push(i),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    out
}

impl CandleExecutable {
    pub(crate) fn compile(
        device: &CDevice,
        id: DeviceId,
        name: &str,
        graph: &Graph,
        isa: Isa,
    ) -> Result<Self> {
        let mut constants = Vec::with_capacity(graph.nodes().len());
        let mut aliases_state = vec![false; graph.nodes().len()];
        for (i, node) in graph.nodes().iter().enumerate() {
            constants.push(match &node.op {
                Op::Constant { value } => Some(upload(device, name, value)?),
                _ => None,
            });
            if node.op.writes_state() {
                aliases_state[i] = true;
            }
        }
        Ok(CandleExecutable {
            device_id: id,
            signature: graph.signature(),
            fingerprint: graph.fingerprint(),
            last_use: graph.last_uses(),
            graph: Arc::new(graph.clone()),
            constants,
            aliases_state,
            isa: if device.is_cpu() { isa } else { Isa::PORTABLE },
            siblings: sibling_matmuls(graph),
            fusions: if device.is_cpu() {
                fusion::plan(graph)
            } else {
                vec![None; graph.nodes().len()]
            },
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
                // Cloning shares the storage: kv_write and kv_scatter update the caller's buffer in place.
                ArgSource::State(i) => args.state_mut()[i].1.clone(),
            });
        }
        // Nodes of a fused chain whose values are never made.
        let mut skipped = vec![false; nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            let fused = match &self.fusions[i] {
                Some(f) if values[i].is_none() && self.isa.any() => {
                    let started = profile::enabled().then(std::time::Instant::now);
                    crate::fused::run(self.isa, &self.graph, i, f, &values, &bound.dims)
                        .map_err(|e| backend_err(name, &format!("node %{i} (fused)"), e))?
                        .map(|v| {
                            profile::count_fused_chain();
                            if let Some(t) = started {
                                profile::record(f.label(), t.elapsed());
                            }
                            (f.chain(), v)
                        })
                }
                _ => None,
            };
            match &node.op {
                _ if fused.is_some() => {
                    let (chain, v) = fused.expect("matched");
                    let (result, between) = chain.split_last().expect("a chain has nodes");
                    values[*result] = Some(CandleBuffer::Tensor(v));
                    between.iter().for_each(|&j| skipped[j] = true);
                }
                Op::Parameter { .. } => {}
                Op::Constant { .. } => values[i] = self.constants[i].clone(),
                // Computed with its group's first matmul, or inside a fused chain.
                _ if values[i].is_some() || skipped[i] => {}
                Op::MatMul { .. } if !self.siblings[i].is_empty() && self.isa.any() => {
                    let started = profile::enabled().then(std::time::Instant::now);
                    let group: Vec<usize> = std::iter::once(i)
                        .chain(self.siblings[i].iter().copied())
                        .collect();
                    let done = self
                        .matmuls_together(&group, &values, &bound.dims)
                        .map_err(|e| backend_err(name, &format!("node %{i} (matmul)"), e))?;
                    if let Some(t) = started {
                        profile::record("matmul", t.elapsed());
                    }
                    match done {
                        Some(outs) => {
                            for (j, v) in group.iter().zip(outs) {
                                values[*j] = Some(v);
                            }
                        }
                        None => {
                            values[i] =
                                Some(self.eval_node(device, name, i, &values, &bound.dims)?)
                        }
                    }
                }
                _ => values[i] = Some(self.eval_node(device, name, i, &values, &bound.dims)?),
            }
            for id in &node.inputs {
                if self.last_use[id.index()] == i {
                    values[id.index()] = None;
                }
            }
        }
        self.outputs(name, values)
    }

    /// Evaluates node `i` with its operands from `values`.
    fn eval_node(
        &self,
        device: &CDevice,
        name: &str,
        i: usize,
        values: &[Option<CandleBuffer>],
        dims: &switchyard_runtime::SymbolBindings,
    ) -> Result<CandleBuffer> {
        let node = &self.graph.nodes()[i];
        let op = &node.op;
        let out = node.spec.shape.resolve(dims)?;
        let operands: Vec<&CandleBuffer> = node
            .inputs
            .iter()
            .map(|id| values[id.index()].as_ref().expect("operands precede users"))
            .collect();
        let started = profile::enabled().then(std::time::Instant::now);
        let v =
            ops::eval(op, &operands, &out, node.spec.dtype, device, self.isa).map_err(
                |e| match e {
                    EvalError::Invalid(message) => Error::exec(op.name(), message),
                    EvalError::Candle(e) => {
                        backend_err(name, &format!("node %{i} ({})", op.name()), e)
                    }
                },
            )?;
        if let Some(t) = started {
            // Products of two activations (attention's scores and context) apart from those
            // with a weight, which have their own kernels.
            let label = match (op, operands.get(1)) {
                (Op::MatMul { .. }, Some(CandleBuffer::Tensor(_))) => "matmul (activations)",
                (Op::MatMul { .. }, Some(CandleBuffer::Packed(_))) => "matmul (packed weight)",
                _ => op.name(),
            };
            profile::record(label, t.elapsed());
        }
        Ok(v)
    }

    /// The matmuls `group` (one activation row times several quantized weights read in place)
    /// in one dispatch, or `None` when they do not all fit the CPU kernels that way.
    fn matmuls_together(
        &self,
        group: &[usize],
        values: &[Option<CandleBuffer>],
        dims: &switchyard_runtime::SymbolBindings,
    ) -> candle_core::Result<Option<Vec<CandleBuffer>>> {
        let nodes = self.graph.nodes();
        let x = values[nodes[group[0]].inputs[0].index()]
            .as_ref()
            .expect("operands precede users");
        let Ok(xt) = x.tensor("matmul input") else {
            return Ok(None);
        };
        let k = *xt.dims().last().unwrap_or(&0);
        if xt.dtype() != candle_core::DType::F32 || xt.elem_count() != k || !xt.device().is_cpu() {
            return Ok(None);
        }
        let mut ws = Vec::with_capacity(group.len());
        for &j in group {
            match values[nodes[j].inputs[1].index()].as_ref() {
                Some(CandleBuffer::Blocks(h)) if h.dims()[1] == k => {
                    ws.push(crate::cpu::quant::QuantMatrix {
                        dtype: h.dtype(),
                        bytes: h.as_bytes(),
                        n: h.dims()[0],
                        k,
                    })
                }
                _ => return Ok(None),
            }
        }
        let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; w.n]).collect();
        let done = ops::with_f32(xt, |x| {
            let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            Ok(crate::cpu::quant::matvec_many(self.isa, x, &ws, &mut ys))
        })?;
        if !done {
            return Ok(None);
        }
        group
            .iter()
            .zip(outs)
            .map(|(&j, y)| {
                let shape = nodes[j]
                    .spec
                    .shape
                    .resolve(dims)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                Ok(CandleBuffer::Tensor(candle_core::Tensor::from_vec(
                    y,
                    shape,
                    xt.device(),
                )?))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map(Some)
    }

    /// The graph's outputs from the values of a run.
    fn outputs(&self, name: &str, values: Vec<Option<CandleBuffer>>) -> Result<Vec<CandleBuffer>> {
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

    fn device(&self) -> DeviceId {
        self.device_id
    }
}
