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
    let kpos_dims = vec![fixed(1), tk.clone()];
    let qpos_dims = vec![tq.clone(), fixed(1)];
    scores = mask_scores(b, scores, q_pos, tk, kpos_dims, qpos_dims, attrs)?;
    let probs = b.softmax(scores)?;
    let out = b.matmul(probs, v5)?;
    b.reshape(out, vec![batch, fixed(hq), tq, d(&vs, 3)])
}

/// Builds slot attention ([`Op::SlotAttention`](super::Op::SlotAttention)) from primitive ops:
/// the definition every backend must match. Every dimension must be fixed.
///
/// Each query row `t` gathers its slot's keys and values out of the pool (`gather` over the
/// pool viewed as `[S, Tk·Hkv·D]`), becoming a batch of `T` single-query attentions, each masked
/// at its own position `q_pos[t]`.
pub fn decompose_slot_attention(
    b: &mut GraphBuilder,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    q_pos: NodeId,
    slots: NodeId,
    attrs: AttentionAttrs,
) -> Result<NodeId> {
    let err = |m: &str| Error::graph("slot_attention", m.to_string());
    let fixed_dims = |s: &crate::TensorSpec| {
        s.shape
            .fixed_dims()
            .ok_or_else(|| err("the decomposition needs fixed dimensions"))
    };
    let (qd, kd, vd) = (
        fixed_dims(b.spec(q))?,
        fixed_dims(b.spec(k))?,
        fixed_dims(b.spec(v))?,
    );
    if qd.len() != 4 || kd.len() != 4 || vd.len() != 4 {
        return Err(err("q, k and v must have rank 4"));
    }
    let (hq, t, d) = (qd[1], qd[2], qd[3]);
    let (s, tk, hkv, dv) = (kd[0], kd[1], kd[2], vd[3]);
    if hkv == 0 || hq % hkv != 0 {
        return Err(err("query heads must be a multiple of key/value heads"));
    }
    let group = hq / hkv;
    let f = |dims: &[usize]| dims.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
    // Each row's slot of the pool, heads first: [T, Hkv, 1, Tk, ·].
    let mut per_row = |pool: NodeId, width: usize| -> Result<NodeId> {
        let flat = b.reshape(pool, f(&[s, tk * hkv * width]))?;
        let rows = b.gather(flat, slots)?;
        let rows = b.reshape(rows, f(&[t, tk, hkv, width]))?;
        let rows = b.transpose(rows, &[0, 2, 1, 3])?;
        b.reshape(rows, f(&[t, hkv, 1, tk, width]))
    };
    let k5 = per_row(k, d)?;
    let v5 = per_row(v, dv)?;
    let qt = b.transpose(q, &[2, 1, 0, 3])?;
    let q5 = b.reshape(qt, f(&[t, hkv, group, 1, d]))?;
    let mut scores = b.matmul_t(q5, k5)?;
    scores = b.affine(scores, attrs.scale, 0.0)?;
    if let Some(cap) = attrs.softcap {
        scores = b.softcap(scores, cap)?;
    }
    let (kpos_dims, qpos_dims) = (f(&[1, 1, 1, 1, tk]), f(&[t, 1, 1, 1, 1]));
    scores = mask_scores(
        b,
        scores,
        q_pos,
        Dim::Fixed(tk),
        kpos_dims,
        qpos_dims,
        attrs,
    )?;
    let probs = b.softmax(scores)?;
    let out = b.matmul(probs, v5)?;
    let out = b.reshape(out, f(&[t, hq, 1, dv]))?;
    b.transpose(out, &[2, 1, 0, 3])
}

/// `scores` with the keys a query may not see set to `-inf`: key `j` (an `iota` of `tk` viewed as
/// `kpos_dims`) against query positions `q_pos` (viewed as `qpos_dims`), causal (`j <= pos`) and
/// sliding-window (`pos - j < w`) as `attrs` ask.
fn mask_scores(
    b: &mut GraphBuilder,
    mut scores: NodeId,
    q_pos: NodeId,
    tk: Dim,
    kpos_dims: Vec<Dim>,
    qpos_dims: Vec<Dim>,
    attrs: AttentionAttrs,
) -> Result<NodeId> {
    if !attrs.causal && attrs.window.is_none() {
        return Ok(scores);
    }
    let pos_dtype = b.spec(q_pos).dtype;
    let kpos = b.iota(tk, pos_dtype)?;
    let kpos = b.reshape(kpos, kpos_dims)?;
    let qpos = b.reshape(q_pos, qpos_dims)?;
    let neg_inf = b.scalar(b.spec(scores).dtype, f32::NEG_INFINITY)?;
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
    Ok(scores)
}
