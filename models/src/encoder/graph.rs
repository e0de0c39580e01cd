//! The encoder graph: BERT-style post-layer-norm layers with bidirectional attention over each
//! text's own tokens, pooled (and optionally normalized) to one vector per text, all in the IR.
//!
//! Graph interface:
//! - inputs `tokens` u32 `[batch, t]` (texts padded on the right, with any id) and `lengths`
//!   u32 `[batch]` (each row's real tokens, at least 1);
//! - symbols `batch` and `t` (bound per call on dynamic devices, to a bucket on static ones);
//! - output `embeddings` f32 `[batch, hidden]`.
//!
//! Padding never reaches a real token: padded keys get `-inf` scores, and pooling weighs only
//! real rows, so a text's vector does not depend on its batch. Weight parameters carry their
//! Hugging Face names without a task model's `bert.`/`roberta.` prefix.

use super::config::{EncoderActivation, EncoderConfig};
use super::pooling::Pooling;
use crate::error::Result;
use switchyard_runtime::{
    BinaryOp, CompareOp, DType, Dim, Graph, GraphBuilder, NodeId, ReduceOp, Result as RtResult,
    TensorSpec, UnaryOp,
};

/// How to build an encoder graph.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderGraphOptions {
    /// Dtype of activations and (float) weights.
    pub compute: DType,
    /// Most texts per call.
    pub max_batch: usize,
    /// Most tokens per text.
    pub max_tokens: usize,
    /// How token states become one vector.
    pub pooling: Pooling,
    /// Scale each vector to unit length.
    pub normalize: bool,
    /// Weights stored block-quantized, by name, with their type (matmul and gather operands).
    pub quantized: std::collections::BTreeMap<String, DType>,
}

struct Builder<'a> {
    b: GraphBuilder,
    cfg: &'a EncoderConfig,
    opts: &'a EncoderGraphOptions,
    batch: Dim,
    t: Dim,
}

impl Builder<'_> {
    fn weight(&mut self, name: &str, dims: &[usize]) -> RtResult<NodeId> {
        let dtype = self
            .opts
            .quantized
            .get(name)
            .copied()
            .unwrap_or(self.opts.compute);
        self.b.weight(name, TensorSpec::new(dtype, dims))
    }

    /// `x · Wᵀ + b` for a `[out, in]` weight.
    fn linear(&mut self, x: NodeId, name: &str, out: usize, inp: usize) -> RtResult<NodeId> {
        let w = self.weight(&format!("{name}.weight"), &[out, inp])?;
        let y = self.b.matmul_t(x, w)?;
        let bias = self.weight(&format!("{name}.bias"), &[out])?;
        self.b.add(y, bias)
    }

    fn layer_norm(&mut self, x: NodeId, name: &str) -> RtResult<NodeId> {
        let h = self.cfg.hidden_size;
        let w = self.weight(&format!("{name}.weight"), &[h])?;
        let bias = self.weight(&format!("{name}.bias"), &[h])?;
        self.b.layer_norm(x, w, bias, self.cfg.layer_norm_eps)
    }

    /// `[batch, t, hidden]` to `[batch, heads, t, head_dim]`.
    fn heads(&mut self, x: NodeId) -> RtResult<NodeId> {
        let c = self.cfg;
        let x = self.b.reshape(
            x,
            vec![
                self.batch.clone(),
                self.t.clone(),
                Dim::Fixed(c.num_heads),
                Dim::Fixed(c.head_dim),
            ],
        )?;
        self.b.transpose(x, &[0, 2, 1, 3])
    }

    fn layer(&mut self, x: NodeId, i: usize, key_bias: NodeId) -> RtResult<NodeId> {
        let c = self.cfg;
        let (h, n) = (c.hidden_size, c.intermediate_size);
        let p = format!("encoder.layer.{i}");
        let q = self.linear(x, &format!("{p}.attention.self.query"), h, h)?;
        // Scaling the queries costs a quarter of scaling the scores (t·h values, not t·t·heads).
        let q = self.b.affine(q, 1.0 / (c.head_dim as f32).sqrt(), 0.0)?;
        let k = self.linear(x, &format!("{p}.attention.self.key"), h, h)?;
        let v = self.linear(x, &format!("{p}.attention.self.value"), h, h)?;
        let (q, k, v) = (self.heads(q)?, self.heads(k)?, self.heads(v)?);
        let scores = self.b.matmul_t(q, k)?;
        let scores = self.b.add(scores, key_bias)?;
        let probs = self.b.softmax(scores)?;
        let ctx = self.b.matmul(probs, v)?;
        let ctx = self.b.transpose(ctx, &[0, 2, 1, 3])?;
        let ctx = self
            .b
            .reshape(ctx, vec![self.batch.clone(), self.t.clone(), Dim::Fixed(h)])?;
        let o = self.linear(ctx, &format!("{p}.attention.output.dense"), h, h)?;
        let x = self.b.add(o, x)?;
        let x = self.layer_norm(x, &format!("{p}.attention.output.LayerNorm"))?;
        let up = self.linear(x, &format!("{p}.intermediate.dense"), n, h)?;
        let up = self.b.unary(
            match c.activation {
                EncoderActivation::GeluErf => UnaryOp::GeluErf,
                EncoderActivation::GeluTanh => UnaryOp::GeluTanh,
                EncoderActivation::Relu => UnaryOp::Relu,
            },
            up,
        )?;
        let down = self.linear(up, &format!("{p}.output.dense"), h, n)?;
        let x = self.b.add(down, x)?;
        self.layer_norm(x, &format!("{p}.output.LayerNorm"))
    }
}

