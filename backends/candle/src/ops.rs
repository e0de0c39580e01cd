//! One graph op as candle calls.

use crate::buffer::{to_candle_dtype, CandleBuffer};
use crate::cpu::kernels::Isa;
use candle_core::{DType as CDType, Device as CDevice, Module, Result, Tensor, D};
use switchyard_runtime::{
    AttentionAttrs, BinaryOp, CompareOp, DType, DeviceBuffer, Op, ReduceOp, UnaryOp,
};

fn t(b: &CandleBuffer) -> Result<&Tensor> {
    match b {
        CandleBuffer::Tensor(t) | CandleBuffer::Indices { tensor: t, .. } => Ok(t),
        CandleBuffer::Quantized { dtype, .. } => {
            candle_core::bail!("a {dtype} weight can only be a matmul or gather operand")
        }
        CandleBuffer::Packed(_) => {
            candle_core::bail!("a packed weight can only be a transposed matmul or gather operand")
        }
        CandleBuffer::Blocks(h) => {
            candle_core::bail!(
                "a {} weight can only be a matmul or gather operand",
                h.dtype()
            )
        }
    }
}

fn cdtype(d: DType) -> Result<CDType> {
    to_candle_dtype(d).ok_or_else(|| candle_core::Error::Msg(format!("{d} is not a plain dtype")))
}

/// The values of a small integer tensor (ids, positions): kept from the upload when it came from
/// the host, else read back.
fn ints(b: &CandleBuffer) -> Result<std::borrow::Cow<'_, [i64]>> {
    match b {
        CandleBuffer::Indices { values, .. } => Ok(std::borrow::Cow::Borrowed(values)),
        other => Ok(std::borrow::Cow::Owned({
            crate::profile::count_host_read();
            t(other)?
                .to_device(&CDevice::Cpu)?
                .to_dtype(CDType::I64)?
                .flatten_all()?
                .to_vec1::<i64>()?
        })),
    }
}

/// The host values of `op`'s result when it only rearranges integer values the host already
/// has (a slice, reshape or integer cast of an [`CandleBuffer::Indices`]).
fn derived_indices(op: &Op, x: &[&CandleBuffer], out: &[usize]) -> Option<std::sync::Arc<[i64]>> {
    let CandleBuffer::Indices { values, tensor } = x.first()? else {
        return None;
    };
    match op {
        Op::Reshape { .. } => Some(values.clone()),
        Op::Cast { dtype: DType::I64 } => Some(values.clone()),
        Op::Cast { dtype: DType::I32 } if values.iter().all(|&v| i32::try_from(v).is_ok()) => {
            Some(values.clone())
        }
        Op::Cast { dtype: DType::U32 } if values.iter().all(|&v| u32::try_from(v).is_ok()) => {
            Some(values.clone())
        }
        Op::Slice { axis, start, .. } => {
            let dims = tensor.dims();
            let inner: usize = dims[axis + 1..].iter().product();
            let (len, full) = (out[*axis], dims[*axis]);
            let outer: usize = dims[..*axis].iter().product();
            let mut v = Vec::with_capacity(outer * len * inner);
            for o in 0..outer {
                let base = (o * full + start) * inner;
                v.extend_from_slice(&values[base..base + len * inner]);
            }
            Some(v.into())
        }
        _ => None,
    }
}

