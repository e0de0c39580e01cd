//! Causal attention over a KV cache with candle-nn's CPU flash-attention kernels, which read the
//! cache in place instead of materializing scores, masks and a grouped copy of the keys.

use super::kernels::Isa;
use super::math::softmax_in_place;
use candle_core::{DType, Result, Tensor};
use candle_nn::attention::{flash_attn, AttnMask};
use switchyard_runtime::AttentionAttrs;

/// Queries per call up to which the flash kernels beat candle's matmul-based attention here
/// (measured: decode steps gain 5x; a 512-token prefill loses 40%).
const MAX_FLASH_QUERIES: usize = 16;

/// Attention through the flash kernels when the request fits them: batch 1, causal, no sliding
/// window, no soft-cap, equal key and value widths, float q/k/v, few queries, and consecutive
/// query positions `p0, p0 + 1, ...` with `p0 + Tq <= Tk` (a decode step). `None` means "use the
/// general path".
///
/// Soft-capping is excluded because candle-nn 0.11.1's soft-capped kernels also add an ALiBi bias
/// of slope 1 when no ALiBi is asked for (found by the conformance case
/// `attention/f32/softcap-decode-gqa`).
pub(crate) fn try_flash(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &[i64],
    a: &AttentionAttrs,
) -> Result<Option<Tensor>> {
    let (b, _, tq, _) = q.dims4()?;
    let tk = k.dim(2)?;
    let Some(&p0) = positions.first() else {
        return Ok(None);
    };
    let consecutive = positions
        .iter()
        .enumerate()
        .all(|(i, &p)| p == p0 + i as i64);
    let fits = b == 1
        && tq <= MAX_FLASH_QUERIES
        && v.dim(3)? == q.dim(3)?
        && a.causal
        && a.softcap.is_none()
        && a.window.is_none_or(|w| w >= tk)
        && consecutive
        && p0 >= 0
        && p0 as usize + tq <= tk
        && q.device().is_cpu();
    if !fits {
        return Ok(None);
    }
    // The kernels take (B, S, H, D): a transposed view of the cache layout (B, S, H, D) is
    // contiguous again after transposing back, so nothing is copied for the keys and values.
    let qf = q.transpose(1, 2)?.contiguous()?;
    let kf = k.transpose(1, 2)?.contiguous()?;
    let vf = v.transpose(1, 2)?.contiguous()?;
    let mask = AttnMask::Causal {
        kv_offset: p0 as usize,
    };
    let out = match q.dtype() {
        DType::F32 => flash_attn::<f32>(&qf, &kf, &vf, a.scale, mask, None, None)?,
        DType::F16 => flash_attn::<half::f16>(&qf, &kf, &vf, a.scale, mask, None, None)?,
        DType::BF16 => flash_attn::<half::bf16>(&qf, &kf, &vf, a.scale, mask, None, None)?,
        _ => return Ok(None),
    };
    Ok(Some(out.to_dtype(q.dtype())?))
}

/// One row of raw scores turned into probabilities in place: scale, soft-cap, keep `lo..hi`,
/// softmax; masked entries become 0.
#[inline(always)]
fn softmax_row(row: &mut [f32], lo: usize, hi: usize, scale: f32, softcap: Option<f32>) {
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    let live = &mut row[lo..hi];
    if live.is_empty() {
        return;
    }
    match softcap {
        Some(cap) => live
            .iter_mut()
            .for_each(|v| *v = cap * (*v * scale / cap).tanh()),
        None => live.iter_mut().for_each(|v| *v *= scale),
    }
    softmax_in_place(live);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_row_avx2(row: &mut [f32], lo: usize, hi: usize, scale: f32, softcap: Option<f32>) {
    softmax_row(row, lo, hi, scale, softcap)
}

/// [`softmax_row`] with the instructions `isa` allows.
fn softmax_row_isa(
    isa: Isa,
    row: &mut [f32],
    lo: usize,
    hi: usize,
    scale: f32,
    softcap: Option<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they include
        // AVX2 and FMA.
        return unsafe { softmax_row_avx2(row, lo, hi, scale, softcap) };
    }
    let _ = isa;
    softmax_row(row, lo, hi, scale, softcap)
}

/// The visible keys `lo..hi` of score row `row`.
type Ranges<'a> = &'a (dyn Fn(usize) -> (usize, usize) + Sync);

