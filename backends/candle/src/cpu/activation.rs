//! Activation functions and the softmax over whole f32 buffers with the vectorizable `exp` of
//! [`super::math`] (candle's CPU `silu`, `gelu_erf` and softmax call the scalar library `exp` or
//! `erf` per element), split over candle's CPU worker threads for large buffers.

use super::kernels::Isa;
use super::math::{fast_exp, softmax_in_place};
use candle_core::{DType, Result, Tensor};

#[inline(always)]
fn silu_slice(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v / (1.0 + fast_exp(-v));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_avx2(x: &[f32], y: &mut [f32]) {
    silu_slice(x, y)
}

/// `x · sigmoid(x)` for an f32 CPU tensor; `None` for other tensors.
pub(crate) fn silu(isa: Isa, x: &Tensor) -> Result<Option<Tensor>> {
    map_rows(x, 1, |a, b| {
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they
            // include AVX2 and FMA.
            return unsafe { silu_avx2(a, b) };
        }
        let _ = isa;
        silu_slice(a, b)
    })
}

/// `erf(x)` to within 7e-7 (Abramowitz and Stegun 7.1.26 with [`fast_exp`]),
/// written so the compiler vectorizes it.
#[inline(always)]
fn fast_erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * fast_exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu_erf_one(v: f32) -> f32 {
    0.5 * v * (1.0 + fast_erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_erf_slice(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = gelu_erf_one(v);
    }
}

/// [`gelu_erf`]'s function on `x` in place (the same bits), for a matrix product's epilogue.
#[inline(always)]
pub(super) fn gelu_erf_in_place(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_erf_one(*v));
}

/// Softmax of every `n`-long row of `x` into `y` ([`softmax_in_place`] on a copy).
#[inline(always)]
fn softmax_rows(x: &[f32], y: &mut [f32], n: usize) {
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        yr.copy_from_slice(xr);
        softmax_in_place(yr);
    }
}

/// `mask` added to `row` (when given), then [`softmax_in_place`] (the same bits as the add and
/// the softmax one after the other).
#[inline(always)]
fn masked_softmax_row(row: &mut [f32], mask: Option<&[f32]>) {
    if let Some(m) = mask {
        row.iter_mut().zip(m).for_each(|(v, m)| *v += m);
    }
    softmax_in_place(row);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn masked_softmax_row_avx2(row: &mut [f32], mask: Option<&[f32]>) {
    masked_softmax_row(row, mask)
}

/// One row's softmax after adding `mask` (an attention's key mask), in place.
pub(super) fn masked_softmax_in_place(isa: Isa, row: &mut [f32], mask: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they include
        // AVX2 and FMA.
        return unsafe { masked_softmax_row_avx2(row, mask) };
    }
    let _ = isa;
    masked_softmax_row(row, mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_erf_avx2(x: &[f32], y: &mut [f32]) {
    gelu_erf_slice(x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(x: &[f32], y: &mut [f32], n: usize) {
    softmax_rows(x, y, n)
}

/// Buffers smaller than this run on the calling thread.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// `f(x rows, y rows)` over whole rows of `row` elements of an f32 CPU tensor, split by rows over
/// candle's CPU worker threads; `None` for other tensors.
fn map_rows(
    x: &Tensor,
    row: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Result<Option<Tensor>> {
    map_rows_from(x, row, |_, a, b| f(a, b))
}

/// [`map_rows`] with the index of each part's first row: `f(first row, x rows, y rows)`.
pub(super) fn map_rows_from(
    x: &Tensor,
    row: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() || row == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let n = x.elem_count();
    let mut y = vec![0f32; n];
    {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            return Ok(None);
        };
        let src = &storage.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + n];
        let pool = candle_core::utils::barrier_pool();
        let threads = pool.n_workers() + 1;
        if n < PARALLEL_ELEMENTS || threads == 1 {
            f(0, src, &mut y);
        } else {
            let rows = n / row;
            let per = rows.div_ceil(threads) * row;
            let parts: Vec<std::sync::Mutex<(&[f32], &mut [f32])>> = src
                .chunks(per)
                .zip(y.chunks_mut(per))
                .map(std::sync::Mutex::new)
                .collect();
            pool.execute(|tid| {
                if let Some(part) = parts.get(tid) {
                    if let Ok(mut p) = part.lock() {
                        let (a, b) = &mut *p;
                        f(tid * per / row, a, b);
                    }
                }
            });
        }
    }
    Ok(Some(Tensor::from_vec(y, x.dims(), x.device())?))
}

/// `x · Φ(x)` (GELU with the exact `erf`) for an f32 CPU tensor; `None` for other tensors.
pub(crate) fn gelu_erf(isa: Isa, x: &Tensor) -> Result<Option<Tensor>> {
    map_rows(x, 1, |a, b| {
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they
            // include AVX2 and FMA.
            return unsafe { gelu_erf_avx2(a, b) };
        }
        let _ = isa;
        gelu_erf_slice(a, b)
    })
}

/// Softmax over the last axis of an f32 CPU tensor; `None` for other tensors.
pub(crate) fn softmax_last_dim(isa: Isa, x: &Tensor) -> Result<Option<Tensor>> {
    let row = *x.dims().last().unwrap_or(&0);
    map_rows(x, row, |a, b| {
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: as in `gelu_erf`.
            return unsafe { softmax_rows_avx2(a, b, row) };
        }
        let _ = isa;
        softmax_rows(a, b, row)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the library `erf` (through f64) over the range where it is not yet ±1 in f32.
    #[test]
    fn fast_erf_is_accurate() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = libm_erf(x as f64);
            worst = worst.max((fast_erf(x) as f64 - want).abs());
            x += 0.001;
        }
        // A&S 7.1.26 is within 1.5e-7 of erf; fast_exp adds 2e-7 relative to a factor of at
        // most 1; the f32 polynomial and the final `1 - …` add about three roundings of values
        // near 1 (3 × 1.2e-7): 7.1e-7 in all.
        assert!(worst < 7.1e-7, "worst absolute error {worst:e}");
    }

    /// erf by its Taylor series (|x| < 3) or continued fraction (|x| >= 3), in f64: a
    /// reference independent of the approximation under test.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }
}