/// Why an op failed: values the caller gave that the op cannot take, or candle itself.
pub(crate) enum EvalError {
    /// An index out of range, a cache overflow, a division by zero.
    Invalid(String),
    /// candle reported an error.
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for EvalError {
    fn from(e: candle_core::Error) -> Self {
        EvalError::Candle(e)
    }
}

/// Evaluates `op` on `x`; `out` is the result's concrete dims and `dtype` its dtype.
/// `isa`: which CPU kernels of [`crate::cpu`] may replace candle's ([`Isa::PORTABLE`]: none).
pub(crate) fn eval(
    op: &Op,
    x: &[&CandleBuffer],
    out: &[usize],
    dtype: DType,
    dev: &CDevice,
    isa: Isa,
) -> std::result::Result<CandleBuffer, EvalError> {
    if !dev.is_cpu() && crate::i32_on_host::needed(op, x, dtype) {
        return crate::i32_on_host::eval(op, x, out, dtype, dev);
    }
    let r = match op {
        Op::Parameter { .. } | Op::Constant { .. } => {
            unreachable!("parameters and constants are bound before evaluation")
        }
        Op::Iota { .. } => Tensor::arange(0i64, out[0] as i64, dev)?.to_dtype(cdtype(dtype)?)?,
        Op::Gather => {
            let ids = t(x[1])?;
            let idv = ints(x[1])?;
            let rows = x[0].dims()[0];
            if let Some(bad) = idv.iter().find(|&&i| i < 0 || i as usize >= rows) {
                return Err(EvalError::Invalid(format!(
                    "index {bad} out of range for a table of {rows} rows"
                )));
            }
            match x[0] {
                CandleBuffer::Tensor(table) | CandleBuffer::Indices { tensor: table, .. } => {
                    // The ids from their host values (checked above): candle's CUDA kernels
                    // have no i32 casts.
                    let flat: Vec<u32> = idv.iter().map(|&i| i as u32).collect();
                    let flat = Tensor::from_vec(flat, idv.len(), dev)?;
                    table.index_select(&flat, 0)?.reshape(out)?
                }
                CandleBuffer::Quantized { tensor, .. } => {
                    let flat: Vec<u32> = idv.iter().map(|&i| i as u32).collect();
                    let flat = Tensor::from_vec(flat, ids.dims(), dev)?;
                    tensor.embedding(&flat)?.reshape(out)?
                }
                CandleBuffer::Packed(p) => {
                    let k = p.k();
                    let mut rows = vec![0f32; idv.len() * k];
                    for (&id, row) in idv.iter().zip(rows.chunks_exact_mut(k.max(1))) {
                        p.row_into(id as usize, row);
                    }
                    Tensor::from_vec(rows, out, dev)?
                }
                CandleBuffer::Blocks(h) => {
                    let (k, q) = (h.dims()[1], h.dtype());
                    let row_bytes = k / q.block_len() * q.block_bytes();
                    let mut rows = vec![0f32; idv.len() * k];
                    for (&id, row) in idv.iter().zip(rows.chunks_exact_mut(k.max(1))) {
                        let at = id as usize * row_bytes;
                        switchyard_runtime::quant::dequantize_into(
                            q,
                            &h.as_bytes()[at..at + row_bytes],
                            row,
                        )
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                    }
                    Tensor::from_vec(rows, out, dev)?
                }
            }
        }
        Op::MatMul { transpose_rhs } => {
            let a = t(x[0])?;
            match x[1] {
                CandleBuffer::Quantized {
                    weight,
                    tensor,
                    dtype: q,
                    dims,
                } => match isa
                    .any()
                    .then(|| quant_matmul(isa, a, &tensor.data()?, *q, dims, out))
                    .transpose()?
                    .flatten()
                {
                    Some(y) => y,
                    None => weight.forward(&a.contiguous()?)?,
                },
                CandleBuffer::Blocks(h) => {
                    // The kernels take f32 activations (as llama.cpp's do): others convert.
                    let a32 = a.to_dtype(CDType::F32)?;
                    match quant_matmul(isa, &a32, h.as_bytes(), h.dtype(), h.dims(), out)? {
                        Some(y) => y.to_dtype(a.dtype())?,
                        None => {
                            return Err(EvalError::Candle(candle_core::Error::Msg(format!(
                            "the CPU kernels cannot multiply {:?} {:?} activations by a {} weight",
                            a.dtype(),
                            a.dims(),
                            h.dtype()
                        ))))
                        }
                    }
                }
                CandleBuffer::Packed(p) => {
                    // Packed for the use it was uploaded for: `[N, K]` rows for `x · Wᵀ`, or a
                    // plain `[K, N]` operand's columns for `x · B`.
                    if *transpose_rhs == p.from_columns() {
                        let want = if *transpose_rhs {
                            "transposed"
                        } else {
                            "plain"
                        };
                        return Err(EvalError::Invalid(format!(
                            "a weight packed for the other kind of matmul is a {want} operand here"
                        )));
                    }
                    packed_matmul(isa, a, p, out)?
                }
                CandleBuffer::Tensor(b) | CandleBuffer::Indices { tensor: b, .. } => {
                    let ours = match cpu_matmul_nt(isa, a, b, *transpose_rhs, out)? {
                        Some(y) => Some(y),
                        None => cpu_batched_matmul(isa, a, b, *transpose_rhs, out)?,
                    };
                    match ours {
                        Some(y) => y,
                        None => {
                            // candle's matmul takes a transposed last pair of axes but not
                            // permuted batch axes (a head-major view of a token-major tensor):
                            // those are copied out first (a no-op for contiguous operands).
                            let b = b.contiguous()?;
                            let b = if *transpose_rhs { b.t()? } else { b };
                            a.contiguous()?.broadcast_matmul(&b)?
                        }
                    }
                }
            }
        }
        Op::Binary(op) => {
            let (a, b) = (t(x[0])?, t(x[1])?);
            match op {
                BinaryOp::Add => a.broadcast_add(b)?,
                BinaryOp::Sub => a.broadcast_sub(b)?,
                BinaryOp::Mul => a.broadcast_mul(b)?,
                BinaryOp::Div => {
                    if dtype.is_int() && ints(x[1])?.contains(&0) {
                        return Err(EvalError::Invalid("integer division by zero".into()));
                    }
                    a.broadcast_div(b)?
                }
                BinaryOp::Maximum => a.broadcast_maximum(b)?,
                BinaryOp::Minimum => a.broadcast_minimum(b)?,
            }
        }
        Op::Compare(op) => {
            let (a, b) = (t(x[0])?, t(x[1])?);
            match op {
                CompareOp::Eq => a.broadcast_eq(b)?,
                CompareOp::Ne => a.broadcast_ne(b)?,
                CompareOp::Lt => a.broadcast_lt(b)?,
                CompareOp::Le => a.broadcast_le(b)?,
                CompareOp::Gt => a.broadcast_gt(b)?,
                CompareOp::Ge => a.broadcast_ge(b)?,
            }
        }
        Op::Unary(op) => {
            let a = t(x[0])?;
            match op {
                UnaryOp::Neg => a.neg()?,
                UnaryOp::Abs => a.abs()?,
                UnaryOp::Exp => a.exp()?,
                UnaryOp::Log => a.log()?,
                UnaryOp::Sqrt => a.sqrt()?,
                UnaryOp::Rsqrt => a.sqrt()?.recip()?,
                UnaryOp::Recip => a.recip()?,
                UnaryOp::Sqr => a.sqr()?,
                UnaryOp::Tanh => a.tanh()?,
                UnaryOp::Sin => a.sin()?,
                UnaryOp::Cos => a.cos()?,
                UnaryOp::Sigmoid => candle_nn::ops::sigmoid(a)?,
                UnaryOp::Silu => match isa
                    .any()
                    .then(|| crate::cpu::activation::silu(isa, a))
                    .transpose()?
                    .flatten()
                {
                    Some(y) => y,
                    None => a.silu()?,
                },
                UnaryOp::Relu => a.relu()?,
                UnaryOp::GeluErf => match isa
                    .any()
                    .then(|| crate::cpu::activation::gelu_erf(isa, a))
                    .transpose()?
                    .flatten()
                {
                    Some(y) => y,
                    None => a.gelu_erf()?,
                },
                UnaryOp::GeluTanh => a.gelu()?,
            }
        }
        Op::Affine { mul, add } => t(x[0])?.affine(*mul as f64, *add as f64)?,
        Op::SoftCap { cap } => t(x[0])?
            .affine(1.0 / *cap as f64, 0.0)?
            .tanh()?
            .affine(*cap as f64, 0.0)?,
        Op::RmsNorm { eps } => match isa
            .any()
            .then(|| crate::cpu::rowwise::rms_norm(isa, t(x[0])?, t(x[1])?, *eps))
            .transpose()?
            .flatten()
        {
            Some(y) => y,
            None => candle_nn::ops::rms_norm(&t(x[0])?.contiguous()?, t(x[1])?, *eps)?,
        },
        Op::LayerNorm { eps } => match isa
            .any()
            .then(|| crate::cpu::rowwise::layer_norm(isa, t(x[0])?, t(x[1])?, t(x[2])?, *eps))
            .transpose()?
            .flatten()
        {
            Some(y) => y,
            None => candle_nn::ops::layer_norm(&t(x[0])?.contiguous()?, t(x[1])?, t(x[2])?, *eps)?,
        },
        Op::Rope { interleaved } => {
            let (a, c, s) = (t(x[0])?, t(x[1])?, t(x[2])?);
            match isa
                .any()
                .then(|| crate::cpu::rowwise::rope(isa, a, c, s, *interleaved))
                .transpose()?
                .flatten()
            {
                Some(y) => y,
                None => rope(a, c, s, *interleaved)?,
            }
        }
        Op::Softmax => {
            let a = t(x[0])?;
            match isa
                .any()
                .then(|| crate::cpu::activation::softmax_last_dim(isa, a))
                .transpose()?
                .flatten()
            {
                Some(y) => y,
                None => candle_nn::ops::softmax_last_dim(&a.contiguous()?)?,
            }
        }
        Op::Reduce { op, axis } => {
            let a = t(x[0])?;
            match op {
                ReduceOp::Sum => a.sum_keepdim(*axis)?,
                ReduceOp::Max => a.max_keepdim(*axis)?,
                ReduceOp::Mean => a.mean_keepdim(*axis)?,
            }
        }
        Op::Reshape { .. } => t(x[0])?.reshape(out)?,
        Op::Transpose { perm } => t(x[0])?.permute(perm.clone())?,
        Op::Slice { axis, start, .. } => t(x[0])?.narrow(*axis, *start, out[*axis])?,
        Op::Concat { axis } => {
            let ts: Vec<&Tensor> = x.iter().map(|b| t(b)).collect::<Result<_>>()?;
            Tensor::cat(&ts, *axis)?
        }
        Op::Cast { dtype } => t(x[0])?.to_dtype(cdtype(*dtype)?)?,
        Op::Where => {
            let cond = t(x[0])?.broadcast_as(out)?;
            cond.where_cond(&t(x[1])?.broadcast_as(out)?, &t(x[2])?.broadcast_as(out)?)?
        }
        Op::KvWrite { axis } => {
            let cache = t(x[0])?;
            let new = t(x[1])?.contiguous()?;
            let pos = ints(x[2])?[0];
            let (n, cap) = (new.dim(*axis)?, cache.dim(*axis)?);
            if pos < 0 || pos as usize + n > cap {
                return Err(EvalError::Invalid(format!(
                    "writing {n} entries at position {pos} overflows the cache length {cap}"
                )));
            }
            // In place: the cache is the caller's state buffer.
            cache.slice_set(&new, *axis, pos as usize)?;
            cache.clone()
        }
        Op::KvScatter => {
            let cache = t(x[0])?;
            let new = t(x[1])?.contiguous()?;
            let (slots, pos) = (ints(x[2])?, ints(x[3])?);
            kv_scatter(cache, &new, &slots, &pos)?;
            cache.clone()
        }
        Op::Argmax => match isa
            .any()
            .then(|| crate::cpu::rowwise::argmax(isa, t(x[0])?))
            .transpose()?
            .flatten()
        {
            Some(y) => y,
            None => t(x[0])?.argmax(D::Minus1)?,
        },
        Op::Attention(attrs) => {
            // Query positions on the host: kept from the upload (no read back on a GPU).
            let positions = ints(x[3])?;
            let (q, k, v) = (t(x[0])?, t(x[1])?, t(x[2])?);
            attention(q, k, v, &positions, attrs, dev, isa)?
        }
        Op::SlotAttention(attrs) => {
            let (positions, slots) = (ints(x[3])?, ints(x[4])?);
            let (q, k, v) = (t(x[0])?, t(x[1])?, t(x[2])?);
            let pool = k.dim(0)?;
            if let Some(bad) = slots.iter().find(|&&s| s < 0 || s as usize >= pool) {
                return Err(EvalError::Invalid(format!(
                    "slot {bad} is outside the pool of {pool} slots"
                )));
            }
            let runs = runs(&slots, |_| true);
            // A decode step (one token per slot): every row and head in one call.
            if isa.any() && runs.len() == slots.len() {
                if let Some(out) = crate::cpu::slot_attention::decode_rows(
                    isa, q, k, v, &positions, &slots, attrs,
                )? {
                    return Ok(CandleBuffer::Tensor(out));
                }
            }
            let mut parts = Vec::new();
            for (t0, t1) in runs {
                let slot = slots[t0] as usize;
                // Keys after a run's last position are hidden by the causal mask: leave them out.
                let tk = k.dim(1)?;
                let seen = if attrs.causal {
                    let last = positions[t0..t1].iter().max().copied().unwrap_or(0);
                    ((last.max(0) as usize) + 1).min(tk)
                } else {
                    tk
                };
                let view = |c: &Tensor| {
                    c.narrow(0, slot, 1)?
                        .narrow(1, 0, seen)?
                        .permute((0, 2, 1, 3))
                };
                parts.push(attention(
                    &q.narrow(2, t0, t1 - t0)?,
                    &view(k)?,
                    &view(v)?,
                    &positions[t0..t1],
                    attrs,
                    dev,
                    isa,
                )?);
            }
            if parts.len() == 1 {
                parts.pop().expect("one part")
            } else {
                Tensor::cat(&parts, 2)?
            }
        }
    };
    Ok(match derived_indices(op, x, out) {
        Some(values) => CandleBuffer::Indices { tensor: r, values },
        None => CandleBuffer::Tensor(r),
    })
}

/// Maximal runs `[t0, t1)` of consecutive rows in the same slot, where `more(t)` also holds for
/// every row after the first.
fn runs(slots: &[i64], more: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut t0 = 0;
    while t0 < slots.len() {
        let mut t1 = t0 + 1;
        while t1 < slots.len() && slots[t1] == slots[t0] && more(t1) {
            t1 += 1;
        }
        out.push((t0, t1));
        t0 = t1;
    }
    out
}

/// Writes row `t` of `new [1, T, ...]` into `cache [S, C, ...]` at `[slots[t], pos[t]]`, in
/// place: rows of one slot at consecutive positions go in one copy.
fn kv_scatter(
    cache: &Tensor,
    new: &Tensor,
    slots: &[i64],
    pos: &[i64],
) -> std::result::Result<(), EvalError> {
    let dims = cache.dims();
    let (s, c) = (dims[0], dims[1]);
    for (t, (&slot, &p)) in slots.iter().zip(pos).enumerate() {
        if slot < 0 || slot as usize >= s || p < 0 || p as usize >= c {
            return Err(EvalError::Invalid(format!(
                "row {t} writes slot {slot} position {p}, outside the pool of {s} slots × {c} positions"
            )));
        }
    }
    if !cache.is_contiguous() {
        return Err(EvalError::Invalid(
            "the KV pool must be a contiguous state buffer".into(),
        ));
    }
    let mut flat_dims = dims[1..].to_vec();
    flat_dims[0] = s * c;
    // A reshape of the contiguous cache shares its storage: the writes land in the caller's pool.
    let flat = cache.reshape(flat_dims)?;
    let rows = new.squeeze(0)?;
    for (t0, t1) in runs(slots, |t| pos[t] == pos[t - 1] + 1) {
        let at = slots[t0] as usize * c + pos[t0] as usize;
        flat.slice_set(&rows.narrow(0, t0, t1 - t0)?.contiguous()?, 0, at)?;
    }
    Ok(())
}

fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let d = x.dim(3)?;
    let r = 2 * cos.dim(1)?;
    let apply = |x: &Tensor| {
        let (x, c, s) = (x.contiguous()?, cos.contiguous()?, sin.contiguous()?);
        if interleaved {
            candle_nn::rotary_emb::rope_i(&x, &c, &s)
        } else {
            candle_nn::rotary_emb::rope(&x, &c, &s)
        }
    };
    if r == d {
        return apply(x);
    }
    let rotated = apply(&x.narrow(3, 0, r)?)?;
    Tensor::cat(&[&rotated, &x.narrow(3, r, d - r)?], 3)
}

