//! Slot attention for a batched decode step on the CPU: every query row is one sequence's new
//! token, attending over its own slot of the KV pool, read in place (f32). One call covers every
//! row and head, split over the compute threads by (row, key/value head): the query heads that
//! share a key/value head are computed together, so each key and value row is loaded once for
//! all of them, and the scores of four positions are summed in independent registers (one
//! running sum per dot product was a chain of dependent additions).

use super::kernels::Isa;
use super::math::softmax_in_place;
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
    decode_rows_split(isa, q, (k, v), (positions, slots), a, None)
}

/// [`decode_rows`] with `heads_per_part` query heads per part (1 or the group; `None`: chosen
/// from the work and the threads).
fn decode_rows_split(
    isa: Isa,
    q: &Tensor,
    (k, v): (&Tensor, &Tensor),
    (positions, slots): (&[i64], &[i64]),
    a: &AttentionAttrs,
    heads_per_part: Option<usize>,
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
    // Row-major by token (`[T, Hq, Dv]`), so a part's heads are one contiguous piece; the
    // result is returned as the `[1, Hq, T, Dv]` view of it that the graph's next transpose
    // undoes without a copy.
    let mut out = vec![0f32; t * hq * dv];
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
        // A part is one row's query heads of one key/value head; with too few of those to
        // keep the threads busy (a step of one or two rows), one head per part.
        let per = heads_per_part.unwrap_or(if t * hkv >= 4 * super::worker_threads() {
            group
        } else {
            1
        });
        let parts: Vec<(usize, usize, &mut [f32])> = out
            .chunks_mut(hq * dv)
            .enumerate()
            .flat_map(|(ti, row)| {
                row.chunks_mut(per * dv)
                    .enumerate()
                    .map(move |(i, o)| (ti, i * per, o))
            })
            .collect();
        super::par_parts(parts, |(ti, h0, o)| {
            heads(isa, &rows, ti, h0, h0 / group, o)
        });
    }
    let out = Tensor::from_vec(out, (1, t, hq, dv), q.device())?;
    Ok(Some(out.transpose(1, 2)?))
}

/// What every part reads.
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

impl Rows<'_> {
    /// The key positions row `ti` sees: up to its own (causal), within the window.
    fn range(&self, ti: usize) -> (usize, usize) {
        let p = self.positions[ti];
        let hi = if self.a.causal {
            ((p.max(0) as usize) + 1).min(self.tk)
        } else {
            self.tk
        };
        let lo = match self.a.window {
            Some(w) => (p - w as i64 + 1).clamp(0, hi as i64) as usize,
            None => 0,
        };
        (lo, hi)
    }

    /// Query row `ti` of head `h`.
    fn query(&self, ti: usize, h: usize) -> &[f32] {
        let at = (h * self.t + ti) * self.d;
        &self.q[at..at + self.d]
    }
}

/// Row `ti`'s heads `h0..` (as many as `out` holds, `[n, Dv]`; all on `kv_head`) into `out`.
fn heads(isa: Isa, rows: &Rows<'_>, ti: usize, h0: usize, kv_head: usize, out: &mut [f32]) {
    let (lo, hi) = rows.range(ti);
    let n = hi - lo;
    let nh = out.len() / rows.dv;
    if n == 0 {
        out.fill(0.0);
        return;
    }
    let mut scores = vec![0f32; nh * n];
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() && rows.d.is_multiple_of(8) && rows.dv.is_multiple_of(8) {
        // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they include
        // AVX2 and FMA. Head and value widths are whole vectors, as the kernels need.
        unsafe { heads_avx2(rows, ti, h0, kv_head, &mut scores, out) };
        return;
    }
    let _ = isa;
    heads_generic(rows, ti, h0, kv_head, &mut scores, out)
}

/// The scores (scaled, soft-capped), then each head's softmax: shared by both kernels.
#[inline(always)]
fn finish_scores(a: &AttentionAttrs, scores: &mut [f32], n: usize) {
    if let Some(cap) = a.softcap {
        scores.iter_mut().for_each(|s| *s = cap * (*s / cap).tanh());
    }
    for row in scores.chunks_exact_mut(n) {
        softmax_in_place(row);
    }
}

