//! The graph IR: a small, closed set of ops that every Switchyard device compiles as a unit.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order (every node's operands come before it),
//! named parameters (per-call inputs, weights and state), named outputs, and state updates. Build
//! one with [`GraphBuilder`], which checks every op's operands and infers its output
//! [`TensorSpec`].

mod attention;
mod builder;
mod infer;
mod op;

pub use attention::{decompose_attention, decompose_slot_attention};
pub use builder::GraphBuilder;
pub use op::{AttentionAttrs, BinaryOp, CompareOp, Op, ParamKind, ReduceOp, UnaryOp, OP_NAMES};

use crate::error::{Error, Result};
use crate::shape::{Dim, Shape, SymbolBindings};
use crate::tensor::TensorSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Index of a node in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// The node's position in [`Graph::nodes`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One operation, its operands and the spec of its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The operation and its attributes.
    pub op: Op,
    /// Operands, all earlier in the graph.
    pub inputs: Vec<NodeId>,
    /// The result's dtype and shape.
    pub spec: TensorSpec,
}

/// A named parameter of a graph, as listed by [`Graph::signature`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// The parameter's name.
    pub name: String,
    /// Input, weight or state.
    pub kind: ParamKind,
    /// Its dtype and shape.
    pub spec: TensorSpec,
}

/// What an executable takes and returns: its parameters and outputs with their specs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Parameters in declaration order.
    pub params: Vec<ParamInfo>,
    /// Outputs in declaration order.
    pub outputs: Vec<(String, TensorSpec)>,
    /// The state parameters the graph updates, in parameter order.
    pub updated_states: Vec<String>,
}

impl Signature {
    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Index of the output called `name`.
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|(n, _)| n == name)
    }
}

/// How a graph consumes a parameter, so a device can lay weights out for their use at upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightUse {
    /// Right operand of a matmul with `transpose_rhs` (a linear layer's `[out, in]` weight).
    MatMulTransposed,
    /// Right operand of a plain matmul.
    MatMul,
    /// Table of a gather (an embedding).
    Gather,
    /// Any other operand (norm weights, biases, ...).
    Other,
}

/// A validated graph. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub(crate) name: String,
    pub(crate) nodes: Vec<Node>,
    pub(crate) params: Vec<NodeId>,
    pub(crate) outputs: Vec<(String, NodeId)>,
    pub(crate) state_updates: Vec<(String, NodeId)>,
}

const FINGERPRINT_DOMAIN: &[u8] = b"switchyard-graph-v1";

impl Graph {
    /// The graph's name (for logs and cache file names).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Parameter nodes in declaration order.
    pub fn params(&self) -> &[NodeId] {
        &self.params
    }

    /// Named outputs in declaration order.
    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    /// For each updated state parameter, the node holding its new value (always a
    /// [`Op::KvWrite`] or [`Op::KvScatter`] whose cache operand is that parameter).
    pub fn state_updates(&self) -> &[(String, NodeId)] {
        &self.state_updates
    }

    /// The parameter node called `name`.
    pub fn param(&self, name: &str) -> Option<NodeId> {
        self.params
            .iter()
            .copied()
            .find(|id| match &self.node(*id).op {
                Op::Parameter { name: n, .. } => n == name,
                _ => false,
            })
    }

    /// How the graph uses parameter `id` (one entry per consuming operand, duplicates removed).
    pub fn uses_of(&self, id: NodeId) -> Vec<WeightUse> {
        let mut uses = Vec::new();
        for n in &self.nodes {
            for (slot, input) in n.inputs.iter().enumerate() {
                if *input != id {
                    continue;
                }
                let u = match (&n.op, slot) {
                    (
                        Op::MatMul {
                            transpose_rhs: true,
                        },
                        1,
                    ) => WeightUse::MatMulTransposed,
                    (
                        Op::MatMul {
                            transpose_rhs: false,
                        },
                        1,
                    ) => WeightUse::MatMul,
                    (Op::Gather, 0) => WeightUse::Gather,
                    _ => WeightUse::Other,
                };
                if !uses.contains(&u) {
                    uses.push(u);
                }
            }
        }
        uses
    }