/// Runs `f` on the f32 values of a CPU tensor (made contiguous first).
pub(crate) fn with_f32<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        candle_core::bail!("expected a CPU tensor")
    };
    let n = x.elem_count();
    f(&storage.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + n])
}

/// `a · Wᵀ` for a weight in the CPU kernels' panel layout.
fn packed_matmul(
    isa: Isa,
    a: &Tensor,
    w: &crate::cpu::packed::PackedMatrix,
    out: &[usize],
) -> Result<Tensor> {
    let k = w.k();
    if a.dtype() != CDType::F32 || *a.dims().last().unwrap_or(&0) != k {
        candle_core::bail!(
            "packed matmul needs f32 activations of width {k}, got {:?} {:?}",
            a.dtype(),
            a.dims()
        )
    }
    let rows = a.elem_count() / k.max(1);
    let n = w.n();
    let y = with_f32(a, |x| {
        if rows == 1 {
            let mut y = vec![0f32; n];
            crate::cpu::gemv::gemv_packed(x, w, &mut y, isa);
            return Ok(y);
        }
        let rhs = crate::cpu::gemm::Rhs::Packed(w);
        match crate::cpu::gemm::gemm_nt_new(isa, x, (rows, k), rhs, n, Default::default()) {
            Some(y) => Ok(y),
            None => {
                candle_core::bail!("packed weights need the {isa} kernels to have a matrix product")
            }
        }
    })?;
    Tensor::from_vec(y, out, a.device())
}

