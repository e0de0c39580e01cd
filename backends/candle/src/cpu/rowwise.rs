//! Row-wise f32 ops over whole CPU buffers, split by rows over candle's worker threads: RMS
//! and layer normalization and the rotary position embedding; and the greedy pick of each
//! row's largest logit (`argmax`, on one thread: one pass over the logits). candle-nn's CPU versions took
//! 10-16% of a 512-token prompt on two cores (profiled with `SWITCHYARD_PROFILE=1`), several times the
//! bandwidth cost of one read and one write of the buffer.
//!
//! Each element is computed with the reference interpreter's formula in its order (the norms'
//! sums in eight running partial sums, so that they vectorize).

use super::activation::map_rows_from;
use super::kernels::Isa;
use super::math::sum_in_lanes;
use candle_core::{DType, Result, Tensor};

#[inline(always)]
fn rms_norm_rows(x: &[f32], y: &mut [f32], w: &[f32], eps: f32) {
    let h = w.len();
    for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
        let inv = 1.0 / (sum_in_lanes(xr, |v| v * v) / h as f32 + eps).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rms_norm_rows_avx2(x: &[f32], y: &mut [f32], w: &[f32], eps: f32) {
    rms_norm_rows(x, y, w, eps)
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension of an f32 CPU tensor (`w` as long as
/// it); `None` for other tensors.
pub(crate) fn rms_norm(isa: Isa, x: &Tensor, w: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let h = w.elem_count();
    if w.dtype() != DType::F32 || !w.device().is_cpu() || x.dims().last() != Some(&h) {
        return Ok(None);
    }
    let w = w.flatten_all()?.to_vec1::<f32>()?;
    map_rows_from(x, h, |_, a, b| {
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they
            // include AVX2 and FMA.
            return unsafe { rms_norm_rows_avx2(a, b, &w, eps) };
        }
        let _ = isa;
        rms_norm_rows(a, b, &w, eps)
    })
}

#[inline(always)]
fn layer_norm_rows(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let h = w.len();
    for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
        let mean = sum_in_lanes(xr, |v| v) / h as f32;
        let var = sum_in_lanes(xr, |v| (v - mean) * (v - mean)) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, &v), &g), &c) in yr.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (v - mean) * inv * g + c;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn layer_norm_rows_avx2(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    layer_norm_rows(x, y, w, b, eps)
}

/// `(x - mean) / sqrt(var + eps) · w + b` over the last dimension of an f32 CPU tensor (`w`
/// and `b` as long as it); `None` for other tensors. candle-nn's took 20 ms of an encoder's
/// 611 (32 × 128 tokens, hidden 384), about ten times one read and one write of its buffers.
pub(crate) fn layer_norm(
    isa: Isa,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
) -> Result<Option<Tensor>> {
    let h = w.elem_count();
    let fits = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu() && t.elem_count() == h;
    if !fits(w) || !fits(b) || x.dims().last() != Some(&h) {
        return Ok(None);
    }
    let (w, b) = (
        w.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?,
    );
    map_rows_from(x, h, |_, xs, ys| {
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: as in `rms_norm`.
            return unsafe { layer_norm_rows_avx2(xs, ys, &w, &b, eps) };
        }
        let _ = isa;
        layer_norm_rows(xs, ys, &w, &b, eps)
    })
}

