//! Slot attention for a batched decode step on the CPU: every query row is one sequence's new
//! token, attending over its own slot of the KV pool, read in place (f32). One call covers every
//! row and head, split over the compute threads by head, instead of one attention call per row.

use super::kernels::Isa;
use super::math::fast_exp;
use candle_core::{DType, Result, Tensor};
use switchyard_runtime::AttentionAttrs;

/// The pool operand `[S, Tk, H, D]` (a view of the pool): its values and element strides.
struct PoolView<'a> {
    data: &'a [f32],
    /// Strides of the slot, position and head axes (the last axis is contiguous).
    strides: [usize; 3],
}

impl PoolView<'_> {
    #[inline(always)]
    fn row(&self, slot: usize, pos: usize, head: usize, width: usize) -> &[f32] {
        let at = slot * self.strides[0] + pos * self.strides[1] + head * self.strides[2];
        &self.data[at..at + width]
    }
}

/// `out = attention(q, k[slots], v[slots])` for `q` `[1, Hq, T, D]` whose rows are each a single
/// token at `positions[t]` in slot `slots[t]`. `None` when the operands do not fit (not f32 on
/// the CPU, a pool axis that is not innermost-contiguous).
pub(crate) fn decode_rows(
    isa: Isa,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &[i64],
    slots: &[i64],
    a: &AttentionAttrs,
) -> Result<Option<Tensor>> {
    if q.dtype() != DType::F32
        || k.dtype() != DType::F32
        || v.dtype() != DType::F32
        || !q.device().is_cpu()
    {
        return Ok(None);
    }
    let (_, hq, t, d) = q.dims4()?;
    let (_, tk, hkv, _) = k.dims4()?;
    let dv = v.dim(3)?;
    let (ks, vs) = (k.stride(), v.stride());
    if ks[3] != 1 || vs[3] != 1 {
        return Ok(None);
    }
    let group = hq / hkv;
    let q = q.contiguous()?;
    let mut out = vec![0f32; hq * t * dv];
    {
        let (qs, ql) = q.storage_and_layout();
        let (kst, kl) = k.storage_and_layout();
        let (vst, vl) = v.storage_and_layout();
        let (
            candle_core::Storage::Cpu(qs),
            candle_core::Storage::Cpu(kst),
            candle_core::Storage::Cpu(vst),
        ) = (&*qs, &*kst, &*vst)
        else {
            return Ok(None);
        };
        let qv = &qs.as_slice::<f32>()?[ql.start_offset()..ql.start_offset() + hq * t * d];
        let kp = PoolView {
            data: &kst.as_slice::<f32>()?[kl.start_offset()..],
            strides: [ks[0], ks[1], ks[2]],
        };
        let vp = PoolView {
            data: &vst.as_slice::<f32>()?[vl.start_offset()..],
            strides: [vs[0], vs[1], vs[2]],
        };
        let rows = Rows {
            q: qv,
            k: &kp,
            v: &vp,
            positions,
            slots,
            t,
            d,
            dv,
            tk,
            a,
        };
        super::par_chunks_mut(&mut out, t * dv, |h, chunk| {
            head(isa, &rows, h, h / group, chunk)
        });
    }
    Ok(Some(Tensor::from_vec(out, (1, hq, t, dv), q.device())?))
}

/// What every head's rows read.
struct Rows<'a> {
    q: &'a [f32],
    k: &'a PoolView<'a>,
    v: &'a PoolView<'a>,
    positions: &'a [i64],
    slots: &'a [i64],
    t: usize,
    d: usize,
    dv: usize,
    tk: usize,
    a: &'a AttentionAttrs,
}

fn head(isa: Isa, rows: &Rows<'_>, h: usize, kv_head: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they include
        // AVX2 and FMA.
        unsafe { head_avx2(rows, h, kv_head, out) };
        return;
    }
    let _ = isa;
    head_generic(rows, h, kv_head, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn head_avx2(rows: &Rows<'_>, h: usize, kv_head: usize, out: &mut [f32]) {
    head_generic(rows, h, kv_head, out)
}

/// `Σ x·y` in eight independent lanes (so it vectorizes), then the lanes and the tail.
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Every row of query head `h` (its key/value head `kv_head`) into `out` (`[T, Dv]`).
#[inline(always)]
fn head_generic(rows: &Rows<'_>, h: usize, kv_head: usize, out: &mut [f32]) {
    let (a, d, dv) = (rows.a, rows.d, rows.dv);
    let mut scores = Vec::with_capacity(rows.tk);
    for ti in 0..rows.t {
        let (p, slot) = (rows.positions[ti], rows.slots[ti] as usize);
        let hi = if a.causal {
            ((p.max(0) as usize) + 1).min(rows.tk)
        } else {
            rows.tk
        };
        let lo = match a.window {
            Some(w) => (p - w as i64 + 1).clamp(0, hi as i64) as usize,
            None => 0,
        };
        let qrow = &rows.q[(h * rows.t + ti) * d..(h * rows.t + ti + 1) * d];
        scores.clear();
        for j in lo..hi {
            let krow = rows.k.row(slot, j, kv_head, d);
            let s = dot(qrow, krow) * a.scale;
            scores.push(match a.softcap {
                Some(cap) => cap * (s / cap).tanh(),
                None => s,
            });
        }
        let o = &mut out[ti * dv..(ti + 1) * dv];
        o.fill(0.0);
        if scores.is_empty() {
            continue;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = fast_exp(*s - max);
            sum += *s;
        }
        for (j, &w) in (lo..hi).zip(&scores) {
            let vrow = rows.v.row(slot, j, kv_head, dv);
            o.iter_mut().zip(vrow).for_each(|(acc, x)| *acc += w * x);
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}