#[inline(always)]
fn softmax_rows_generic(
    rows: &mut [f32],
    first_row: usize,
    ranges: Ranges<'_>,
    tk: usize,
    scale: f32,
    softcap: Option<f32>,
) {
    for (i, row) in rows.chunks_exact_mut(tk).enumerate() {
        let (lo, hi) = ranges(first_row + i);
        softmax_row(row, lo, hi, scale, softcap);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(
    rows: &mut [f32],
    first_row: usize,
    ranges: Ranges<'_>,
    tk: usize,
    scale: f32,
    softcap: Option<f32>,
) {
    softmax_rows_generic(rows, first_row, ranges, tk, scale, softcap)
}

/// Rows of `tk` raw scores, `first_row` onwards, to probabilities in place.
#[allow(clippy::too_many_arguments)]
fn softmax_rows(
    isa: Isa,
    rows: &mut [f32],
    first_row: usize,
    ranges: Ranges<'_>,
    tk: usize,
    scale: f32,
    softcap: Option<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they include
        // AVX2 and FMA.
        unsafe { softmax_rows_avx2(rows, first_row, ranges, tk, scale, softcap) };
        return;
    }
    let _ = isa;
    softmax_rows_generic(rows, first_row, ranges, tk, scale, softcap)
}

/// Attention probabilities from raw scores `q·kᵀ` laid out `[B, Hkv, G·Tq, Tk]` (f32, CPU): the
/// scale, soft-cap, causal/window mask from the query positions and the softmax in one pass per
/// row, with only the visible keys exponentiated. `None` when the input does not fit.
pub(crate) fn masked_softmax(
    isa: Isa,
    scores: &Tensor,
    tq: usize,
    positions: &[i64],
    a: &AttentionAttrs,
) -> Result<Option<Tensor>> {
    if scores.dtype() != DType::F32
        || !scores.device().is_cpu()
        || positions.len() != tq
        || !scores.is_contiguous()
    {
        return Ok(None);
    }
    let tk = scores.dim(3)?;
    let n = scores.elem_count();
    let ranges = |row: usize| -> (usize, usize) {
        let p = positions[row % tq];
        let hi = if a.causal {
            (p + 1).clamp(0, tk as i64) as usize
        } else {
            tk
        };
        let lo = match a.window {
            Some(w) => (p - w as i64 + 1).clamp(0, hi as i64) as usize,
            None => 0,
        };
        (lo, hi)
    };
    let mut out = vec![0f32; n];
    {
        let (storage, layout) = scores.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            return Ok(None);
        };
        let src = &storage.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + n];
        let rows = n / tk.max(1);
        let per = rows.div_ceil(super::worker_threads() * 4).max(1);
        super::par_chunks_mut(&mut out, per * tk, |i, chunk| {
            let first = i * per;
            chunk.copy_from_slice(&src[first * tk..first * tk + chunk.len()]);
            softmax_rows(isa, chunk, first, &ranges, tk, a.scale, a.softcap);
        });
    }
    Ok(Some(Tensor::from_vec(out, scores.dims(), scores.device())?))
}

/// Query positions per work unit of [`blocked`].
const QUERY_BLOCK: usize = 32;

/// A view of an attention operand as rows of its head layout: element `d` of head `h` at
/// sequence index `t` is `data[t * row_stride + h * width + d]`.
struct HeadRows {
    data: Vec<f32>,
    row_stride: usize,
    width: usize,
}

/// `x` `[1, H, T, W]`, read through its `(1, T, H, W)` transpose so that a KV cache stored
/// positions-first is read without a copy (anything else is copied into that layout once).
fn head_rows(x: &Tensor) -> Result<(HeadRows, usize)> {
    let (_, h, t, w) = x.dims4()?;
    let seq_major = x.transpose(1, 2)?;
    let view = if seq_major.is_contiguous() {
        seq_major
    } else {
        seq_major.contiguous()?
    };
    let data = view.flatten_all()?.to_vec1::<f32>()?;
    Ok((
        HeadRows {
            data,
            row_stride: h * w,
            width: w,
        },
        t,
    ))
}