/// Plain loops for CPUs without AVX2 and widths that are not whole vectors.
fn heads_generic(
    rows: &Rows<'_>,
    ti: usize,
    h0: usize,
    kv_head: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (a, d, dv) = (rows.a, rows.d, rows.dv);
    let (lo, hi) = rows.range(ti);
    let (n, slot) = (hi - lo, rows.slots[ti] as usize);
    for (i, s) in scores.chunks_exact_mut(n).enumerate() {
        let qrow = rows.query(ti, h0 + i);
        for (j, sj) in (lo..hi).zip(s.iter_mut()) {
            let krow = rows.k.row(slot, j, kv_head, d);
            *sj = qrow.iter().zip(krow).map(|(x, y)| x * y).sum::<f32>() * a.scale;
        }
    }
    finish_scores(a, scores, n);
    for (o, w) in out.chunks_exact_mut(dv).zip(scores.chunks_exact(n)) {
        o.fill(0.0);
        for (j, &wj) in (lo..hi).zip(w) {
            let vrow = rows.v.row(slot, j, kv_head, dv);
            o.iter_mut().zip(vrow).for_each(|(acc, x)| *acc += wj * x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Key/value positions ahead of the one being read whose rows are prefetched. A row's slot keeps
/// positions a pool row apart (every key/value head's values in between), strided reads the
/// hardware prefetchers follow only part of the way; measured on a Zen 3 EPYC (2 threads, 30
/// layers of SmolLM2's shape, 140-147 positions, caches flushed per step, six alternating rounds,
/// best of five each): 16 rows 5.4-7.0 ms per step without, 4.5-5.9 with 8 ahead (16 and 32 no
/// better); 4 rows 1.0-1.7 against 0.9-1.4 ms; one row unchanged.
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 8;

/// Prefetches every cache line of the `len` values from `p` (a hint: nothing is read).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_lines(p: *const f32, len: usize) {
    for line in (0..len * 4).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(line));
    }
}

/// Row `ti`'s heads against their key/value head: the scores in groups of up to three heads ×
/// four positions (twelve accumulators, the key rows loaded once per group), the softmax, then
/// the values in groups of up to three heads × 32 (or 8) columns, each value row loaded once
/// per group.
///
/// # Safety
/// AVX2 and FMA are enabled; `d` and `dv` are multiples of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn heads_avx2(
    rows: &Rows<'_>,
    ti: usize,
    h0: usize,
    kv_head: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (d, dv) = (rows.d, rows.dv);
    let (lo, hi) = rows.range(ti);
    let (n, slot) = (hi - lo, rows.slots[ti] as usize);
    let nh = out.len() / dv;
    let krow = |j: usize| rows.k.row(slot, j, kv_head, d).as_ptr();
    let mut h = 0;
    while h < nh {
        let take = (nh - h).min(3);
        let q: [*const f32; 3] =
            std::array::from_fn(|i| rows.query(ti, h0 + h + i.min(take - 1)).as_ptr());
        let s = &mut scores[h * n..(h + take) * n];
        // AVX2 and FMA are enabled here; the pointers are rows of `d` values (a multiple of 8).
        match take {
            3 => scores_avx2::<3>(q, &krow, d, lo, n, rows.a.scale, s),
            2 => scores_avx2::<2>(q, &krow, d, lo, n, rows.a.scale, s),
            _ => scores_avx2::<1>(q, &krow, d, lo, n, rows.a.scale, s),
        }
        h += take;
    }
    finish_scores(rows.a, scores, n);
    let vrow = |j: usize| rows.v.row(slot, j, kv_head, dv).as_ptr();
    let mut h = 0;
    while h < nh {
        let take = (nh - h).min(3);
        let w = &scores[h * n..(h + take) * n];
        let o = &mut out[h * dv..(h + take) * dv];
        // AVX2 and FMA are enabled here; value rows hold `dv` values (a multiple of 8), `o`
        // holds `take` rows of them.
        let mut c = 0;
        while c + 32 <= dv {
            match take {
                3 => values_avx2::<3, 4>(w, &vrow, lo, n, c, dv, o),
                2 => values_avx2::<2, 4>(w, &vrow, lo, n, c, dv, o),
                _ => values_avx2::<1, 4>(w, &vrow, lo, n, c, dv, o),
            }
            c += 32;
        }
        while c < dv {
            match take {
                3 => values_avx2::<3, 1>(w, &vrow, lo, n, c, dv, o),
                2 => values_avx2::<2, 1>(w, &vrow, lo, n, c, dv, o),
                _ => values_avx2::<1, 1>(w, &vrow, lo, n, c, dv, o),
            }
            c += 8;
        }
        h += take;
    }
}