/// Builds the encoder graph of `cfg` (see the module documentation for its interface).
pub fn build_encoder_graph(cfg: &EncoderConfig, opts: &EncoderGraphOptions) -> Result<Graph> {
    Ok(build(cfg, opts)?)
}

fn build(cfg: &EncoderConfig, opts: &EncoderGraphOptions) -> RtResult<Graph> {
    let batch = Dim::sym("batch", opts.max_batch.max(1));
    let t = Dim::sym("t", opts.max_tokens.max(1));
    let mut s = Builder {
        b: GraphBuilder::new(format!("{}.encode", cfg.arch)),
        cfg,
        opts,
        batch: batch.clone(),
        t: t.clone(),
    };
    let (h, dt) = (cfg.hidden_size, opts.compute);
    let tokens = s.b.input(
        "tokens",
        TensorSpec::new(DType::U32, vec![batch.clone(), t.clone()]),
    )?;
    let lengths =
        s.b.input("lengths", TensorSpec::new(DType::U32, vec![batch.clone()]))?;

    // Embeddings: word + position (from the architecture's offset) + token type 0.
    let word = s.weight("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
    let mut x = s.b.gather(word, tokens)?;
    let pos_table = s.weight(
        "embeddings.position_embeddings.weight",
        &[cfg.max_position_embeddings, h],
    )?;
    let pos = s.b.slice(pos_table, 0, cfg.position_offset, t.clone())?;
    x = s.b.add(x, pos)?;
    let types = s.weight(
        "embeddings.token_type_embeddings.weight",
        &[cfg.type_vocab_size, h],
    )?;
    let type0 = s.b.slice(types, 0, 0, 1)?;
    x = s.b.add(x, type0)?;
    x = s.layer_norm(x, "embeddings.LayerNorm")?;

    // Which rows are real: column index < length, as f32 (exact for any realistic length).
    let cols = s.b.iota(t.clone(), DType::F32)?;
    let cols = s.b.reshape(cols, vec![Dim::Fixed(1), t.clone()])?;
    let len = s.b.cast(lengths, DType::F32)?;
    let len = s.b.reshape(len, vec![batch.clone(), Dim::Fixed(1)])?;
    let valid = s.b.compare(CompareOp::Lt, cols, len)?;
    let zero = s.b.scalar(dt, 0.0)?;
    let neg_inf = s.b.scalar(dt, f32::NEG_INFINITY)?;
    let key_bias = s.b.select(valid, zero, neg_inf)?;
    let key_bias = s.b.reshape(
        key_bias,
        vec![batch.clone(), Dim::Fixed(1), Dim::Fixed(1), t.clone()],
    )?;

    for i in 0..cfg.num_layers {
        x = s.layer(x, i, key_bias)?;
    }

    // Pooling over the real rows to [batch, 1, hidden].
    let row_mask = |s: &mut Builder<'_>, cond: NodeId| -> RtResult<NodeId> {
        let one = s.b.scalar(dt, 1.0)?;
        let m = s.b.select(cond, one, zero)?;
        s.b.reshape(m, vec![batch.clone(), t.clone(), Dim::Fixed(1)])
    };
    let pooled = match opts.pooling {
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let m = row_mask(&mut s, valid)?;
            let masked = s.b.mul(x, m)?;
            let sum = s.b.reduce(ReduceOp::Sum, masked, 1)?;
            let mut div =
                s.b.reshape(len, vec![batch.clone(), Dim::Fixed(1), Dim::Fixed(1)])?;
            if opts.pooling == Pooling::MeanSqrtLen {
                div = s.b.unary(UnaryOp::Sqrt, div)?;
            }
            if dt != DType::F32 {
                div = s.b.cast(div, dt)?;
            }
            s.b.div(sum, div)?
        }
        Pooling::Cls => s.b.slice(x, 1, 0, 1)?,
        Pooling::LastToken => {
            let next = s.b.affine(cols, 1.0, 1.0)?;
            let last = s.b.compare(CompareOp::Eq, next, len)?;
            let m = row_mask(&mut s, last)?;
            let masked = s.b.mul(x, m)?;
            s.b.reduce(ReduceOp::Sum, masked, 1)?
        }
        Pooling::Max => {
            let v =
                s.b.reshape(valid, vec![batch.clone(), t.clone(), Dim::Fixed(1)])?;
            let masked = s.b.select(v, x, neg_inf)?;
            s.b.reduce(ReduceOp::Max, masked, 1)?
        }
    };
    let mut out = s.b.reshape(pooled, vec![batch.clone(), Dim::Fixed(h)])?;
    if dt != DType::F32 {
        out = s.b.cast(out, DType::F32)?;
    }
    if opts.normalize {
        // x / max(‖x‖, 1e-12), as torch.nn.functional.normalize.
        let sq = s.b.unary(UnaryOp::Sqr, out)?;
        let norm = s.b.reduce(ReduceOp::Sum, sq, 1)?;
        let norm = s.b.unary(UnaryOp::Sqrt, norm)?;
        let eps = s.b.scalar(DType::F32, 1e-12)?;
        let norm = s.b.binary(BinaryOp::Maximum, norm, eps)?;
        out = s.b.div(out, norm)?;
    }
    s.b.output("embeddings", out)?;
    s.b.finish()
}