/// Activations times a block-quantized weight with the kernels of [`crate::cpu::quant`]:
/// activations quantized as llama.cpp does for the weight's type, integer dot products for every
/// row; `None` when they do not apply (candle's quantized matmul is used then).
fn quant_matmul(
    isa: Isa,
    a: &Tensor,
    bytes: &[u8],
    dtype: DType,
    dims: &[usize],
    out: &[usize],
) -> Result<Option<Tensor>> {
    let (n, k) = (dims[0], dims[1]);
    let rows = a.elem_count() / k.max(1);
    let fits = a.dtype() == CDType::F32
        && a.device().is_cpu()
        && *a.dims().last().unwrap_or(&0) == k
        && k.is_multiple_of(dtype.block_len())
        && crate::cpu::quant::available(dtype, isa);
    if !fits {
        return Ok(None);
    }
    let qm = crate::cpu::quant::QuantMatrix { dtype, bytes, n, k };
    let mut y = vec![0f32; rows * n];
    let done = with_f32(a, |x| {
        Ok(crate::cpu::quant::matmul(isa, x, rows, &qm, &mut y))
    })?;
    if !done {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(y, out, a.device())?))
}

/// A batch of products of activations (`[.., M, K]` times `[.., K, N]`, or `[.., N, K]`
/// transposed, with the same leading axes: an encoder's attention scores and weighted values)
/// on the CPU's matrix kernels, one single-threaded product per batch entry, the entries split
/// over the worker threads (candle's batched matmul reached about 45 GFLOP/s on a batch of 32
/// texts × 12 heads of 128 × 128 × 32). `None` when the operands do not fit.
fn cpu_batched_matmul(
    isa: Isa,
    a: &Tensor,
    b: &Tensor,
    transpose_rhs: bool,
    out: &[usize],
) -> Result<Option<Tensor>> {
    let (ad, bd) = (a.dims(), b.dims());
    let r = ad.len();
    let fits = r >= 3
        && bd.len() == r
        && ad[..r - 2] == bd[..r - 2]
        && a.dtype() == CDType::F32
        && b.dtype() == CDType::F32
        && a.device().is_cpu()
        && crate::cpu::gemm::available(isa);
    if !fits {
        return Ok(None);
    }
    let (m, k) = (ad[r - 2], ad[r - 1]);
    let n = if transpose_rhs { bd[r - 2] } else { bd[r - 1] };
    if (if transpose_rhs { bd[r - 1] } else { bd[r - 2] }) != k || m * n * k == 0 {
        return Ok(None);
    }
    let batch: usize = ad[..r - 2].iter().product();
    let mut y = vec![0f32; batch * m * n];
    with_f32(a, |x| {
        with_f32(b, |w| {
            crate::cpu::par_chunks_mut(&mut y, m * n, |i, c| {
                let rows: Vec<&[f32]> = x[i * m * k..(i + 1) * m * k].chunks_exact(k).collect();
                let rhs = if transpose_rhs {
                    crate::cpu::gemm::Rhs::Transposed {
                        w: &w[i * n * k..(i + 1) * n * k],
                        ld: k,
                    }
                } else {
                    crate::cpu::gemm::Rhs::Plain {
                        b: &w[i * k * n..(i + 1) * k * n],
                        ld: n,
                    }
                };
                crate::cpu::gemm::gemm_rows(isa, &rows, k, rhs, n, c, n);
            });
            Ok(())
        })
    })?;
    Ok(Some(Tensor::from_vec(y, out, a.device())?))
}

