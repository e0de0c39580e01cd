//! Matrix-vector products for decoding: `y = W·x` with `W` a row-major `[N, K]` weight.
//!
//! Decoding one token multiplies one activation row by every weight matrix, so it is bound by
//! memory bandwidth. candle's general matmul reaches about a third of the machine's bandwidth on
//! these shapes; streaming each weight row once through fused multiply-adds, split across the
//! compute threads in contiguous ranges, reaches most of it.

use super::gemm::PANEL;
use super::kernels::Isa;
use super::packed::PackedMatrix;

/// Dot product with four independent accumulators of `L` lanes (vectorized by the compiler to
/// the instruction set of the calling function).
#[inline(always)]
fn dot<const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; L]; 4];
    let mut ca = a.chunks_exact(4 * L);
    let mut cb = b.chunks_exact(4 * L);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (i, s) in lanes.iter_mut().enumerate() {
                *s = x[j * L + i].mul_add(y[j * L + i], *s);
            }
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail = x.mul_add(*y, tail);
    }
    acc.iter().flatten().sum::<f32>() + tail
}

#[inline(always)]
fn rows<const L: usize>(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    for (out, row) in y.iter_mut().zip(w.chunks_exact(k)) {
        *out = dot::<L>(x, row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx2(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    rows::<8>(x, w, k, y)
}

/// Rows `W[i]·x` for `y.len()` consecutive rows starting at `w`, with the kernels `kern` allows.
fn rows_best(x: &[f32], w: &[f32], k: usize, y: &mut [f32], kern: Isa) {
    #[cfg(target_arch = "x86_64")]
    if kern.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs, and every variant from AVX2
        // up includes AVX2 and FMA.
        unsafe { rows_avx2(x, w, k, y) };
        return;
    }
    let _ = kern;
    rows::<8>(x, w, k, y)
}

/// `y[n] = Σ_k w[n·K + k] · x[k]` for `n < y.len()`, on candle's CPU worker threads.
pub(crate) fn gemv(x: &[f32], w: &[f32], k: usize, y: &mut [f32], kern: Isa) {
    let n = y.len();
    debug_assert!(x.len() == k && w.len() >= n * k);
    let threads = super::worker_threads();
    // Below ~64 KiB of weights, waking the other threads costs more than it saves.
    if threads == 1 || n * k < 16 * 1024 {
        rows_best(x, &w[..n * k], k, y, kern);
        return;
    }
    let chunk = n.div_ceil(threads);
    super::par_chunks_mut(y, chunk, |i, out| {
        let start = i * chunk;
        rows_best(x, &w[start * k..(start + out.len()) * k], k, out, kern);
    });
}

/// `out[j] = Σ_k panel[k][j] · x[k]` for one `[K][PANEL]` panel: the weights stream by
/// sequentially, four depths in flight.
#[inline(always)]
fn panel_dot(x: &[f32], panel: &[f32], out: &mut [f32; PANEL]) {
    let mut acc = [[0f32; PANEL]; 4];
    let mut chunks = panel.chunks_exact(4 * PANEL);
    let mut xs = x.chunks_exact(4);
    for (c, xv) in (&mut chunks).zip(&mut xs) {
        for (u, lanes) in acc.iter_mut().enumerate() {
            let w = &c[u * PANEL..(u + 1) * PANEL];
            for (a, &wj) in lanes.iter_mut().zip(w) {
                *a = xv[u].mul_add(wj, *a);
            }
        }
    }
    for (c, &xv) in chunks.remainder().chunks_exact(PANEL).zip(xs.remainder()) {
        for (a, &wj) in acc[0].iter_mut().zip(c) {
            *a = xv.mul_add(wj, *a);
        }
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = acc[0][j] + acc[1][j] + acc[2][j] + acc[3][j];
    }
}

#[inline(always)]
fn panels_into(x: &[f32], w: &PackedMatrix, first: usize, y: &mut [f32]) {
    let mut tile = [0f32; PANEL];
    for (i, out) in y.chunks_mut(PANEL).enumerate() {
        panel_dot(x, w.panel(first + i), &mut tile);
        out.copy_from_slice(&tile[..out.len()]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
/// `ahead`: bytes past the current depth to prefetch, one line per depth (a depth is two lines),
/// the other left to the hardware prefetcher; 0: none ([`super::prefetch`]).
fn panels_avx512(x: &[f32], w: &PackedMatrix, first: usize, y: &mut [f32], ahead: usize) {
    use std::arch::x86_64::*;
    let k = w.k();
    for (i, out) in y.chunks_mut(PANEL).enumerate() {
        let panel = w.panel(first + i);
        assert!(panel.len() >= k * PANEL && x.len() >= k);
        let mut acc = [_mm512_setzero_ps(); 8];
        let p = panel.as_ptr();
        let end = panel.as_ptr_range().end as usize;
        let mut d = 0;
        while d + 4 <= k {
            for u in 0..4 {
                // SAFETY: depth `d + u < k`, and the panel holds `k * PANEL` values, so both loads
                // of the row at `(d + u) * PANEL` are in bounds.
                unsafe {
                    let row = p.add((d + u) * PANEL);
                    let pf = row as usize + ahead;
                    if ahead > 0 && pf < end {
                        _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                    }
                    let xv = _mm512_set1_ps(*x.get_unchecked(d + u));
                    acc[2 * u] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row), acc[2 * u]);
                    acc[2 * u + 1] =
                        _mm512_fmadd_ps(xv, _mm512_loadu_ps(row.add(16)), acc[2 * u + 1]);
                }
            }
            d += 4;
        }
        while d < k {
            // SAFETY: as above, `d < k`.
            unsafe {
                let row = p.add(d * PANEL);
                let xv = _mm512_set1_ps(*x.get_unchecked(d));
                acc[0] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row), acc[0]);
                acc[1] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row.add(16)), acc[1]);
            }
            d += 1;
        }
        let lo = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[4], acc[6]));
        let hi = _mm512_add_ps(_mm512_add_ps(acc[1], acc[3]), _mm512_add_ps(acc[5], acc[7]));
        let mut tile = [0f32; PANEL];
        // SAFETY: `tile` holds 32 values: 16 at 0 and 16 at 16.
        unsafe {
            _mm512_storeu_ps(tile.as_mut_ptr(), lo);
            _mm512_storeu_ps(tile.as_mut_ptr().add(16), hi);
        }
        out.copy_from_slice(&tile[..out.len()]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// `ahead`: as for [`panels_avx512`].
fn panels_avx2(x: &[f32], w: &PackedMatrix, first: usize, y: &mut [f32], ahead: usize) {
    use std::arch::x86_64::*;
    let k = w.k();
    for (i, out) in y.chunks_mut(PANEL).enumerate() {
        let panel = w.panel(first + i);
        assert!(panel.len() >= k * PANEL && x.len() >= k);
        let mut acc = [_mm256_setzero_ps(); 8];
        let p = panel.as_ptr();
        let end = panel.as_ptr_range().end as usize;
        let mut d = 0;
        while d + 2 <= k {
            for u in 0..2 {
                // SAFETY: depth `d + u < k`, and the panel holds `k * PANEL` values, so the four
                // loads of the row at `(d + u) * PANEL` are in bounds.
                unsafe {
                    let row = p.add((d + u) * PANEL);
                    let pf = row as usize + ahead;
                    if ahead > 0 && pf < end {
                        _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                    }
                    let xv = _mm256_set1_ps(*x.get_unchecked(d + u));
                    for j in 0..4 {
                        acc[4 * u + j] =
                            _mm256_fmadd_ps(xv, _mm256_loadu_ps(row.add(8 * j)), acc[4 * u + j]);
                    }
                }
            }
            d += 2;
        }
        while d < k {
            // SAFETY: as above, `d < k`.
            unsafe {
                let row = p.add(d * PANEL);
                let xv = _mm256_set1_ps(*x.get_unchecked(d));
                for (j, a) in acc[..4].iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row.add(8 * j)), *a);
                }
            }
            d += 1;
        }
        let mut tile = [0f32; PANEL];
        let (first_depth, second_depth) = acc.split_at(4);
        for (j, (a, b)) in first_depth.iter().zip(second_depth).enumerate() {
            // SAFETY: `tile` holds 32 values; lane group `j < 4` spans `8j..8j + 8`.
            unsafe { _mm256_storeu_ps(tile.as_mut_ptr().add(8 * j), _mm256_add_ps(*a, *b)) };
        }
        out.copy_from_slice(&tile[..out.len()]);
    }
}