/// Rows `first..` of `[.., T, D]` rotated by the angles of their positions (`row % t`); `cos`
/// and `sin` are `[T, D/2]`.
#[inline(always)]
fn rope_rows(
    first: usize,
    x: &[f32],
    y: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    interleaved: bool,
) {
    let d = 2 * cos.len() / t;
    let half = d / 2;
    for (i, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let pos = (first + i) % t;
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        if interleaved {
            for j in 0..half {
                let (a, b) = (xr[2 * j], xr[2 * j + 1]);
                yr[2 * j] = a * c[j] - b * s[j];
                yr[2 * j + 1] = b * c[j] + a * s[j];
            }
        } else {
            let (xa, xb) = xr.split_at(half);
            let (ya, yb) = yr.split_at_mut(half);
            for j in 0..half {
                ya[j] = xa[j] * c[j] - xb[j] * s[j];
                yb[j] = xb[j] * c[j] + xa[j] * s[j];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn rope_rows_avx2(
    first: usize,
    x: &[f32],
    y: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    interleaved: bool,
) {
    rope_rows(first, x, y, cos, sin, t, interleaved)
}

/// The rotary embedding of `x` `[.., T, D]` (f32, CPU) with `cos`/`sin` `[T, D/2]` rotating
/// every pair (`(i, i + D/2)`, or `(2i, 2i + 1)` when `interleaved`); `None` when the operands
/// do not fit (other dtypes, a partial rotary width).
pub(crate) fn rope(
    isa: Isa,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
) -> Result<Option<Tensor>> {
    let (Some(&d), true) = (x.dims().last(), x.rank() >= 2) else {
        return Ok(None);
    };
    let t = x.dim(x.rank() - 2)?;
    let fits = x.dtype() == DType::F32
        && [cos, sin]
            .iter()
            .all(|c| c.dtype() == DType::F32 && c.device().is_cpu() && c.dims() == [t, d / 2])
        && d % 2 == 0
        && t > 0;
    if !fits {
        return Ok(None);
    }
    let cos = cos.flatten_all()?.to_vec1::<f32>()?;
    let sin = sin.flatten_all()?.to_vec1::<f32>()?;
    map_rows_from(x, d, |first, a, b| {
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: as in `rms_norm`.
            return unsafe { rope_rows_avx2(first, a, b, &cos, &sin, t, interleaved) };
        }
        let _ = isa;
        rope_rows(first, a, b, &cos, &sin, t, interleaved)
    })
}

/// The largest value of `row` as candle's `argmax` sees it: from the first value, replaced by
/// any greater one (so NaNs after the first never count), in eight running maxima that
/// vectorize.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [row[0]; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l { v } else { *l };
        }
    }
    let mut m = row[0];
    for &v in lanes.iter().chain(rest) {
        if v > m {
            m = v;
        }
    }
    m
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_max_avx2(row: &[f32]) -> f32 {
    row_max(row)
}

/// The index of each row's first largest value (over the last dimension) of an f32 CPU tensor,
/// as `u32`, exactly as candle's `argmax` picks it (the first value unless a later one is
/// greater: a NaN first value wins, later NaNs never do); `None` for other tensors. candle's
/// loop, a branch per value, took 1.2-1.3 ms of a 16-row decode step (49152 logits a row,
/// `SWITCHYARD_PROFILE=1`); here the row's maximum is found in vector lanes, then its first
/// position.
pub(crate) fn argmax(isa: Isa, x: &Tensor) -> Result<Option<Tensor>> {
    let Some((&n, outer)) = x.dims().split_last() else {
        return Ok(None);
    };
    if x.dtype() != DType::F32 || !x.device().is_cpu() || n == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    let src = &storage.as_slice::<f32>()?[start..start + x.elem_count()];
    let idx: Vec<u32> = src
        .chunks_exact(n)
        .map(|row| {
            #[cfg(target_arch = "x86_64")]
            let m = if isa.avx2() {
                // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they
                // include AVX2.
                unsafe { row_max_avx2(row) }
            } else {
                row_max(row)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let m = {
                let _ = isa;
                row_max(row)
            };
            // `m` is a value of the row: the first value or one greater, found by `==` (a NaN
            // `m` is only ever the first value).
            if m.is_nan() {
                0
            } else {
                row.iter().position(|&v| v == m).unwrap_or(0) as u32
            }
        })
        .collect();
    Ok(Some(Tensor::from_vec(idx, outer, x.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 300.0)
            .collect()
    }

    /// Large enough to be split over the worker threads at a row that is not a multiple of
    /// `T` (9 heads × 200 positions: 1,800 rows), so each part must find its positions from its
    /// first row. Every kernel variant this CPU runs, against the formula element by element:
    /// the same operations in the same order, so equal to the bit.
    #[test]
    fn rope_matches_the_formula_across_thread_parts() {
        let (h, t, d) = (9, 200, 64);
        let x = values(h * t * d, 1);
        let cos = values(t * d / 2, 2);
        let sin = values(t * d / 2, 3);
        let xt = Tensor::from_vec(x.clone(), (1, h, t, d), &Device::Cpu).unwrap();
        let ct = Tensor::from_vec(cos.clone(), (t, d / 2), &Device::Cpu).unwrap();
        let st = Tensor::from_vec(sin.clone(), (t, d / 2), &Device::Cpu).unwrap();
        for isa in Isa::all_here() {
            for interleaved in [false, true] {
                let got = rope(isa, &xt, &ct, &st, interleaved)
                    .unwrap()
                    .expect("fits")
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                for (r, row) in x.chunks(d).enumerate() {
                    let pos = r % t;
                    for i in 0..d / 2 {
                        let (c, s) = (cos[pos * d / 2 + i], sin[pos * d / 2 + i]);
                        let (a, b) = if interleaved {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, i + d / 2)
                        };
                        let want = [row[a] * c - row[b] * s, row[b] * c + row[a] * s];
                        let have = [got[r * d + a], got[r * d + b]];
                        assert_eq!(
                            have, want,
                            "{isa} interleaved={interleaved} row {r} pair {i}"
                        );
                    }
                }
            }
        }
        // A partial rotary width is left to the general path.
        let narrow = Tensor::zeros((t, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(rope(Isa::all_here()[0], &xt, &narrow, &narrow, false)
            .unwrap()
            .is_none());
    }

    /// Against the sequential formula in f64: the f32 sum of `h` squares is within `h·2⁻²⁴`
    /// relative of the exact one (any summation order), which moves `1/sqrt` by half that; the
    /// mean, `eps`, square root, division and two products add a rounding each (6·2⁻²⁴).
    #[test]
    fn rms_norm_matches_the_formula_across_thread_parts() {
        let (rows, h) = (300, 576);
        let x = values(rows * h, 4);
        let w = values(h, 5);
        let eps = 1e-5f32;
        let xt = Tensor::from_vec(x.clone(), (1, rows, h), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), h, &Device::Cpu).unwrap();
        for isa in Isa::all_here() {
            let got = rms_norm(isa, &xt, &wt, eps)
                .unwrap()
                .expect("fits")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let u = 2f64.powi(-24);
            for (r, row) in x.chunks(h).enumerate() {
                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / h as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for (i, (&v, &g)) in row.iter().zip(&w).enumerate() {
                    let want = v as f64 * inv * g as f64;
                    let tol = (h as f64 / 2.0 + 6.0) * u * want.abs() + 1e-30;
                    let have = got[r * h + i] as f64;
                    assert!(
                        (have - want).abs() <= tol,
                        "{isa} row {r} col {i}: {have} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_the_formula_across_thread_parts() {
        let (rows, h) = (300, 384);
        let x: Vec<f32> = values(rows * h, 6).iter().map(|v| v + 0.75).collect();
        let (w, b) = (values(h, 7), values(h, 8));
        let eps = 1e-12f32;
        let xt = Tensor::from_vec(x.clone(), (2, rows / 2, h), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), h, &Device::Cpu).unwrap();
        let bt = Tensor::from_vec(b.clone(), h, &Device::Cpu).unwrap();
        for isa in Isa::all_here() {
            let got = layer_norm(isa, &xt, &wt, &bt, eps)
                .unwrap()
                .expect("fits")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let u = 2f64.powi(-24);
            for (r, row) in x.chunks(h).enumerate() {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
                let inv = 1.0 / (var + eps as f64).sqrt();
                let abs_mean = row.iter().map(|&v| (v as f64).abs()).sum::<f64>() / h as f64;
                for (i, ((&v, &g), &c)) in row.iter().zip(&w).zip(&b).enumerate() {
                    let scaled = (v as f64 - mean) * inv * g as f64;
                    let want = scaled + c as f64;
                    // The mean: h values summed in eight lanes (h/8 + 3 roundings of partial
                    // sums of at most h·mean|x|) and a division; its error times |g|·inv. The
                    // variance likewise (plus the squares' rounding), half of its relative error
                    // in the inverse square root, and the last subtract, multiplies and add.
                    let mean_err = (h as f64 / 8.0 + 4.0) * u * abs_mean;
                    let tol = mean_err * inv * (g as f64).abs()
                        + ((h as f64 / 8.0 + 6.0) / 2.0 + 5.0) * u * scaled.abs()
                        + 2.0 * u * want.abs()
                        + 1e-30;
                    let have = got[r * h + i] as f64;
                    assert!(
                        (have - want).abs() <= tol,
                        "{isa} row {r} col {i}: {have} vs {want} (tolerance {tol:e})"
                    );
                }
            }
        }
    }

    /// Against candle's own `argmax` (the reference the graph ran before), with the cases where
    /// an index rule matters: ties (the first wins), NaN first and later, signed zeros, rows
    /// shorter than a vector and with a remainder.
    #[test]
    fn argmax_picks_what_candle_picks() {
        let nan = f32::NAN;
        let mut rows: Vec<Vec<f32>> = vec![
            vec![1.0, 3.0, 3.0, 2.0],
            vec![nan, 5.0, 7.0],
            vec![1.0, nan, 7.0, nan, 7.0],
            vec![-0.0, 0.0, -0.0],
            vec![0.0, -0.0],
            vec![-2.0],
            vec![nan, nan],
        ];
        for (i, len) in [(9, 37), (10, 49152), (11, 8), (12, 1000)] {
            let mut v = values(len, i);
            // A tie for the maximum late in the row, after its first occurrence.
            let top = v.iter().cloned().fold(f32::MIN, f32::max);
            v[len - 1] = top;
            rows.push(v);
        }
        for row in rows {
            let n = row.len();
            let t = Tensor::from_vec(row.clone(), (1, n), &Device::Cpu).unwrap();
            let want = t
                .argmax(candle_core::D::Minus1)
                .unwrap()
                .to_vec1::<u32>()
                .unwrap();
            for isa in Isa::all_here() {
                let got = argmax(isa, &t)
                    .unwrap()
                    .expect("fits")
                    .to_vec1::<u32>()
                    .unwrap();
                assert_eq!(got, want, "{isa} {row:?}");
            }
        }
        // Several rows at once, as a batched step's logits.
        let x = values(3 * 40, 13);
        let t = Tensor::from_vec(x, (3, 40), &Device::Cpu).unwrap();
        let want = t
            .argmax(candle_core::D::Minus1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        for isa in Isa::all_here() {
            let got = argmax(isa, &t)
                .unwrap()
                .expect("fits")
                .to_vec1::<u32>()
                .unwrap();
            assert_eq!(got, want, "{isa}");
        }
    }
}
