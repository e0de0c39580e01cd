//! Building graphs node by node: parameters, ops (their specs inferred in [`super::infer`]),
//! outputs and state updates, and the checks of a finished graph.

use super::infer::infer;
use super::op::{AttentionAttrs, BinaryOp, CompareOp, Op, ParamKind, ReduceOp, UnaryOp};
use super::{Graph, Node, NodeId};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{Dim, Shape};
use crate::tensor::{HostTensor, TensorSpec};
use std::collections::{BTreeMap, HashSet};

/// Builds a [`Graph`] node by node, checking each op's operands as it is added.
///
/// ```
/// use switchyard_runtime::{DType, Dim, GraphBuilder, TensorSpec};
/// let mut b = GraphBuilder::new("mlp");
/// let t = Dim::sym("tokens", 128);
/// let x = b.input("x", TensorSpec::new(DType::F32, vec![t, Dim::Fixed(8)])).unwrap();
/// let w = b.weight("w", TensorSpec::new(DType::F32, [16, 8])).unwrap();
/// let h = b.matmul_t(x, w).unwrap();
/// let y = b.silu(h).unwrap();
/// b.output("y", y).unwrap();
/// let graph = b.finish().unwrap();
/// assert_eq!(graph.nodes().len(), 4);
/// // Operand mismatches are reported with the op and the shapes:
/// let mut b = GraphBuilder::new("bad");
/// let a = b.input("a", TensorSpec::new(DType::F32, [2, 3])).unwrap();
/// let c = b.input("c", TensorSpec::new(DType::F32, [4, 5])).unwrap();
/// let err = b.matmul(a, c).unwrap_err().to_string();
/// assert!(err.contains("matmul") && err.contains("[2, 3]") && err.contains("[4, 5]"));
/// ```
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
    params: Vec<NodeId>,
    param_names: HashSet<String>,
    outputs: Vec<(String, NodeId)>,
    state_updates: Vec<(String, NodeId)>,
    symbols: BTreeMap<String, usize>,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            name: name.into(),
            nodes: Vec::new(),
            params: Vec::new(),
            param_names: HashSet::new(),
            outputs: Vec::new(),
            state_updates: Vec::new(),
            symbols: BTreeMap::new(),
        }
    }

    /// The spec of node `id`.
    pub fn spec(&self, id: NodeId) -> &TensorSpec {
        &self.nodes[id.index()].spec
    }

    fn note_symbols(&mut self, spec: &TensorSpec, op: &'static str) -> Result<()> {
        for (name, max) in spec.shape.symbols() {
            match self.symbols.get(name) {
                Some(&m) if m != max => {
                    return Err(Error::graph(
                        op,
                        format!("symbol '{name}' declared with maximum {m} and again with {max}"),
                    ))
                }
                Some(_) => {}
                None => {
                    self.symbols.insert(name.to_string(), max);
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = op.name();
        if let Some(bad) = inputs.iter().find(|i| i.index() >= self.nodes.len()) {
            return Err(Error::graph(name, format!("operand {bad} does not exist")));
        }
        let specs: Vec<&TensorSpec> = inputs.iter().map(|i| self.spec(*i)).collect();
        let spec = infer(&op, &specs)?;
        if op.writes_state() {
            let cache = &self.nodes[inputs[0].index()].op;
            if !matches!(
                cache,
                Op::Parameter {
                    kind: ParamKind::State,
                    ..
                }
            ) {
                return Err(Error::graph(
                    name,
                    "the cache operand must be a state parameter",
                ));
            }
        }
        for i in inputs {
            if let Op::Parameter {
                kind: ParamKind::State,
                name: state,
            } = &self.nodes[i.index()].op
            {
                let consumed = self.nodes.iter().any(|n| n.inputs.contains(i));
                if !op.writes_state() || inputs[0] != *i || consumed {
                    return Err(Error::graph(
                        name,
                        format!(
                            "state '{state}' may only be read by one kv_write or kv_scatter (read its result instead)"
                        ),
                    ));
                }
            }
        }
        self.note_symbols(&spec, name)?;
        self.add_node(Node {
            op,
            inputs: inputs.to_vec(),
            spec,
        })
    }

    fn add_node(&mut self, node: Node) -> Result<NodeId> {
        let id = u32::try_from(self.nodes.len())
            .map_err(|_| Error::graph(node.op.name(), "too many nodes"))?;
        self.nodes.push(node);
        Ok(NodeId(id))
    }

    fn param(&mut self, name: &str, kind: ParamKind, spec: TensorSpec) -> Result<NodeId> {
        let op = "parameter";
        if name.is_empty() || !self.param_names.insert(name.to_string()) {
            return Err(Error::graph(
                op,
                format!("parameter name '{name}' is empty or already used"),
            ));
        }
        if spec.dtype.is_quantized() {
            let ok = kind == ParamKind::Weight
                && spec.shape.rank() == 2
                && spec
                    .shape
                    .dim(1)
                    .fixed()
                    .is_some_and(|k| k % spec.dtype.block_len() == 0);
            if !ok {
                return Err(Error::graph(
                    op,
                    format!(
                        "'{name}': a {} tensor must be a 2-D weight whose last dimension is a multiple of {}, got {spec}",
                        spec.dtype,
                        spec.dtype.block_len()
                    ),
                ));
            }
        }
        if kind != ParamKind::Input && !spec.shape.is_fixed() {
            return Err(Error::graph(
                op,
                format!(
                    "'{name}': {} parameters must have fixed shapes, got {spec}",
                    kind.name()
                ),
            ));
        }
        self.note_symbols(&spec, op)?;
        let id = self.add_node(Node {
            op: Op::Parameter {
                name: name.to_string(),
                kind,
            },
            inputs: vec![],
            spec,
        })?;
        self.params.push(id);
        Ok(id)
    }

    /// A per-call input (may have symbolic dimensions).
    pub fn input(&mut self, name: &str, spec: TensorSpec) -> Result<NodeId> {
        self.param(name, ParamKind::Input, spec)
    }

    /// A weight (fixed shape; may be quantized).
    pub fn weight(&mut self, name: &str, spec: TensorSpec) -> Result<NodeId> {
        self.param(name, ParamKind::Weight, spec)
    }

    /// A state tensor (fixed shape), read and written in place through [`GraphBuilder::kv_write`]
    /// and [`GraphBuilder::update_state`].
    pub fn state(&mut self, name: &str, spec: TensorSpec) -> Result<NodeId> {
        self.param(name, ParamKind::State, spec)
    }

    /// A constant.
    pub fn constant(&mut self, value: HostTensor) -> Result<NodeId> {
        self.push(Op::Constant { value }, &[])
    }

    /// A rank-0 constant of a float or integer dtype.
    pub fn scalar(&mut self, dtype: DType, value: f32) -> Result<NodeId> {
        let t = HostTensor::from_f32_as(dtype, &[], &[value])
            .map_err(|e| Error::graph("constant", e.to_string()))?;
        self.constant(t)
    }

    /// `[0, 1, ..., len-1]`.
    pub fn iota(&mut self, len: impl Into<Dim>, dtype: DType) -> Result<NodeId> {
        self.push(
            Op::Iota {
                len: len.into(),
                dtype,
            },
            &[],
        )
    }

    /// Embedding lookup of `ids` in `table`.
    pub fn gather(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId> {
        self.push(Op::Gather, &[table, ids])
    }

    /// `a · b`.
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(
            Op::MatMul {
                transpose_rhs: false,
            },
            &[a, b],
        )
    }

    /// `a · bᵀ` (the layout of linear-layer weights `[out, in]`).
    pub fn matmul_t(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(
            Op::MatMul {
                transpose_rhs: true,
            },
            &[a, b],
        )
    }

    /// An elementwise binary op.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(Op::Binary(op), &[a, b])
    }

    /// `a + b`.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// `a * b`.
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `a / b`.
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// An elementwise comparison producing a u8 mask.
    pub fn compare(&mut self, op: CompareOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(Op::Compare(op), &[a, b])
    }

    /// An elementwise float function.
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.push(Op::Unary(op), &[x])
    }

    /// `x · sigmoid(x)`.
    pub fn silu(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Silu, x)
    }

    /// `x · mul + add`.
    pub fn affine(&mut self, x: NodeId, mul: f32, add: f32) -> Result<NodeId> {
        self.push(Op::Affine { mul, add }, &[x])
    }

    /// `cap · tanh(x / cap)`.
    pub fn softcap(&mut self, x: NodeId, cap: f32) -> Result<NodeId> {
        self.push(Op::SoftCap { cap }, &[x])
    }

    /// RMS normalization over the last axis, scaled by `w`.
    pub fn rms_norm(&mut self, x: NodeId, w: NodeId, eps: f32) -> Result<NodeId> {
        self.push(Op::RmsNorm { eps }, &[x, w])
    }

    /// Layer normalization over the last axis, scaled by `w` and shifted by `b`.
    pub fn layer_norm(&mut self, x: NodeId, w: NodeId, b: NodeId, eps: f32) -> Result<NodeId> {
        self.push(Op::LayerNorm { eps }, &[x, w, b])
    }

    /// Rotary position embedding of `x [B, H, T, D]` with tables `cos, sin [T, R/2]`.
    pub fn rope(
        &mut self,
        x: NodeId,
        cos: NodeId,
        sin: NodeId,
        interleaved: bool,
    ) -> Result<NodeId> {
        self.push(Op::Rope { interleaved }, &[x, cos, sin])
    }

    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(Op::Softmax, &[x])
    }

    /// A reduction over `axis` (kept with size 1).
    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axis: usize) -> Result<NodeId> {
        self.push(Op::Reduce { op, axis }, &[x])
    }

    /// The same elements under a new shape.
    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        self.push(
            Op::Reshape {
                shape: shape.into(),
            },
            &[x],
        )
    }

    /// Axis permutation.
    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.push(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    /// `x[start..start+len]` along `axis`.
    pub fn slice(
        &mut self,
        x: NodeId,
        axis: usize,
        start: usize,
        len: impl Into<Dim>,
    ) -> Result<NodeId> {
        self.push(
            Op::Slice {
                axis,
                start,
                len: len.into(),
            },
            &[x],
        )
    }

    /// Concatenation along a fixed-size `axis`.
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        self.push(Op::Concat { axis }, xs)
    }

    /// Conversion to `dtype`.
    pub fn cast(&mut self, x: NodeId, dtype: DType) -> Result<NodeId> {
        self.push(Op::Cast { dtype }, &[x])
    }

    /// `cond ? a : b`.
    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(Op::Where, &[cond, a, b])
    }

    /// Writes `new` into the state `cache` at `pos` along `axis`; the result is the updated cache.
    pub fn kv_write(
        &mut self,
        cache: NodeId,
        new: NodeId,
        pos: NodeId,
        axis: usize,
    ) -> Result<NodeId> {
        self.push(Op::KvWrite { axis }, &[cache, new, pos])
    }

    /// Writes row `t` of `new` into the state `cache` (a KV pool) at `[slots[t], pos[t]]`; the
    /// result is the updated pool.
    pub fn kv_scatter(
        &mut self,
        cache: NodeId,
        new: NodeId,
        slots: NodeId,
        pos: NodeId,
    ) -> Result<NodeId> {
        self.push(Op::KvScatter, &[cache, new, slots, pos])
    }

    /// Attention of each query over its own slot of a KV pool (see [`Op::SlotAttention`]).
    pub fn slot_attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        q_pos: NodeId,
        slots: NodeId,
        attrs: AttentionAttrs,
    ) -> Result<NodeId> {
        self.push(Op::SlotAttention(attrs), &[q, k, v, q_pos, slots])
    }

    /// Index of the largest value over the last axis.
    pub fn argmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.push(Op::Argmax, &[x])
    }

    /// Scaled dot-product attention (see [`AttentionAttrs`]).
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        q_pos: NodeId,
        attrs: AttentionAttrs,
    ) -> Result<NodeId> {
        self.push(Op::Attention(attrs), &[q, k, v, q_pos])
    }

    /// Declares `id` an output called `name`.
    pub fn output(&mut self, name: &str, id: NodeId) -> Result<()> {
        if id.index() >= self.nodes.len() || self.outputs.iter().any(|(n, _)| n == name) {
            return Err(Error::graph(
                "output",
                format!("output '{name}' is a duplicate or names a missing node"),
            ));
        }
        self.outputs.push((name.to_string(), id));
        Ok(())
    }

    /// Declares `id` (a [`GraphBuilder::kv_write`] into the state called `name`) the new value of
    /// that state.
    pub fn update_state(&mut self, name: &str, id: NodeId) -> Result<()> {
        let err = |m: String| Err(Error::graph("update_state", m));
        let Some(node) = self.nodes.get(id.index()) else {
            return err(format!("node {id} does not exist"));
        };
        let writes_state = node.op.writes_state()
            && matches!(&self.nodes[node.inputs[0].index()].op,
                Op::Parameter { name: n, kind: ParamKind::State } if n == name);
        if !writes_state {
            return err(format!(
                "the new value of state '{name}' must be a kv_write or kv_scatter into it, got {}",
                node.op.name()
            ));
        }
        if self.state_updates.iter().any(|(n, _)| n == name) {
            return err(format!("state '{name}' is updated twice"));
        }
        self.state_updates.push((name.to_string(), id));
        Ok(())
    }

    /// Checks the whole graph and returns it.
    pub fn finish(self) -> Result<Graph> {
        if self.outputs.is_empty() {
            return Err(Error::graph(
                "output",
                format!("graph '{}' has no outputs", self.name),
            ));
        }
        // Every kv_write must be recorded as its state's update, or the write would be
        // in place on some devices and lost on others.
        for (i, n) in self.nodes.iter().enumerate() {
            if n.op.writes_state() && !self.state_updates.iter().any(|(_, id)| id.index() == i) {
                return Err(Error::graph(
                    n.op.name(),
                    format!("%{i} is not declared as a state update (call update_state)"),
                ));
            }
        }
        Ok(Graph {
            name: self.name,
            nodes: self.nodes,
            params: self.params,
            outputs: self.outputs,
            state_updates: self.state_updates,
        })
    }

    /// Rebuilds `g` through the builder's checks and confirms every stored spec: how a graph
    /// read from an untrusted source (a serialized artifact) is checked before it is used.
    pub fn revalidate(g: &Graph) -> Result<()> {
        let mut b = GraphBuilder::new(g.name.clone());
        for (i, node) in g.nodes.iter().enumerate() {
            let id = match &node.op {
                Op::Parameter { name, kind } => b.param(name, *kind, node.spec.clone())?,
                op => b.push(op.clone(), &node.inputs)?,
            };
            if b.spec(id) != &node.spec {
                return Err(Error::graph(
                    node.op.name(),
                    format!(
                        "%{i} claims spec {} but its operands give {}",
                        node.spec,
                        b.spec(id)
                    ),
                ));
            }
        }
        let declared: Vec<NodeId> = b.params.clone();
        if declared != g.params {
            return Err(Error::graph(
                "parameter",
                "parameter list does not match the nodes",
            ));
        }
        for (n, id) in &g.outputs {
            b.output(n, *id)?;
        }
        for (n, id) in &g.state_updates {
            b.update_state(n, *id)?;
        }
        b.finish().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(dims: &[usize]) -> TensorSpec {
        TensorSpec::new(DType::F32, Shape::fixed(dims))
    }

    /// Found by fuzz/run.sh (emulation_artifact): concatenating operands of different ranks
    /// indexed past the shorter shape instead of reporting the mismatch.
    #[test]
    fn concat_of_different_ranks_is_an_error() {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", f32s(&[2, 3])).unwrap();
        let y = b.input("y", f32s(&[2])).unwrap();
        let err = b.concat(&[x, y], 1).unwrap_err().to_string();
        assert!(err.contains("concat") && err.contains("agree"), "{err}");
    }

    #[test]
    fn broadcasting_and_errors_name_the_op() {
        let mut b = GraphBuilder::new("t");
        let x = b.input("x", f32s(&[2, 1, 4])).unwrap();
        let y = b.input("y", f32s(&[3, 1])).unwrap();
        let z = b.add(x, y).unwrap();
        assert_eq!(b.spec(z).shape, Shape::fixed(&[2, 3, 4]));
        let w = b.input("w", f32s(&[5])).unwrap();
        let err = b.mul(z, w).unwrap_err().to_string();
        assert!(
            err.contains("mul") && err.contains("[2, 3, 4]") && err.contains("[5]"),
            "{err}"
        );
        let i = b.input("i", TensorSpec::new(DType::I32, [4])).unwrap();
        assert!(b
            .add(x, i)
            .unwrap_err()
            .to_string()
            .contains("share a dtype"));
    }

    #[test]
    fn symbolic_reshape_and_slice() {
        let mut b = GraphBuilder::new("t");
        let t = Dim::sym("t", 8);
        let x = b
            .input(
                "x",
                TensorSpec::new(DType::F32, vec![Dim::Fixed(1), t.clone(), Dim::Fixed(6)]),
            )
            .unwrap();
        let r = b
            .reshape(
                x,
                vec![Dim::Fixed(1), t.clone(), Dim::Fixed(2), Dim::Fixed(3)],
            )
            .unwrap();
        assert_eq!(b.spec(r).shape.rank(), 4);
        assert!(b.reshape(x, vec![Dim::Fixed(6), Dim::Fixed(1)]).is_err());
        let s = b.slice(x, 2, 1, 4).unwrap();
        assert_eq!(b.spec(s).shape.dim(2), &Dim::Fixed(4));
        assert!(b.slice(x, 2, 3, 4).is_err());
        // Inconsistent maxima for one symbol are rejected.
        assert!(b
            .input("y", TensorSpec::new(DType::F32, vec![Dim::sym("t", 9)]))
            .is_err());
    }

    #[test]
    fn state_rules() {
        let mut b = GraphBuilder::new("t");
        let cache = b.state("k", f32s(&[1, 2, 8, 4])).unwrap();
        let new = b.input("new", f32s(&[1, 2, 1, 4])).unwrap();
        let pos = b.input("pos", TensorSpec::new(DType::I32, [1])).unwrap();
        let w = b.kv_write(cache, new, pos, 2).unwrap();
        // The state may not be read again: read the write's result.
        assert!(b.add(cache, cache).is_err());
        assert!(b.kv_write(cache, new, pos, 2).is_err());
        let mut unfinished = b.clone();
        unfinished.output("o", w).unwrap();
        assert!(unfinished
            .finish()
            .unwrap_err()
            .to_string()
            .contains("update_state"));
        b.update_state("k", w).unwrap();
        assert!(b.update_state("k", w).is_err());
        b.output("o", w).unwrap();
        let g = b.finish().unwrap();
        assert_eq!(g.state_updates().len(), 1);
    }

    #[test]
    fn quantized_weights_only_in_matmul_and_gather() {
        let mut b = GraphBuilder::new("t");
        assert!(b.input("q", TensorSpec::new(DType::Q4_0, [4, 32])).is_err());
        assert!(b
            .weight("q1", TensorSpec::new(DType::Q4_0, [4, 30]))
            .is_err());
        let w = b
            .weight("w", TensorSpec::new(DType::Q8_0, [4, 64]))
            .unwrap();
        let x = b.input("x", f32s(&[3, 64])).unwrap();
        assert!(b.matmul(x, w).is_err());
        let y = b.matmul_t(x, w).unwrap();
        assert_eq!(b.spec(y), &f32s(&[3, 4]));
        assert!(b.add(w, w).is_err());
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let build = |eps: f32| {
            let mut b = GraphBuilder::new("t");
            let x = b.input("x", f32s(&[2, 4])).unwrap();
            let w = b.weight("w", f32s(&[4])).unwrap();
            let y = b.rms_norm(x, w, eps).unwrap();
            b.output("y", y).unwrap();
            b.finish().unwrap()
        };
        assert_eq!(build(1e-5).fingerprint(), build(1e-5).fingerprint());
        assert_ne!(build(1e-5).fingerprint(), build(1e-6).fingerprint());
        assert_eq!(build(1e-5).fingerprint().len(), 64);
        let g = build(1e-5);
        assert_eq!(Graph::from_bytes(&g.to_bytes()).unwrap(), g);
        assert!(Graph::from_bytes(&g.to_bytes()[..10]).is_err());
    }
}