/// Activations times a transposed f32 weight on the CPU with the kernels of [`crate::cpu`]: the
/// bandwidth-bound matrix-vector product for one row, the AVX-512 matrix product for more;
/// `None` when the operands do not fit them (candle's matmul is used then).
fn cpu_matmul_nt(
    isa: Isa,
    a: &Tensor,
    w: &Tensor,
    transpose_rhs: bool,
    out: &[usize],
) -> Result<Option<Tensor>> {
    let k = *a.dims().last().unwrap_or(&0);
    let rows = a.elem_count() / k.max(1);
    let fits = transpose_rhs
        && k > 0
        && w.rank() == 2
        && a.dtype() == CDType::F32
        && w.dtype() == CDType::F32
        && a.device().is_cpu()
        && w.is_contiguous()
        && w.dim(1)? == k
        && isa.any()
        && (rows == 1 || crate::cpu::gemm::available(isa));
    if !fits {
        return Ok(None);
    }
    let n = w.dim(0)?;
    let mut y = vec![0f32; rows * n];
    with_f32(a, |x| {
        with_f32(w, |wv| {
            if rows == 1 {
                crate::cpu::gemv::gemv(x, wv, k, &mut y, isa);
            } else {
                let rhs = crate::cpu::gemm::Rhs::Transposed { w: wv, ld: k };
                crate::cpu::gemm::gemm_nt(isa, x, rows, k, rhs, n, &mut y);
            }
            Ok(())
        })
    })?;
    Ok(Some(Tensor::from_vec(y, out, a.device())?))
}

