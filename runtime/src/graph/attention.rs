//! The definition of [`Op::Attention`](super::Op::Attention) as a composition of primitive ops.

use super::builder::GraphBuilder;
use super::op::{AttentionAttrs, CompareOp};
use super::NodeId;
use crate::error::{Error, Result};
use crate::shape::Dim;

/// Builds attention from primitive ops: the definition every backend must match.
///
/// Query heads are grouped over key/value heads by reshaping `q [B, Hq, Tq, D]` to
/// `[B, Hkv, G, Tq, D]` (G = Hq / Hkv) and broadcasting `k, v` as `[B, Hkv, 1, Tk, ·]`, so no
/// key/value head is copied. Masked scores become `-inf`; a query that sees no key at all yields
/// NaN, which callers avoid by construction (every query sees at least its own position).
pub fn decompose_attention(
    b: &mut GraphBuilder,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    q_pos: NodeId,
    attrs: AttentionAttrs,
) -> Result<NodeId> {
    let (qs, ks, vs) = (b.spec(q).clone(), b.spec(k).clone(), b.spec(v).clone());
    let pos_dtype = b.spec(q_pos).dtype;
    if qs.shape.rank() != 4 || ks.shape.rank() != 4 || vs.shape.rank() != 4 {
        return Err(Error::graph("attention", "q, k and v must have rank 4"));
    }
    let d = |s: &crate::TensorSpec, i: usize| s.shape.dim(i).clone();
    let (batch, tq, tk) = (d(&qs, 0), d(&qs, 2), d(&ks, 2));
    let (Some(hq), Some(hkv)) = (qs.shape.dim(1).fixed(), ks.shape.dim(1).fixed()) else {
        return Err(Error::graph("attention", "head counts must be fixed"));
    };
    if hkv == 0 || hq % hkv != 0 {
        return Err(Error::graph(
            "attention",
            format!("{hq} query heads cannot be grouped over {hkv} key/value heads"),
        ));
    }
    let group = hq / hkv;
    let fixed = Dim::Fixed;
    let q5 = b.reshape(
        q,
        vec![
            batch.clone(),
            fixed(hkv),
            fixed(group),
            tq.clone(),
            d(&qs, 3),
        ],
    )?;
    let k5 = b.reshape(
        k,
        vec![batch.clone(), fixed(hkv), fixed(1), tk.clone(), d(&ks, 3)],
    )?;
    let v5 = b.reshape(
        v,
        vec![batch.clone(), fixed(hkv), fixed(1), tk.clone(), d(&vs, 3)],
    )?;
    let mut scores = b.matmul_t(q5, k5)?;
    scores = b.affine(scores, attrs.scale, 0.0)?;
    if let Some(cap) = attrs.softcap {
        scores = b.softcap(scores, cap)?;
    }
    if attrs.causal || attrs.window.is_some() {
        let kpos = b.iota(tk.clone(), pos_dtype)?;
        let kpos = b.reshape(kpos, vec![fixed(1), tk])?;
        let qpos = b.reshape(q_pos, vec![tq.clone(), fixed(1)])?;
        let neg_inf = b.scalar(qs.dtype, f32::NEG_INFINITY)?;
        if attrs.causal {
            let visible = b.compare(CompareOp::Le, kpos, qpos)?;
            scores = b.select(visible, scores, neg_inf)?;
        }
        if let Some(w) = attrs.window {
            // Visible when pos - j < w, i.e. j + w > pos.
            let w = b.scalar(pos_dtype, w as f32)?;
            let shifted = b.add(kpos, w)?;
            let visible = b.compare(CompareOp::Gt, shifted, qpos)?;
            scores = b.select(visible, scores, neg_inf)?;
        }
    }
    let probs = b.softmax(scores)?;
    let out = b.matmul(probs, v5)?;
    b.reshape(out, vec![batch, fixed(hq), tq, d(&vs, 3)])
}