    /// Parameters and outputs with their specs.
    pub fn signature(&self) -> Signature {
        Signature {
            params: self
                .params
                .iter()
                .map(|id| {
                    let node = self.node(*id);
                    let Op::Parameter { name, kind } = &node.op else {
                        unreachable!("params holds only parameter nodes")
                    };
                    ParamInfo {
                        name: name.clone(),
                        kind: *kind,
                        spec: node.spec.clone(),
                    }
                })
                .collect(),
            outputs: self
                .outputs
                .iter()
                .map(|(n, id)| (n.clone(), self.node(*id).spec.clone()))
                .collect(),
            updated_states: self
                .params
                .iter()
                .filter_map(|id| match &self.node(*id).op {
                    Op::Parameter {
                        name,
                        kind: ParamKind::State,
                    } if self.state_updates.iter().any(|(s, _)| s == name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        }
    }

    /// How many nodes use each node as an operand (outputs and state updates count as uses).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0usize; self.nodes.len()];
        for n in &self.nodes {
            for i in &n.inputs {
                uses[i.index()] += 1;
            }
        }
        for (_, id) in self.outputs.iter().chain(&self.state_updates) {
            uses[id.index()] += 1;
        }
        uses
    }

    /// For each node, the index of the last node that reads it (`usize::MAX` when an output or a
    /// state update keeps it alive to the end). Lets executors free values early.
    pub fn last_uses(&self) -> Vec<usize> {
        let mut last = vec![0usize; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for op in &n.inputs {
                last[op.index()] = i;
            }
        }
        for (_, id) in self.outputs.iter().chain(&self.state_updates) {
            last[id.index()] = usize::MAX;
        }
        last
    }

    /// A stable fingerprint (SHA-256, hex) of the ops, attributes, specs, parameters, outputs
    /// and constants. Equal graphs have equal fingerprints across runs and machines.
    pub fn fingerprint(&self) -> String {
        let bytes = postcard::to_stdvec(self).expect("graphs always serialize");
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        h.update(&bytes);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The graph with its symbolic dimensions replaced by the values in `bindings` (each at most
    /// its declared maximum). Symbols left unbound stay symbolic. Static-shape devices compile
    /// such specializations, one per bucket.
    pub fn bind(&self, bindings: &SymbolBindings) -> Result<Graph> {
        let bind_dim = |d: &Dim| -> Result<Dim> {
            match d {
                Dim::Sym { name, max } => match bindings.get(name) {
                    Some(v) if v > *max => Err(Error::SymbolOutOfRange {
                        name: name.clone(),
                        value: v,
                        max: *max,
                    }),
                    Some(v) => Ok(Dim::Fixed(v)),
                    None => Ok(d.clone()),
                },
                Dim::Fixed(_) => Ok(d.clone()),
            }
        };
        let bind_shape = |s: &Shape| -> Result<Shape> {
            Ok(Shape(s.0.iter().map(bind_dim).collect::<Result<_>>()?))
        };
        let mut g = self.clone();
        for node in &mut g.nodes {
            node.spec.shape = bind_shape(&node.spec.shape)?;
            match &mut node.op {
                Op::Reshape { shape } => *shape = bind_shape(shape)?,
                Op::Slice { len, .. } => *len = bind_dim(len)?,
                Op::Iota { len, .. } => *len = bind_dim(len)?,
                _ => {}
            }
        }
        Ok(g)
    }

    /// Serializes the graph (postcard) for artifacts and caches.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("graphs always serialize")
    }

    /// Reads a graph written by [`Graph::to_bytes`] and re-validates every node, so a corrupt or
    /// hostile artifact is rejected rather than trusted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Graph> {
        let g: Graph =
            postcard::from_bytes(bytes).map_err(|e| Error::Serialization(e.to_string()))?;
        GraphBuilder::revalidate(&g)?;
        Ok(g)
    }
}

impl fmt::Display for Graph {
    /// A readable listing, one node per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        for (i, n) in self.nodes.iter().enumerate() {
            let args: Vec<String> = n.inputs.iter().map(|a| a.to_string()).collect();
            writeln!(
                f,
                "  %{i}: {} = {}({})",
                n.spec,
                n.op.describe(),
                args.join(", ")
            )?;
        }
        for (name, id) in &self.outputs {
            writeln!(f, "  output {name} = {id}")?;
        }
        for (name, id) in &self.state_updates {
            writeln!(f, "  state {name} <- {id}")?;
        }
        f.write_str("}")
    }
}