fn panels_best(x: &[f32], w: &PackedMatrix, first: usize, y: &mut [f32], kern: Isa, ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    if kern.avx512() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; the AVX-512 ones include
        // AVX-512F.
        unsafe { panels_avx512(x, w, first, y, ahead) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kern.avx2() {
        // SAFETY: as above; every variant from AVX2 up includes AVX2 and FMA.
        unsafe { panels_avx2(x, w, first, y, ahead) };
        return;
    }
    let _ = (kern, ahead);
    panels_into(x, w, first, y)
}

/// `y = W·x` for a weight in panel layout, panels split in contiguous ranges over candle's CPU
/// worker threads.
pub(crate) fn gemv_packed(x: &[f32], w: &PackedMatrix, y: &mut [f32], kern: Isa) {
    gemv_packed_ahead(x, w, y, kern, super::prefetch::gemv_ahead())
}

/// [`gemv_packed`] with the prefetch distance given.
fn gemv_packed_ahead(x: &[f32], w: &PackedMatrix, y: &mut [f32], kern: Isa, ahead: usize) {
    debug_assert!(x.len() == w.k() && y.len() == w.n());
    let threads = super::worker_threads();
    if threads == 1 || w.n() * w.k() < 16 * 1024 {
        panels_best(x, w, 0, y, kern, ahead);
        return;
    }
    let per = w.panels().div_ceil(threads);
    super::par_chunks_mut(y, per * PANEL, |i, out| {
        panels_best(x, w, i * per, out, kern, ahead)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop() {
        for kern in Isa::all_here() {
            for (n, k) in [(1, 1), (7, 33), (300, 576), (1000, 100)] {
                let w: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect();
                let x: Vec<f32> = (0..k)
                    .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
                    .collect();
                let mut y = vec![0f32; n];
                gemv(&x, &w, k, &mut y, kern);
                let packed = PackedMatrix::pack(&w, n, k);
                // Every prefetch setting: none, the default distance, one past a small panel.
                for ahead in [0, 1024, 1 << 16] {
                    let mut yp = vec![0f32; n];
                    gemv_packed_ahead(&x, &packed, &mut yp, kern, ahead);
                    for (a, b) in y.iter().zip(&yp) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                            "packed {b} vs row-major {a} (prefetch {ahead})"
                        );
                    }
                }
                for (i, got) in y.iter().enumerate() {
                    let want: f64 = (0..k).map(|j| w[i * k + j] as f64 * x[j] as f64).sum();
                    assert!(
                        (*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{kern}: n{n} k{k} row {i}"
                    );
                }
            }
        }
    }
}
