//! Chains of graph nodes the CPU kernels run as one, found once at compile time.
//!
//! - **Epilogues**: a product with a weight followed by its bias, a residual connection and/or
//!   GELU (`matmul → add bias → add residual | gelu`) finishes each tile of the product while it
//!   is in L1 ([`crate::cpu::epilogue`]) instead of reading and writing the whole result once per
//!   op.
//! - **Attention of two activations** (an encoder's `scores = q·kᵀ → add key mask → softmax →
//!   · v`, batch and head axes first) runs per (text, head) with the scores in cache, reading
//!   q, k and v where they lie (token-major, through the head transposes) and writing the
//!   context token-major, so neither the transposes' copies nor the `[batch, heads, t, t]`
//!   scores and probabilities ever reach memory.
//!
//! A plan only names nodes; whether the operands fit the kernels (f32 on the CPU, a packed
//! weight, more than one row) is seen at run time, and a chain that does not fit runs node by
//! node as before. Every node a plan covers but the last has exactly one use, so nothing else
//! can see the values that are never made.

use crate::cpu::epilogue::Activation;
use switchyard_runtime::{BinaryOp, DType, Dim, Graph, Op, ParamKind, UnaryOp};

/// A product with a weight and the nodes its epilogue replaces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EpiloguePlan {
    /// The bias node (a 1-D f32 weight as long as the product's rows).
    pub bias: Option<usize>,
    /// The residual node (the product's shape; computed before the product).
    pub residual: Option<usize>,
    /// The activation applied last.
    pub activation: Option<Activation>,
    /// The nodes after the product, in order; the last holds the result.
    pub chain: Vec<usize>,
}

/// Attention of activations (`[B, H, Tq, D] · [B, H, Tk, D]ᵀ`, masked, softmax, `· [B, H, Tk,
/// Dv]`) and the nodes it replaces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttentionPlan {
    /// The queries, keys and values `[B, H, T, ·]`.
    pub q: usize,
    pub k: usize,
    pub v: usize,
    /// Added to the scores: `[B or 1, 1, 1, Tk]`.
    pub mask: Option<usize>,
    /// The mask's add (when there is a mask), the softmax and the product with `v` (the result).
    pub chain: Vec<usize>,
}

/// What a node starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fusion {
    /// A product with a weight, finished by an epilogue.
    Epilogue(EpiloguePlan),
    /// Attention of two activations.
    Attention(AttentionPlan),
}

impl Fusion {
    /// Its name in profiles.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Fusion::Epilogue(_) => "matmul + epilogue",
            Fusion::Attention(_) => "attention (of activations)",
        }
    }

    /// The nodes after the first that the fused kernel computes; the last holds its result.
    pub(crate) fn chain(&self) -> &[usize] {
        match self {
            Fusion::Epilogue(p) => &p.chain,
            Fusion::Attention(p) => &p.chain,
        }
    }
}

/// The fusions of `graph`, by the index of the node that starts each (a product).
pub(crate) fn plan(graph: &Graph) -> Vec<Option<Fusion>> {
    let nodes = graph.nodes();
    let uses = graph.use_counts();
    let mut users = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for x in &n.inputs {
            users[x.index()].push(i);
        }
    }
    // The one node reading `i`, when nothing else (no other node, output or state) does.
    let only_user = |i: usize| (uses[i] == 1 && users[i].len() == 1).then(|| users[i][0]);
    let f32_node = |i: usize| nodes[i].spec.dtype == DType::F32;
    let mut out = vec![None; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let Op::MatMul { transpose_rhs } = n.op else {
            continue;
        };
        if !n.inputs.iter().all(|x| f32_node(x.index())) || !f32_node(i) {
            continue;
        }
        out[i] = if is_weight(graph, n.inputs[1].index()) {
            if !transpose_rhs {
                continue;
            }
            epilogue(graph, i, &only_user).map(Fusion::Epilogue)
        } else if transpose_rhs {
            attention(graph, i, &only_user).map(Fusion::Attention)
        } else {
            None
        };
    }
    out
}

