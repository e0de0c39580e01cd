//! Running the chains [`crate::fusion`] found, when their operands fit the CPU kernels: the
//! values are checked here, at run time, and a chain that does not fit is left to the node-by-node
//! path (`Ok(None)`).

use crate::buffer::CandleBuffer;
use crate::cpu::batched_attention::{self, Mask, View};
use crate::cpu::epilogue::Epilogue;
use crate::cpu::kernels::Isa;
use crate::fusion::{AttentionPlan, EpiloguePlan, Fusion};
use candle_core::{DType as CDType, Result, Storage, Tensor};
use switchyard_runtime::{Graph, SymbolBindings};

/// The value of the last node of `fusion`'s chain, started at node `first`, or `None` when the
/// operands do not fit the fused kernels.
pub(crate) fn run(
    isa: Isa,
    graph: &Graph,
    first: usize,
    fusion: &Fusion,
    values: &[Option<CandleBuffer>],
    dims: &SymbolBindings,
) -> Result<Option<Tensor>> {
    if !crate::cpu::gemm::available(isa) {
        return Ok(None);
    }
    let nodes = graph.nodes();
    let last = *fusion.chain().last().expect("a chain has nodes");
    let out = nodes[last]
        .spec
        .shape
        .resolve(dims)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let value = |i: usize| values[i].as_ref().expect("operands precede users");
    match fusion {
        Fusion::Epilogue(plan) => {
            let inputs = &nodes[first].inputs;
            epilogue(
                isa,
                plan,
                value(inputs[0].index()),
                value(inputs[1].index()),
                &value,
                &out,
            )
        }
        Fusion::Attention(plan) => attention(isa, plan, &value, &out),
    }
}

/// An f32 CPU tensor (an activation), or `None`.
fn cpu_f32(b: &CandleBuffer) -> Option<&Tensor> {
    match b {
        CandleBuffer::Tensor(t) | CandleBuffer::Indices { tensor: t, .. }
            if t.dtype() == CDType::F32 && t.device().is_cpu() =>
        {
            Some(t)
        }
        _ => None,
    }
}

/// Runs `f` on the storage of each CPU tensor in `ts` with its start offset.
fn with_storage<R>(ts: &[&Tensor], f: impl FnOnce(&[(&[f32], usize)]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(s) = &**storage else {
            candle_core::bail!("expected a CPU tensor")
        };
        slices.push((s.as_slice::<f32>()?, layout.start_offset()));
    }
    f(&slices)
}

fn epilogue<'v>(
    isa: Isa,
    plan: &EpiloguePlan,
    a: &CandleBuffer,
    w: &CandleBuffer,
    value: &dyn Fn(usize) -> &'v CandleBuffer,
    out: &[usize],
) -> Result<Option<Tensor>> {
    let (CandleBuffer::Packed(w), Some(a)) = (w, cpu_f32(a)) else {
        return Ok(None);
    };
    let (n, k) = (w.n(), w.k());
    let rows = a.elem_count() / k.max(1);
    // One row is a matrix-vector product (gemv), which has no epilogue.
    if w.from_columns() || a.dims().last() != Some(&k) || rows < 2 || k == 0 {
        return Ok(None);
    }
    let bias = match plan.bias.map(|i| cpu_f32(value(i))) {
        Some(None) => return Ok(None),
        Some(Some(b)) if b.elem_count() != n => return Ok(None),
        b => b.flatten(),
    };
    let residual = match plan.residual.map(|i| cpu_f32(value(i))) {
        Some(None) => return Ok(None),
        Some(Some(r)) if r.dims() != out => return Ok(None),
        r => r.flatten(),
    };
    let (a, bias, residual) = (
        a.contiguous()?,
        bias.map(Tensor::contiguous).transpose()?,
        residual.map(Tensor::contiguous).transpose()?,
    );
    let mut ts = vec![&a];
    ts.extend(bias.as_ref());
    ts.extend(residual.as_ref());
    let y = with_storage(&ts, |s| {
        let (x, mut rest) = (&s[0].0[s[0].1..s[0].1 + rows * k], s[1..].iter());
        let epi = Epilogue {
            bias: bias
                .as_ref()
                .and_then(|_| rest.next())
                .map(|&(b, o)| &b[o..o + n]),
            residual: residual
                .as_ref()
                .and_then(|_| rest.next())
                .map(|&(r, o)| (&r[o..o + rows * n], n)),
            activation: plan.activation,
        };
        let rhs = crate::cpu::gemm::Rhs::Packed(w);
        crate::cpu::gemm::gemm_nt_new(isa, x, (rows, k), rhs, n, epi).ok_or_else(|| {
            candle_core::Error::Msg(format!("no matrix product for the {isa} kernels"))
        })
    })?;
    Ok(Some(Tensor::from_vec(y, out, a.device())?))
}

fn attention<'v>(
    isa: Isa,
    plan: &AttentionPlan,
    value: &dyn Fn(usize) -> &'v CandleBuffer,
    out: &[usize],
) -> Result<Option<Tensor>> {
    let (Some(q), Some(k), Some(v)) = (
        cpu_f32(value(plan.q)),
        cpu_f32(value(plan.k)),
        cpu_f32(value(plan.v)),
    ) else {
        return Ok(None);
    };
    let mask = match plan.mask.map(|i| cpu_f32(value(i))) {
        Some(None) => return Ok(None),
        Some(Some(m)) => Some(m.contiguous()?),
        None => None,
    };
    // Unit stride along the last axis (a head's values side by side); anything else is copied.
    let unit = |t: &Tensor| -> Result<Tensor> {
        if t.rank() == 4 && t.layout().stride()[3] == 1 {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    let (q, k, v) = (unit(q)?, unit(k)?, unit(v)?);
    let [b, h, tq, _] = four(&q);
    let dv = four(&v)[3];
    if out != [b, h, tq, dv] {
        return Ok(None);
    }
    let mut ts = vec![&q, &k, &v];
    ts.extend(mask.as_ref());
    let mut y = vec![0f32; b * tq * h * dv];
    let done = with_storage(&ts, |s| {
        let view = |i: usize, t: &Tensor| {
            let st = t.layout().stride();
            View {
                data: s[i].0,
                offset: s[i].1,
                strides: [st[0], st[1], st[2]],
                dims: four(t),
            }
        };
        let m = mask.as_ref().map(|m| Mask {
            values: &s[3].0[s[3].1..s[3].1 + m.elem_count()],
            per_sequence: m.dims()[0] != 1 || b == 1,
        });
        Ok(batched_attention::attention(
            isa,
            view(0, &q),
            view(1, &k),
            view(2, &v),
            m,
            &mut y,
        ))
    })?;
    if !done {
        return Ok(None);
    }
    // Token-major storage viewed head-major, as the graph's node has it: its transpose back to
    // `[B, T, H·Dv]` is then free.
    Ok(Some(
        Tensor::from_vec(y, (b, tq, h, dv), q.device())?.transpose(1, 2)?,
    ))
}

/// The dims of a rank-4 tensor.
fn four(t: &Tensor) -> [usize; 4] {
    let d = t.dims();
    [d[0], d[1], d[2], d[3]]
}
