//! The op set.

use crate::dtype::DType;
use crate::shape::{Dim, Shape};
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};

/// What a parameter is for. All three are bound by name when a graph executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamKind {
    /// Per-call data (token ids, positions).
    Input,
    /// Model weights: uploaded once and shared by every executable.
    Weight,
    /// Device-resident state read and written in place (the KV cache).
    State,
}

impl ParamKind {
    /// `input`, `weight` or `state`.
    pub fn name(self) -> &'static str {
        match self {
            ParamKind::Input => "input",
            ParamKind::Weight => "weight",
            ParamKind::State => "state",
        }
    }
}

/// Elementwise binary operations (numpy broadcasting; operands share a dtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// max(a, b)
    Maximum,
    /// min(a, b)
    Minimum,
}

/// Elementwise comparisons producing a u8 mask (1 where true).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    /// a == b
    Eq,
    /// a != b
    Ne,
    /// a < b
    Lt,
    /// a <= b
    Le,
    /// a > b
    Gt,
    /// a >= b
    Ge,
}

/// Elementwise float functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryOp {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// 1/x
    Recip,
    /// x²
    Sqr,
    /// tanh x
    Tanh,
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// x · sigmoid(x)
    Silu,
    /// max(x, 0)
    Relu,
    /// x · Φ(x), with the exact (erf) normal CDF
    GeluErf,
    /// the tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`)
    GeluTanh,
}

/// Reductions over one axis (the axis is kept with size 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    /// Σ
    Sum,
    /// max
    Max,
    /// mean
    Mean,
}

/// Attributes of [`Op::Attention`].
///
/// The op is *defined* by its decomposition ([`crate::graph::decompose_attention`]): scores
/// `q·kᵀ · scale`, optionally soft-capped `cap·tanh(s/cap)`, masked to `-inf` where key `j` is not
/// visible from query `i` (causal: `j <= pos[i]`; sliding window `w`: `pos[i] - j < w`), softmax
/// over keys, times `v`. Query heads are grouped over key/value heads (GQA/MQA): query head `h`
/// reads key/value head `h / (q_heads / kv_heads)`. Key `j` sits at absolute position `j`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttentionAttrs {
    /// Multiplier applied to the scores (usually `1/√head_dim`).
    pub scale: f32,
    /// Hide keys after each query's position.
    pub causal: bool,
    /// Hide keys `window` or more positions before each query.
    pub window: Option<usize>,
    /// Soft-cap the scores before masking.
    pub softcap: Option<f32>,
}

impl AttentionAttrs {
    /// Causal attention with `scale`, no window and no soft-cap.
    pub fn causal(scale: f32) -> Self {
        AttentionAttrs {
            scale,
            causal: true,
            window: None,
            softcap: None,
        }
    }
}