/// True when node `i` is a weight parameter.
fn is_weight(graph: &Graph, i: usize) -> bool {
    matches!(
        graph.nodes()[i].op,
        Op::Parameter {
            kind: ParamKind::Weight,
            ..
        }
    )
}

/// The epilogue chain after the product `mm`: bias first, then a residual, then GELU.
fn epilogue(
    graph: &Graph,
    mm: usize,
    only_user: &dyn Fn(usize) -> Option<usize>,
) -> Option<EpiloguePlan> {
    let nodes = graph.nodes();
    let shape = &nodes[mm].spec.shape;
    let width = shape.last()?.fixed()?;
    let mut plan = EpiloguePlan {
        bias: None,
        residual: None,
        activation: None,
        chain: Vec::new(),
    };
    let mut cur = mm;
    while plan.activation.is_none() {
        let Some(u) = only_user(cur) else { break };
        let node = &nodes[u];
        if node.spec.dtype != DType::F32 || node.spec.shape != *shape {
            break;
        }
        match node.op {
            Op::Binary(BinaryOp::Add) if plan.residual.is_none() => {
                let other = node.inputs.iter().map(|x| x.index()).find(|&x| x != cur);
                let Some(other) = other.filter(|_| node.inputs.len() == 2) else {
                    break;
                };
                let o = &nodes[other];
                if plan.bias.is_none()
                    && is_weight(graph, other)
                    && o.spec.dtype == DType::F32
                    && o.spec.shape.dims() == [Dim::Fixed(width)]
                {
                    plan.bias = Some(other);
                } else if o.spec.dtype == DType::F32 && o.spec.shape == *shape && other < mm {
                    plan.residual = Some(other);
                } else {
                    break;
                }
            }
            Op::Unary(UnaryOp::GeluErf) => plan.activation = Some(Activation::GeluErf),
            _ => break,
        }
        plan.chain.push(u);
        cur = u;
    }
    (!plan.chain.is_empty()).then_some(plan)
}