/// Causal prompt attention on the CPU (f32, batch 1) in blocks: for each key/value head and
/// block of query positions, scores against only the keys a query of the block can see, the
/// masked softmax, and the weighted sum of values — a causal prompt's upper triangle is never
/// computed and no full score matrix exists. Query heads of a group share one pass over their
/// keys. `None` when the operands do not fit (no matrix kernel, other dtypes, batch > 1).
pub(crate) fn blocked(
    isa: Isa,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &[i64],
    a: &AttentionAttrs,
) -> Result<Option<Tensor>> {
    let (b, hq, tq, d) = q.dims4()?;
    let hkv = k.dim(1)?;
    let fits = b == 1
        && q.dtype() == DType::F32
        && q.device().is_cpu()
        && positions.len() == tq
        && hkv > 0
        && hq % hkv == 0
        && super::gemm::available(isa);
    if !fits {
        return Ok(None);
    }
    let dv = v.dim(3)?;
    let g = hq / hkv;
    let q = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let (keys, tk) = head_rows(k)?;
    let (values, _) = head_rows(v)?;
    let range = |p: i64| -> (usize, usize) {
        let hi = if a.causal {
            (p + 1).clamp(0, tk as i64) as usize
        } else {
            tk
        };
        let lo = match a.window {
            Some(w) => (p - w as i64 + 1).clamp(0, hi as i64) as usize,
            None => 0,
        };
        (lo, hi)
    };
    let blocks = tq.div_ceil(QUERY_BLOCK);
    let units: Vec<(usize, usize)> = (0..hkv)
        .flat_map(|h| (0..blocks).map(move |qb| (h, qb)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(usize, usize, Vec<f32>)>> =
        std::sync::Mutex::new(Vec::new());
    let pool = candle_core::utils::barrier_pool();
    pool.execute(|_| loop {
        let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&(h, qb)) = units.get(u) else { break };
        let (i0, i1) = (qb * QUERY_BLOCK, ((qb + 1) * QUERY_BLOCK).min(tq));
        let (lo, hi) = positions[i0..i1]
            .iter()
            .map(|&p| range(p))
            .fold((usize::MAX, 0), |(l, h), (a, b)| (l.min(a), h.max(b)));
        let span = hi.saturating_sub(lo);
        let rows: Vec<&[f32]> = (0..g)
            .flat_map(|gi| (i0..i1).map(move |i| ((h * g + gi) * tq + i) * d))
            .map(|o| &q[o..o + d])
            .collect();
        let mut out = vec![0f32; rows.len() * dv];
        if span > 0 {
            let mut s = vec![0f32; rows.len() * span];
            let kw = &keys.data[lo * keys.row_stride + h * keys.width..];
            super::gemm::gemm_rows(
                isa,
                &rows,
                d,
                super::gemm::Rhs::Transposed {
                    w: kw,
                    ld: keys.row_stride,
                },
                span,
                &mut s,
                span,
            );
            for (r, row) in s.chunks_exact_mut(span).enumerate() {
                let (l, hh) = range(positions[i0 + r % (i1 - i0)]);
                let (l, hh) = (l.max(lo) - lo, hh.max(lo) - lo);
                softmax_row_isa(isa, row, l, hh.max(l), a.scale, a.softcap);
            }
            let probs: Vec<&[f32]> = s.chunks_exact(span).collect();
            let vb = &values.data[lo * values.row_stride + h * values.width..];
            super::gemm::gemm_rows(
                isa,
                &probs,
                span,
                super::gemm::Rhs::Plain {
                    b: vb,
                    ld: values.row_stride,
                },
                dv,
                &mut out,
                dv,
            );
        }
        if let Ok(mut r) = results.lock() {
            r.push((h, qb, out));
        }
    });
    let mut o = vec![0f32; hq * tq * dv];
    for (h, qb, out) in results.into_inner().unwrap_or_default() {
        let (i0, i1) = (qb * QUERY_BLOCK, ((qb + 1) * QUERY_BLOCK).min(tq));
        for (r, row) in out.chunks_exact(dv).enumerate() {
            let (gi, i) = (r / (i1 - i0), i0 + r % (i1 - i0));
            let dst = ((h * g + gi) * tq + i) * dv;
            o[dst..dst + dv].copy_from_slice(row);
        }
    }
    Ok(Some(Tensor::from_vec(o, (1, hq, tq, dv), k.device())?))
}