/// An operation with its attributes. Operand conventions are given per variant; the builder
/// ([`crate::GraphBuilder`]) checks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A named parameter (no operands).
    Parameter {
        /// The name it is bound by.
        name: String,
        /// Input, weight or state.
        kind: ParamKind,
    },
    /// A constant tensor (no operands).
    Constant {
        /// The value.
        value: HostTensor,
    },
    /// `[0, 1, ..., len-1]` (no operands).
    Iota {
        /// Its length.
        len: Dim,
        /// Its dtype (integer or float).
        dtype: DType,
    },
    /// Embedding lookup: `(table [V, H], ids [...]) -> [..., H]`. A quantized table yields f32.
    Gather,
    /// `(a [..., M, K], b [..., K, N]) -> [..., M, N]` with broadcast batch dims; with
    /// `transpose_rhs`, `b` is `[..., N, K]`. A quantized `b` must be a 2-D `[N, K]` weight with
    /// `transpose_rhs` (the GGUF layout).
    MatMul {
        /// `b` is stored transposed.
        transpose_rhs: bool,
    },
    /// Elementwise `(a, b)` with broadcasting.
    Binary(BinaryOp),
    /// Elementwise comparison `(a, b) -> u8` with broadcasting.
    Compare(CompareOp),
    /// Elementwise float function `(x)`.
    Unary(UnaryOp),
    /// `x · mul + add` on a float `(x)`.
    Affine {
        /// Multiplier.
        mul: f32,
        /// Offset.
        add: f32,
    },
    /// `cap · tanh(x / cap)` on a float `(x)`.
    SoftCap {
        /// The cap.
        cap: f32,
    },
    /// `(x [..., H], w [H]) -> x / √(mean(x²) + eps) · w`.
    RmsNorm {
        /// Added to the mean square.
        eps: f32,
    },
    /// `(x [..., H], w [H], b [H]) -> (x - mean) / √(var + eps) · w + b`.
    LayerNorm {
        /// Added to the variance.
        eps: f32,
    },
    /// Rotary embedding `(x [B, H, T, D], cos [T, R/2], sin [T, R/2])`: rotates the first `R`
    /// features of each head (`R <= D`, partial rotary when smaller) and passes the rest through.
    /// Pairs are `(i, i + R/2)` ("halves", the Hugging Face layout) or `(2i, 2i+1)` when
    /// `interleaved` (the GGUF/original layout).
    Rope {
        /// Pair adjacent features instead of the two halves.
        interleaved: bool,
    },
    /// Softmax over the last axis of a float `(x)`.
    Softmax,
    /// Reduction of a float `(x)` over `axis`, keeping it with size 1.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// The axis reduced.
        axis: usize,
    },
    /// Same elements, new shape `(x)`.
    Reshape {
        /// The new shape.
        shape: Shape,
    },
    /// Axis permutation `(x)`: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// `(x)` restricted to `start..start+len` along `axis`.
    Slice {
        /// The axis.
        axis: usize,
        /// First index kept.
        start: usize,
        /// Number of indices kept (may be symbolic).
        len: Dim,
    },
    /// Concatenation of the operands along a fixed-size `axis`.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// Conversion `(x)` to a plain dtype (float to int truncates toward zero).
    Cast {
        /// The target dtype.
        dtype: DType,
    },
    /// `(cond u8, a, b) -> cond ? a : b` with broadcasting.
    Where,
    /// Writes `new` into `cache` at offset `pos[0]` along `axis`:
    /// `(cache, new, pos [1] integer) -> updated cache`. The cache operand must be a state
    /// parameter; the update happens in place on devices that can.
    KvWrite {
        /// The sequence axis of the cache.
        axis: usize,
    },
    /// Writes each row of `new` into its own sequence slot of a KV pool:
    /// `(cache [S, C, ...], new [1, T, ...], slots [T] integer, pos [T] integer) -> updated cache`,
    /// row `t` of `new` landing at `cache[slots[t], pos[t]]`, rows in order (a later row wins
    /// where two name the same place). The cache operand must be a state parameter, updated in
    /// place on devices that can.
    KvScatter,
    /// Index of the largest value over the last axis of a float `(x)`, as u32.
    Argmax,
    /// Scaled dot-product attention `(q [B, Hq, Tq, D], k [B, Hkv, Tk, D], v [B, Hkv, Tk, Dv],
    /// q_pos [Tq] integer) -> [B, Hq, Tq, Dv]`. See [`AttentionAttrs`].
    Attention(AttentionAttrs),
    /// Attention of each query over its own sequence slot of a KV pool:
    /// `(q [1, Hq, T, D], k [S, Tk, Hkv, D], v [S, Tk, Hkv, Dv], q_pos [T] integer, slots [T]
    /// integer) -> [1, Hq, T, Dv]`. Query `t` attends to the keys `k[slots[t], j]` (stored
    /// positions-first, as the pool holds them), with [`AttentionAttrs`] applied at its own
    /// position `q_pos[t]`. Defined by [`crate::graph::decompose_slot_attention`].
    SlotAttention(AttentionAttrs),
}

/// The name of every op kind, as [`Op::name`] gives it (binary, compare, unary and reduce ops
/// listed one by one). The conformance suite checks that it covers all of them.
pub const OP_NAMES: &[&str] = &[
    "parameter",
    "constant",
    "iota",
    "gather",
    "matmul",
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "neg",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "recip",
    "sqr",
    "tanh",
    "sin",
    "cos",
    "sigmoid",
    "silu",
    "relu",
    "gelu_erf",
    "gelu_tanh",
    "affine",
    "softcap",
    "rms_norm",
    "layer_norm",
    "rope",
    "softmax",
    "reduce_sum",
    "reduce_max",
    "reduce_mean",
    "reshape",
    "transpose",
    "slice",
    "concat",
    "cast",
    "where",
    "kv_write",
    "kv_scatter",
    "argmax",
    "attention",
    "slot_attention",
];