/// The attention chain from the scores product `s = q·kᵀ`: an optional mask add, the softmax,
/// the product with `v`.
fn attention(
    graph: &Graph,
    s: usize,
    only_user: &dyn Fn(usize) -> Option<usize>,
) -> Option<AttentionPlan> {
    let nodes = graph.nodes();
    let dims = |i: usize| nodes[i].spec.shape.dims();
    let (q, k) = (nodes[s].inputs[0].index(), nodes[s].inputs[1].index());
    let (qd, kd) = (dims(q), dims(k));
    // No broadcast over batch or heads: both are `[B, H, ·, D]` alike.
    if qd.len() != 4 || kd.len() != 4 || qd[..2] != kd[..2] || qd[3] != kd[3] {
        return None;
    }
    let mut chain = Vec::new();
    let mut cur = only_user(s)?;
    let mut mask = None;
    if let Op::Binary(BinaryOp::Add) = nodes[cur].op {
        let inputs = &nodes[cur].inputs;
        let other = inputs.iter().map(|x| x.index()).find(|&x| x != s)?;
        let (sd, md) = (dims(s), dims(other));
        let fits = inputs.len() == 2
            && nodes[other].spec.dtype == DType::F32
            && dims(cur) == sd
            && md.len() == 4
            && (md[0] == sd[0] || md[0] == Dim::Fixed(1))
            && md[1] == Dim::Fixed(1)
            && md[2] == Dim::Fixed(1)
            && md[3] == sd[3];
        if !fits {
            return None;
        }
        mask = Some(other);
        chain.push(cur);
        cur = only_user(cur)?;
    }
    if nodes[cur].op != Op::Softmax {
        return None;
    }
    chain.push(cur);
    let ctx = only_user(cur)?;
    let node = &nodes[ctx];
    if node.op
        != (Op::MatMul {
            transpose_rhs: false,
        })
        || node.inputs[0].index() != cur
        || node.spec.dtype != DType::F32
    {
        return None;
    }
    let v = node.inputs[1].index();
    let vd = dims(v);
    if vd.len() != 4 || vd[..2] != qd[..2] || vd[2] != kd[2] || nodes[v].spec.dtype != DType::F32 {
        return None;
    }
    chain.push(ctx);
    Some(AttentionPlan {
        q,
        k,
        v,
        mask,
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_runtime::{GraphBuilder, TensorSpec};

    /// A linear layer with bias and GELU, then one with bias and a residual: two epilogues.
    #[test]
    fn finds_bias_residual_and_gelu_chains() {
        let mut b = GraphBuilder::new("mlp");
        let x = b.input("x", TensorSpec::new(DType::F32, [5, 4])).unwrap();
        let w1 = b.weight("w1", TensorSpec::new(DType::F32, [8, 4])).unwrap();
        let b1 = b.weight("b1", TensorSpec::new(DType::F32, [8])).unwrap();
        let w2 = b.weight("w2", TensorSpec::new(DType::F32, [4, 8])).unwrap();
        let b2 = b.weight("b2", TensorSpec::new(DType::F32, [4])).unwrap();
        let up = b.matmul_t(x, w1).unwrap();
        let up_b = b.add(up, b1).unwrap();
        let act = b.unary(UnaryOp::GeluErf, up_b).unwrap();
        let down = b.matmul_t(act, w2).unwrap();
        let down_b = b.add(down, b2).unwrap();
        let res = b.add(x, down_b).unwrap();
        b.output("y", res).unwrap();
        let g = b.finish().unwrap();
        let p = plan(&g);
        let at = |id: switchyard_runtime::NodeId| id.index();
        assert_eq!(
            p[at(up)],
            Some(Fusion::Epilogue(EpiloguePlan {
                bias: Some(at(b1)),
                residual: None,
                activation: Some(Activation::GeluErf),
                chain: vec![at(up_b), at(act)],
            }))
        );
        assert_eq!(
            p[at(down)],
            Some(Fusion::Epilogue(EpiloguePlan {
                bias: Some(at(b2)),
                residual: Some(at(x)),
                activation: None,
                chain: vec![at(down_b), at(res)],
            }))
        );
    }

    /// A product read twice, or a residual computed after the product, is left alone.
    #[test]
    fn leaves_values_others_read() {
        let mut b = GraphBuilder::new("shared");
        let x = b.input("x", TensorSpec::new(DType::F32, [3, 4])).unwrap();
        let w = b.weight("w", TensorSpec::new(DType::F32, [4, 4])).unwrap();
        let bias = b.weight("b", TensorSpec::new(DType::F32, [4])).unwrap();
        let y = b.matmul_t(x, w).unwrap();
        let late = b.affine(x, 2.0, 0.0).unwrap();
        let r = b.add(y, late).unwrap();
        let yb = b.add(y, bias).unwrap();
        b.output("r", r).unwrap();
        b.output("yb", yb).unwrap();
        let g = b.finish().unwrap();
        assert!(plan(&g).iter().all(Option::is_none));
    }

    /// An encoder's attention: scores, key mask, softmax, values.
    #[test]
    fn finds_masked_attention() {
        let mut b = GraphBuilder::new("attn");
        let spec = |d: [usize; 4]| TensorSpec::new(DType::F32, d);
        let q = b.input("q", spec([2, 3, 5, 4])).unwrap();
        let k = b.input("k", spec([2, 3, 6, 4])).unwrap();
        let v = b.input("v", spec([2, 3, 6, 7])).unwrap();
        let m = b.input("m", spec([2, 1, 1, 6])).unwrap();
        let s = b.matmul_t(q, k).unwrap();
        let sm = b.add(s, m).unwrap();
        let p = b.softmax(sm).unwrap();
        let o = b.matmul(p, v).unwrap();
        b.output("o", o).unwrap();
        let g = b.finish().unwrap();
        let at = |id: switchyard_runtime::NodeId| id.index();
        assert_eq!(
            plan(&g)[at(s)],
            Some(Fusion::Attention(AttentionPlan {
                q: at(q),
                k: at(k),
                v: at(v),
                mask: Some(at(m)),
                chain: vec![at(sm), at(p), at(o)],
            }))
        );
    }
}