/// Attention as candle calls, following the IR's decomposition: grouped heads by reshaping q,
/// scores, soft-cap, position masks, softmax, weighted sum of v. `positions` are the query
/// positions, known on the host.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &[i64],
    a: &AttentionAttrs,
    dev: &CDevice,
    isa: Isa,
) -> Result<Tensor> {
    if isa.any() {
        // One query row (a decode step): the slot kernel over the cache as a one-slot pool,
        // split by head, without the flash kernel's per-call setup.
        if q.dim(0)? == 1 && q.dim(2)? == 1 && positions.len() == 1 {
            let (kp, vp) = (k.transpose(1, 2)?, v.transpose(1, 2)?);
            if let Some(out) =
                crate::cpu::slot_attention::decode_rows(isa, q, &kp, &vp, positions, &[0], a)?
            {
                return Ok(out);
            }
        }
        if let Some(out) = crate::cpu::attention::try_flash(q, k, v, positions, a)? {
            return Ok(out);
        }
        if let Some(out) = crate::cpu::attention::blocked(isa, q, k, v, positions, a)? {
            return Ok(out);
        }
    }
    let (b, hq, tq, d) = q.dims4()?;
    let (_, hkv, tk, _) = k.dims4()?;
    let dv = v.dim(3)?;
    let g = hq / hkv;
    let q = q.contiguous()?.reshape((b, hkv, g * tq, d))?;
    // candle's CUDA matmul takes only contiguous operands (a transposed view of one included);
    // a slot's keys and values are permuted views of the pool.
    let (k, v) = (k.contiguous()?, v.contiguous()?);
    let raw = q.matmul(&k.t()?)?;
    if isa.any() {
        if let Some(probs) = crate::cpu::attention::masked_softmax(isa, &raw, tq, positions, a)? {
            return probs.matmul(&v)?.reshape((b, hq, tq, dv));
        }
    }
    let mut scores = raw.affine(a.scale as f64, 0.0)?;
    if let Some(cap) = a.softcap {
        scores = scores
            .affine(1.0 / cap as f64, 0.0)?
            .tanh()?
            .affine(cap as f64, 0.0)?;
    }
    // One query that sees every key (a decode step attending exactly its cache) needs no mask.
    let sees_all = tq == 1
        && positions.len() == 1
        && (!a.causal || positions[0] + 1 >= tk as i64)
        && a.window.is_none_or(|w| w as i64 > positions[0]);
    if (a.causal || a.window.is_some()) && !sees_all {
        let qp: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
        let qp = Tensor::from_vec(qp, (tq, 1), dev)?;
        let kp = Tensor::arange(0u32, tk as u32, dev)?
            .to_dtype(CDType::F32)?
            .reshape((1, tk))?;
        let mut visible: Option<Tensor> = None;
        if a.causal {
            visible = Some(kp.broadcast_le(&qp)?);
        }
        if let Some(w) = a.window {
            let inside = kp.affine(1.0, w as f64)?.broadcast_gt(&qp)?;
            visible = Some(match visible {
                Some(v) => v.mul(&inside)?,
                None => inside,
            });
        }
        let shape5 = (b, hkv, g, tq, tk);
        let mask = visible.expect("causal or window").broadcast_as(shape5)?;
        let neg = Tensor::new(f32::NEG_INFINITY, dev)?
            .to_dtype(scores.dtype())?
            .broadcast_as(shape5)?;
        scores = mask
            .where_cond(&scores.reshape(shape5)?, &neg)?
            .reshape((b, hkv, g * tq, tk))?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
    probs.matmul(&v)?.reshape((b, hq, tq, dv))
}
