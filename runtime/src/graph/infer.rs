//! Shape and dtype inference: the result spec of every op from its operands' specs, with the
//! operand checks that reject a malformed op (wrong rank, dtype or sizes) naming the op and the
//! shapes involved.

use super::op::Op;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{Dim, Shape};
use crate::tensor::TensorSpec;

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
pub(crate) fn infer(op: &Op, specs: &[&TensorSpec]) -> Result<TensorSpec> {
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
        Op::KvScatter => {
            arity(4)?;
            let (cache, new, slots, pos) = (specs[0], specs[1], specs[2], specs[3]);
            need_int(name, slots, "the slots")?;
            need_int(name, pos, "the positions")?;
            need_rank(name, slots, 1, "the slots [T]")?;
            need_rank(name, pos, 1, "the positions [T]")?;
            let rank = cache.shape.rank();
            let ok = cache.dtype == new.dtype
                && !cache.dtype.is_quantized()
                && cache.shape.is_fixed()
                && rank >= 2
                && new.shape.rank() == rank
                && *new.shape.dim(0) == Dim::Fixed(1)
                && (2..rank).all(|i| cache.shape.dim(i) == new.shape.dim(i))
                && slots.shape.dim(0) == new.shape.dim(1)
                && pos.shape.dim(0) == new.shape.dim(1);
            if !ok {
                return Err(Error::graph(
                    name,
                    format!(
                        "cannot scatter {} (need cache [S, C, ...] fixed-size, new [1, T, ...] with the cache's trailing axes and dtype, slots [T], positions [T])",
                        shapes(specs)
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
            attention_operands(
                name,
                [q, k, v, pos],
                [
                    "q [B, Hq, Tq, D]",
                    "k [B, Hkv, Tk, D]",
                    "v [B, Hkv, Tk, Dv]",
                    "q_pos [Tq]",
                ],
            )?;
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
            attention_result(name, attrs, q, v)
        }
        Op::SlotAttention(attrs) => {
            arity(5)?;
            let (q, k, v, pos, slots) = (specs[0], specs[1], specs[2], specs[3], specs[4]);
            attention_operands(
                name,
                [q, k, v, pos],
                [
                    "q [1, Hq, T, D]",
                    "k [S, Tk, Hkv, D]",
                    "v [S, Tk, Hkv, Dv]",
                    "q_pos [T]",
                ],
            )?;
            need_int(name, slots, "slots")?;
            need_rank(name, slots, 1, "slots [T]")?;
            let (hq, hkv) = (q.shape.dim(1).fixed(), k.shape.dim(2).fixed());
            let heads_ok = matches!((hq, hkv), (Some(a), Some(b)) if b > 0 && a % b == 0);
            let ok = heads_ok
                && *q.shape.dim(0) == Dim::Fixed(1)
                && k.shape.dim(0) == v.shape.dim(0)
                && k.shape.dim(1) == v.shape.dim(1)
                && k.shape.dim(2) == v.shape.dim(2)
                && q.shape.dim(3) == k.shape.dim(3)
                && pos.shape.dim(0) == q.shape.dim(2)
                && slots.shape.dim(0) == q.shape.dim(2);
            if !ok {
                return Err(Error::graph(
                    name,
                    format!(
                        "inconsistent q, k, v, q_pos, slots: {} (need q [1, Hq, T, D], k [S, Tk, Hkv, D], v [S, Tk, Hkv, Dv], q_pos [T], slots [T], Hq a multiple of Hkv)",
                        shapes(specs)
                    ),
                ));
            }
            attention_result(name, attrs, q, v)
        }
    }
}

/// The operand checks both attention ops share: q, k and v of one float dtype and rank 4, and
/// integer query positions of rank 1 (`what` names each operand's layout for messages).
fn attention_operands(
    name: &'static str,
    [q, k, v, pos]: [&TensorSpec; 4],
    what: [&str; 4],
) -> Result<()> {
    same_dtype(name, &[q, k, v])?;
    need_float(name, q, "q")?;
    for (s, w) in [q, k, v].into_iter().zip(&what[..3]) {
        need_rank(name, s, 4, w)?;
    }
    need_int(name, pos, "q_pos")?;
    need_rank(name, pos, 1, what[3])
}

/// Both attention ops' attribute checks and result: q's shape with v's last axis.
fn attention_result(
    name: &'static str,
    attrs: &super::op::AttentionAttrs,
    q: &TensorSpec,
    v: &TensorSpec,
) -> Result<TensorSpec> {
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