impl Op {
    /// Whether the op writes a state parameter (its first operand): `kv_write`, `kv_scatter`.
    pub fn writes_state(&self) -> bool {
        matches!(self, Op::KvWrite { .. } | Op::KvScatter)
    }

    /// A short name for messages (`matmul`, `rms_norm`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Parameter { .. } => "parameter",
            Op::Constant { .. } => "constant",
            Op::Iota { .. } => "iota",
            Op::Gather => "gather",
            Op::MatMul { .. } => "matmul",
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Maximum => "maximum",
                BinaryOp::Minimum => "minimum",
            },
            Op::Compare(c) => match c {
                CompareOp::Eq => "eq",
                CompareOp::Ne => "ne",
                CompareOp::Lt => "lt",
                CompareOp::Le => "le",
                CompareOp::Gt => "gt",
                CompareOp::Ge => "ge",
            },
            Op::Unary(u) => match u {
                UnaryOp::Neg => "neg",
                UnaryOp::Abs => "abs",
                UnaryOp::Exp => "exp",
                UnaryOp::Log => "log",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Rsqrt => "rsqrt",
                UnaryOp::Recip => "recip",
                UnaryOp::Sqr => "sqr",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Sin => "sin",
                UnaryOp::Cos => "cos",
                UnaryOp::Sigmoid => "sigmoid",
                UnaryOp::Silu => "silu",
                UnaryOp::Relu => "relu",
                UnaryOp::GeluErf => "gelu_erf",
                UnaryOp::GeluTanh => "gelu_tanh",
            },
            Op::Affine { .. } => "affine",
            Op::SoftCap { .. } => "softcap",
            Op::RmsNorm { .. } => "rms_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Rope { .. } => "rope",
            Op::Softmax => "softmax",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "reduce_sum",
                ReduceOp::Max => "reduce_max",
                ReduceOp::Mean => "reduce_mean",
            },
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Cast { .. } => "cast",
            Op::Where => "where",
            Op::KvWrite { .. } => "kv_write",
            Op::KvScatter => "kv_scatter",
            Op::Argmax => "argmax",
            Op::Attention(_) => "attention",
            Op::SlotAttention(_) => "slot_attention",
        }
    }

    /// The name with its attributes, for graph listings.
    pub fn describe(&self) -> String {
        match self {
            Op::Parameter { name, kind } => format!("{} {name:?}", kind.name()),
            Op::Constant { value } => format!("constant {}{:?}", value.dtype(), value.dims()),
            Op::Iota { len, dtype } => format!("iota<{len}, {dtype}>"),
            Op::MatMul { transpose_rhs } => format!("matmul<transpose_rhs={transpose_rhs}>"),
            Op::Affine { mul, add } => format!("affine<{mul}, {add}>"),
            Op::SoftCap { cap } => format!("softcap<{cap}>"),
            Op::RmsNorm { eps } => format!("rms_norm<{eps}>"),
            Op::LayerNorm { eps } => format!("layer_norm<{eps}>"),
            Op::Rope { interleaved } => format!("rope<interleaved={interleaved}>"),
            Op::Reduce { axis, .. } => format!("{}<axis={axis}>", self.name()),
            Op::Reshape { shape } => format!("reshape<{shape}>"),
            Op::Transpose { perm } => format!("transpose<{perm:?}>"),
            Op::Slice { axis, start, len } => format!("slice<axis={axis}, {start}+{len}>"),
            Op::Concat { axis } => format!("concat<axis={axis}>"),
            Op::Cast { dtype } => format!("cast<{dtype}>"),
            Op::KvWrite { axis } => format!("kv_write<axis={axis}>"),
            Op::Attention(a) | Op::SlotAttention(a) => format!(
                "{}<scale={}, causal={}, window={:?}, softcap={:?}>",
                self.name(),
                a.scale,
                a.causal,
                a.window,
                a.softcap
            ),
            _ => self.name().to_string(),
        }
    }
}
