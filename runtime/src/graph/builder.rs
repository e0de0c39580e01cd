//! Building graphs: operand checks and output-spec inference for every op.

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

fn shapes(specs: &[&TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Numpy-style broadcasting of shapes aligned on their last axes.
fn broadcast(op: &'static str, specs: &[&TensorSpec]) -> Result<Shape> {
    let rank = specs.iter().map(|s| s.shape.rank()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut dim: Option<&Dim> = None;
        for s in specs {
            let r = s.shape.rank();
            if i + r < rank {
                continue;
            }
            let d = s.shape.dim(i + r - rank);
            if *d == Dim::Fixed(1) {
                continue;
            }
            match dim {
                None => dim = Some(d),
                Some(prev) if prev == d => {}
                Some(_) => {
                    return Err(Error::graph(
                        op,
                        format!("operands {} cannot be broadcast together", shapes(specs)),
                    ))
                }
            }
        }
        out.push(dim.cloned().unwrap_or(Dim::Fixed(1)));
    }
    Ok(Shape(out))
}

fn same_dtype(op: &'static str, specs: &[&TensorSpec]) -> Result<DType> {
    let d = specs[0].dtype;
    if specs.iter().any(|s| s.dtype != d) {
        return Err(Error::graph(
            op,
            format!("operands must share a dtype, got {}", shapes(specs)),
        ));
    }
    Ok(d)
}

fn need_float(op: &'static str, s: &TensorSpec, what: &str) -> Result<()> {
    if !s.dtype.is_float() {
        return Err(Error::graph(
            op,
            format!("{what} must be f32, f16 or bf16, got {s}"),
        ));
    }
    Ok(())
}

fn need_int(op: &'static str, s: &TensorSpec, what: &str) -> Result<()> {
    if !matches!(s.dtype, DType::I32 | DType::I64 | DType::U32) {
        return Err(Error::graph(
            op,
            format!("{what} must be i32, i64 or u32, got {s}"),
        ));
    }
    Ok(())
}

fn need_rank(op: &'static str, s: &TensorSpec, rank: usize, what: &str) -> Result<()> {
    if s.shape.rank() != rank {
        return Err(Error::graph(
            op,
            format!("{what} must have rank {rank}, got {s}"),
        ));
    }
    Ok(())
}

fn check_reshape(from: &Shape, to: &Shape) -> bool {
    fn split(s: &Shape) -> (usize, Vec<&str>) {
        let mut fixed = 1usize;
        let mut syms: Vec<&str> = Vec::new();
        for d in s.dims() {
            match d {
                Dim::Fixed(n) => fixed = fixed.saturating_mul(*n),
                Dim::Sym { name, .. } => syms.push(name),
            }
        }
        syms.sort_unstable();
        (fixed, syms)
    }
    split(from) == split(to)
}

/// Infers the result spec of `op` applied to operands with `specs`. Parameters carry their own
/// spec and are not inferred.
fn infer(op: &Op, specs: &[&TensorSpec]) -> Result<TensorSpec> {
    let name = op.name();
    let arity = |n: usize| -> Result<()> {
        if specs.len() != n {
            return Err(Error::graph(
                name,
                format!("takes {n} operand(s), got {}", specs.len()),
            ));
        }
        Ok(())
    };
    match op {
        Op::Parameter { .. } => unreachable!("parameters are not inferred"),
        Op::Constant { value } => {
            arity(0)?;
            Ok(value.spec())
        }
        Op::Iota { len, dtype } => {
            arity(0)?;
            if dtype.is_quantized() || *dtype == DType::U8 {
                return Err(Error::graph(name, format!("cannot produce {dtype}")));
            }
            Ok(TensorSpec::new(*dtype, vec![len.clone()]))
        }
        Op::Gather => {
            arity(2)?;
            let (table, ids) = (specs[0], specs[1]);
            need_rank(name, table, 2, "the table")?;
            if table.dtype.is_int() {
                return Err(Error::graph(
                    name,
                    format!("the table must be float or quantized, got {table}"),
                ));
            }
            need_int(name, ids, "the ids")?;
            let mut dims = ids.shape.0.clone();
            dims.push(table.shape.dim(1).clone());
            let dtype = if table.dtype.is_quantized() {
                DType::F32
            } else {
                table.dtype
            };
            Ok(TensorSpec::new(dtype, dims))
        }
        Op::MatMul { transpose_rhs } => {
            arity(2)?;
            let (a, b) = (specs[0], specs[1]);
            need_float(name, a, "the left operand")?;
            let (ra, rb) = (a.shape.rank(), b.shape.rank());
            if ra < 2 || rb < 2 {
                return Err(Error::graph(
                    name,
                    format!("operands need rank >= 2, got {}", shapes(specs)),
                ));
            }
            if b.dtype.is_quantized() {
                if !transpose_rhs || rb != 2 {
                    return Err(Error::graph(
                        name,
                        format!("a quantized right operand must be a 2-D [N, K] weight used transposed, got {b}"),
                    ));
                }
            } else if b.dtype != a.dtype {
                return Err(Error::graph(
                    name,
                    format!("operands must share a dtype, got {}", shapes(specs)),
                ));
            }
            let (m, k) = (a.shape.dim(ra - 2), a.shape.dim(ra - 1));
            let (kb, n) = if *transpose_rhs {
                (b.shape.dim(rb - 1), b.shape.dim(rb - 2))
            } else {
                (b.shape.dim(rb - 2), b.shape.dim(rb - 1))
            };
            if k != kb {
                return Err(Error::graph(
                    name,
                    format!(
                        "inner dimensions {k} and {kb} differ for {} (transpose_rhs={transpose_rhs})",
                        shapes(specs)
                    ),
                ));
            }
            let batch_a = TensorSpec::new(a.dtype, Shape(a.shape.0[..ra - 2].to_vec()));
            let batch_b = TensorSpec::new(a.dtype, Shape(b.shape.0[..rb - 2].to_vec()));
            let mut dims = broadcast(name, &[&batch_a, &batch_b])
                .map_err(|_| {
                    Error::graph(
                        name,
                        format!("batch dimensions of {} cannot be broadcast", shapes(specs)),
                    )
                })?
                .0;
            dims.push(m.clone());
            dims.push(n.clone());
            Ok(TensorSpec::new(a.dtype, dims))
        }
        Op::Binary(_) => {
            arity(2)?;
            let dtype = same_dtype(name, specs)?;
            if dtype.is_quantized() {
                return Err(Error::graph(name, "quantized operands are weights only"));
            }
            Ok(TensorSpec::new(dtype, broadcast(name, specs)?))
        }
        Op::Compare(_) => {
            arity(2)?;
            let dtype = same_dtype(name, specs)?;
            if dtype.is_quantized() {
                return Err(Error::graph(name, "quantized operands are weights only"));
            }
            Ok(TensorSpec::new(DType::U8, broadcast(name, specs)?))
        }
        Op::Unary(_) | Op::Affine { .. } | Op::SoftCap { .. } | Op::Softmax => {
            arity(1)?;
            need_float(name, specs[0], "the operand")?;
            if matches!(op, Op::Softmax) && specs[0].shape.rank() == 0 {
                return Err(Error::graph(name, "needs rank >= 1"));
            }
            if let Op::SoftCap { cap } = op {
                if cap.is_nan() || *cap <= 0.0 {
                    return Err(Error::graph(name, format!("cap must be > 0, got {cap}")));
                }
            }
            Ok(specs[0].clone())
        }
        Op::RmsNorm { .. } | Op::LayerNorm { .. } => {
            arity(if matches!(op, Op::RmsNorm { .. }) {
                2
            } else {
                3
            })?;
            let x = specs[0];
            need_float(name, x, "the input")?;
            let h = x
                .shape
                .last()
                .ok_or_else(|| Error::graph(name, "the input needs rank >= 1"))?;
            for p in &specs[1..] {
                if p.dtype != x.dtype || p.shape.0.as_slice() != std::slice::from_ref(h) {
                    return Err(Error::graph(
                        name,
                        format!("parameters must be {}[{h}] for input {x}, got {p}", x.dtype),
                    ));
                }
            }
            Ok(x.clone())
        }
        Op::Rope { .. } => {
            arity(3)?;
            let (x, cos, sin) = (specs[0], specs[1], specs[2]);
            need_float(name, x, "the input")?;
            need_rank(name, x, 4, "the input [B, H, T, D]")?;
            need_rank(name, cos, 2, "cos [T, R/2]")?;
            if cos != sin || cos.dtype != x.dtype {
                return Err(Error::graph(
                    name,
                    format!(
                        "cos and sin must both be {}[T, R/2], got {}",
                        x.dtype,
                        shapes(&[cos, sin])
                    ),
                ));
            }
            let (t, d) = (x.shape.dim(2), x.shape.dim(3));
            let half = cos.shape.dim(1);
            let (Some(d), Some(half)) = (d.fixed(), half.fixed()) else {
                return Err(Error::graph(name, "head and rotary dims must be fixed"));
            };
            if cos.shape.dim(0) != t || half == 0 || 2 * half > d {
                return Err(Error::graph(
                    name,
                    format!(
                        "tables {} do not fit input {x}: need [T, R/2] with T = {t} and 0 < R <= {d}",
                        cos
                    ),
                ));
            }
            Ok(x.clone())
        }
        Op::Reduce { axis, .. } => {
            arity(1)?;
            let x = specs[0];
            need_float(name, x, "the operand")?;
            if *axis >= x.shape.rank() {
                return Err(Error::graph(
                    name,
                    format!("axis {axis} out of range for {x}"),
                ));
            }
            let mut dims = x.shape.0.clone();
            dims[*axis] = Dim::Fixed(1);
            Ok(TensorSpec::new(x.dtype, dims))
        }
        Op::Reshape { shape } => {
            arity(1)?;
            let x = specs[0];
            if !check_reshape(&x.shape, shape) {
                return Err(Error::graph(
                    name,
                    format!("cannot reshape {x} to {shape}: element counts differ"),
                ));
            }
            if x.dtype.is_quantized() {
                return Err(Error::graph(name, "quantized weights cannot be reshaped"));
            }
            Ok(TensorSpec::new(x.dtype, shape.clone()))
        }
        Op::Transpose { perm } => {
            arity(1)?;
            let x = specs[0];
            let mut seen = vec![false; x.shape.rank()];
            let ok = perm.len() == x.shape.rank()
                && perm
                    .iter()
                    .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
            if !ok || x.dtype.is_quantized() {
                return Err(Error::graph(
                    name,
                    format!("{perm:?} is not a permutation of the axes of {x}"),
                ));
            }
            Ok(TensorSpec::new(
                x.dtype,
                perm.iter()
                    .map(|&p| x.shape.dim(p).clone())
                    .collect::<Vec<_>>(),
            ))
        }
        Op::Slice { axis, start, len } => {
            arity(1)?;
            let x = specs[0];
            if *axis >= x.shape.rank() || x.dtype.is_quantized() {
                return Err(Error::graph(
                    name,
                    format!("axis {axis} out of range for {x}"),
                ));
            }
            let d = x.shape.dim(*axis);
            let fits = match (d, len) {
                (Dim::Fixed(n), l) => start + l.max() <= *n,
                (Dim::Sym { .. }, l) if l == d => *start == 0,
                (Dim::Sym { max, .. }, l) => start + l.max() <= *max,
            };
            if !fits {
                return Err(Error::graph(
                    name,
                    format!("{start}..{start}+{len} exceeds axis {axis} of {x}"),
                ));
            }
            let mut dims = x.shape.0.clone();
            dims[*axis] = len.clone();
            Ok(TensorSpec::new(x.dtype, dims))
        }
        Op::Concat { axis } => {
            if specs.is_empty() {
                return Err(Error::graph(name, "needs at least one operand"));
            }
            let dtype = same_dtype(name, specs)?;
            let rank = specs[0].shape.rank();
            let mut total = 0usize;
            for s in specs {
                let same_elsewhere = s.shape.rank() == rank
                    && (0..rank).all(|i| i == *axis || s.shape.dim(i) == specs[0].shape.dim(i));
                let along = (*axis < rank && s.shape.rank() == rank)
                    .then(|| s.shape.dim(*axis).fixed())
                    .flatten();
                match (same_elsewhere, along) {
                    (true, Some(n)) => total += n,
                    _ => {
                        return Err(Error::graph(
                            name,
                            format!(
                                "operands {} must agree except on a fixed axis {axis}",
                                shapes(specs)
                            ),
                        ))
                    }
                }
            }
            let mut dims = specs[0].shape.0.clone();
            dims[*axis] = Dim::Fixed(total);
            Ok(TensorSpec::new(dtype, dims))
        }
        Op::Cast { dtype } => {
            arity(1)?;
            if dtype.is_quantized() || specs[0].dtype.is_quantized() {
                return Err(Error::graph(
                    name,
                    format!(
                        "cannot cast {} to {dtype}: quantization is not a cast",
                        specs[0]
                    ),
                ));
            }
            Ok(TensorSpec::new(*dtype, specs[0].shape.clone()))
        }
        Op::Where => {
            arity(3)?;
            if specs[0].dtype != DType::U8 {
                return Err(Error::graph(
                    name,
                    format!("the condition must be u8, got {}", specs[0]),
                ));
            }
            let dtype = same_dtype(name, &specs[1..])?;
            Ok(TensorSpec::new(dtype, broadcast(name, specs)?))
        }
        Op::KvWrite { axis } => {
            arity(3)?;
            let (cache, new, pos) = (specs[0], specs[1], specs[2]);
            need_int(name, pos, "the position")?;
            if pos.shape.max_numel() != 1 || pos.shape.rank() > 1 {
                return Err(Error::graph(
                    name,
                    format!("the position must have shape [1], got {pos}"),
                ));
            }
            let rank = cache.shape.rank();
            let ok = cache.dtype == new.dtype
                && !cache.dtype.is_quantized()
                && cache.shape.is_fixed()
                && new.shape.rank() == rank
                && *axis < rank
                && (0..rank).all(|i| i == *axis || cache.shape.dim(i) == new.shape.dim(i))
                && new.shape.dim(*axis).max() <= cache.shape.dim(*axis).max();
            if !ok {
                return Err(Error::graph(
                    name,
                    format!(
                        "cannot write {new} into cache {cache} along axis {axis} (the cache must be fixed-size, dtypes and other axes equal)"
                    ),
                ));
            }
            Ok(cache.clone())
        }
        Op::Argmax => {
            arity(1)?;
            let x = specs[0];
            need_float(name, x, "the operand")?;
            if x.shape.rank() == 0 {
                return Err(Error::graph(name, "needs rank >= 1"));
            }
            let mut dims = x.shape.0.clone();
            dims.pop();
            Ok(TensorSpec::new(DType::U32, dims))
        }
        Op::Attention(attrs) => {
            arity(4)?;
            let (q, k, v, pos) = (specs[0], specs[1], specs[2], specs[3]);
            same_dtype(name, &[q, k, v])?;
            need_float(name, q, "q")?;
            for (s, what) in [
                (q, "q [B, Hq, Tq, D]"),
                (k, "k [B, Hkv, Tk, D]"),
                (v, "v [B, Hkv, Tk, Dv]"),
            ] {
                need_rank(name, s, 4, what)?;
            }
            need_int(name, pos, "q_pos")?;
            need_rank(name, pos, 1, "q_pos [Tq]")?;
            let (hq, hkv) = (q.shape.dim(1).fixed(), k.shape.dim(1).fixed());
            let heads_ok = matches!((hq, hkv), (Some(a), Some(b)) if b > 0 && a % b == 0);
            let ok = heads_ok
                && q.shape.dim(0) == k.shape.dim(0)
                && k.shape.dim(0) == v.shape.dim(0)
                && k.shape.dim(1) == v.shape.dim(1)
                && q.shape.dim(3) == k.shape.dim(3)
                && k.shape.dim(2) == v.shape.dim(2)
                && pos.shape.dim(0) == q.shape.dim(2);
            if !ok {
                return Err(Error::graph(
                    name,
                    format!(
                        "inconsistent q, k, v, q_pos: {} (need q [B, Hq, Tq, D], k [B, Hkv, Tk, D], v [B, Hkv, Tk, Dv], q_pos [Tq], Hq a multiple of Hkv)",
                        shapes(specs)
                    ),
                ));
            }
            if attrs.window == Some(0) || attrs.softcap.is_some_and(|c| c.is_nan() || c <= 0.0) {
                return Err(Error::graph(
                    name,
                    format!("window must be >= 1 and softcap > 0, got {attrs:?}"),
                ));
            }
            let mut dims = q.shape.0.clone();
            dims[3] = v.shape.dim(3).clone();
            Ok(TensorSpec::new(q.dtype, dims))
        }
    }
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
        if let Op::KvWrite { .. } = op {
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
                if !matches!(op, Op::KvWrite { .. }) || inputs[0] != *i || consumed {
                    return Err(Error::graph(
                        name,
                        format!(
                            "state '{state}' may only be read by one kv_write (read the kv_write's result instead)"
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
        let writes_state = matches!(node.op, Op::KvWrite { .. })
            && matches!(&self.nodes[node.inputs[0].index()].op,
                Op::Parameter { name: n, kind: ParamKind::State } if n == name);
        if !writes_state {
            return err(format!(
                "the new value of state '{name}' must be a kv_write into it, got {}",
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
            if let Op::KvWrite { .. } = n.op {
                if !self.state_updates.iter().any(|(_, id)| id.index() == i) {
                    return Err(Error::graph(
                        "kv_write",
                        format!("%{i} is not declared as a state update (call update_state)"),
                    ));
                }
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

    /// Rebuilds `g` through the builder's checks and confirms every stored spec.
    pub(crate) fn revalidate(g: &Graph) -> Result<()> {
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