/// Sum of each of four vectors, as one vector of four.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn hsum4(a: [__m256; 4]) -> __m128 {
    let h01 = _mm256_hadd_ps(a[0], a[1]);
    let h23 = _mm256_hadd_ps(a[2], a[3]);
    let h = _mm256_hadd_ps(h01, h23);
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
}

/// `s[i][j] = scale · q[i]·k(lo + j)` for `H` heads and `n` positions (`s` is `[H, n]`).
///
/// # Safety
/// AVX2 and FMA are enabled; `q` and every `k(j)` point at `d` values, `d` a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scores_avx2<const H: usize>(
    q: [*const f32; 3],
    k: &impl Fn(usize) -> *const f32,
    d: usize,
    lo: usize,
    n: usize,
    scale: f32,
    s: &mut [f32],
) {
    let sv = _mm_set1_ps(scale);
    let mut j = 0;
    while j + 4 <= n {
        let kp: [*const f32; 4] = std::array::from_fn(|p| k(lo + j + p));
        if j + AHEAD + 4 <= n {
            for p in 0..4 {
                // A key row inside the pool (`j + AHEAD + p < n`).
                prefetch_lines(k(lo + j + AHEAD + p), d);
            }
        }
        let mut acc = [[_mm256_setzero_ps(); 4]; H];
        for e in (0..d).step_by(8) {
            let kv: [__m256; 4] = std::array::from_fn(|p| _mm256_loadu_ps(kp[p].add(e)));
            for (i, acc) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q[i].add(e));
                for p in 0..4 {
                    acc[p] = _mm256_fmadd_ps(qv, kv[p], acc[p]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm_storeu_ps(s.as_mut_ptr().add(i * n + j), _mm_mul_ps(hsum4(*acc), sv));
        }
        j += 4;
    }
    while j < n {
        let kp = k(lo + j);
        let mut acc = [_mm256_setzero_ps(); H];
        for e in (0..d).step_by(8) {
            let kv = _mm256_loadu_ps(kp.add(e));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(q[i].add(e)), kv, *acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let v = hsum4([
                *acc,
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            ]);
            s[i * n + j] = _mm_cvtss_f32(v) * scale;
        }
        j += 1;
    }
}

/// `o[i][c..c + 8W] = Σ_j w[i][j] · v(lo + j)[c..c + 8W]` for `H` heads (`o` is `[H, dv]`).
///
/// # Safety
/// AVX2 and FMA are enabled; every `v(j)` points at `dv ≥ c + 8W` values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn values_avx2<const H: usize, const W: usize>(
    w: &[f32],
    v: &impl Fn(usize) -> *const f32,
    lo: usize,
    n: usize,
    c: usize,
    dv: usize,
    o: &mut [f32],
) {
    let mut acc = [[_mm256_setzero_ps(); W]; H];
    for j in 0..n {
        let vp = v(lo + j).add(c);
        if j + AHEAD < n {
            // This group's columns of a value row inside the pool.
            prefetch_lines(v(lo + j + AHEAD).add(c), 8 * W);
        }
        let vv: [__m256; W] = std::array::from_fn(|x| _mm256_loadu_ps(vp.add(8 * x)));
        for (i, acc) in acc.iter_mut().enumerate() {
            let wj = _mm256_set1_ps(*w.get_unchecked(i * n + j));
            for x in 0..W {
                acc[x] = _mm256_fmadd_ps(wj, vv[x], acc[x]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (x, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(i * dv + c + 8 * x), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + seed) * 37 % 101) as f32 - 50.0) / 40.0)
            .collect()
    }

    /// Rows in different slots at different positions, grouped heads, against a plain f64
    /// loop: head widths that take the vector kernels (64; values 40 = 32 + 8) and one that
    /// does not (12), key counts that leave 0-3 positions past the groups of four, a window
    /// and a soft-cap, and steps of 1 and 9 rows (one head per part, then grouped parts).
    #[test]
    fn matches_a_plain_loop() {
        let cases = [
            (64, 40, 3, 2, AttentionAttrs::causal(0.125)),
            (
                12,
                12,
                2,
                2,
                AttentionAttrs {
                    scale: 0.3,
                    causal: true,
                    window: Some(5),
                    softcap: Some(2.0),
                },
            ),
            (
                16,
                8,
                1,
                4,
                AttentionAttrs {
                    scale: 0.25,
                    causal: true,
                    window: Some(3),
                    softcap: None,
                },
            ),
        ];
        let (pool, tk) = (4, 11);
        for (d, dv, hkv, group, attrs) in cases {
            let hq = hkv * group;
            let k = values(pool * tk * hkv * d, 2);
            let v = values(pool * tk * hkv * dv, 3);
            let kt = Tensor::from_vec(k.clone(), (pool, tk, hkv, d), &Device::Cpu).unwrap();
            let vt = Tensor::from_vec(v.clone(), (pool, tk, hkv, dv), &Device::Cpu).unwrap();
            for (positions, slots) in [
                (vec![6i64], vec![2i64]),
                (
                    vec![0, 3, 4, 5, 6, 7, 8, 9, 10],
                    vec![3, 0, 1, 2, 0, 1, 2, 3, 1],
                ),
            ] {
                let t = positions.len();
                let qv = values(hq * t * d, 1);
                let qt = Tensor::from_vec(qv.clone(), (1, hq, t, d), &Device::Cpu).unwrap();
                let splits = [None, Some(1), Some(group)];
                for (isa, per) in Isa::all_here()
                    .into_iter()
                    .filter(|i| i.any())
                    .flat_map(|i| splits.map(|p| (i, p)))
                {
                    let (kv, rows) = ((&kt, &vt), (&positions[..], &slots[..]));
                    let out = decode_rows_split(isa, &qt, kv, rows, &attrs, per)
                        .unwrap()
                        .expect("f32 operands on the CPU");
                    let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
                    for h in 0..hq {
                        let kvh = h / group;
                        for ti in 0..t {
                            let (p, s) = (positions[ti] as usize, slots[ti] as usize);
                            let lo = attrs.window.map_or(0, |w| (p + 1).saturating_sub(w));
                            let sc: Vec<f64> = (lo..=p)
                                .map(|j| {
                                    let dot: f64 = (0..d)
                                        .map(|e| {
                                            qv[(h * t + ti) * d + e] as f64
                                                * k[((s * tk + j) * hkv + kvh) * d + e] as f64
                                        })
                                        .sum();
                                    let x = dot * attrs.scale as f64;
                                    attrs
                                        .softcap
                                        .map_or(x, |c| c as f64 * (x / c as f64).tanh())
                                })
                                .collect();
                            let max = sc.iter().copied().fold(f64::MIN, f64::max);
                            let w: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                            let z: f64 = w.iter().sum();
                            for e in 0..dv {
                                let want: f64 = (lo..=p)
                                    .map(|j| {
                                        w[j - lo] / z
                                            * v[((s * tk + j) * hkv + kvh) * dv + e] as f64
                                    })
                                    .sum();
                                let got = out[(h * t + ti) * dv + e] as f64;
                                // Inputs within ±1.25: a score summed in 8 lanes then a
                                // tree is within (d/8 + 3)·2⁻²⁴·Σ|q·k|·scale ≤ 8e-6 here
                                // (d 64: Σ|q·k| ≤ 100, scale 0.125), fast_exp adds 2e-7. A
                                // weight of the softmax moves by at most twice its scores'
                                // error, relatively, so an output (a weighted mean of values
                                // of at most 1.25) by at most 2·8.2e-6·1.25 ≈ 2.1e-5, plus
                                // the value sums' own rounding (~1e-6): bound 4e-5.
                                assert!(
                                    (got - want).abs() < 4e-5,
                                    "{isa} {per:?}: d {d} h {h} row {ti} col {e}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
