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
#[target_feature(enable = "avx2,fma")]
fn panels_avx2(x: &[f32], w: &PackedMatrix, first: usize, y: &mut [f32]) {
    panels_into(x, w, first, y)
}

fn panels_best(x: &[f32], w: &PackedMatrix, first: usize, y: &mut [f32], kern: Isa) {
    // The AVX-512 variants take the 256-bit kernel too: decoding is bound by memory bandwidth,
    // and 512-bit vectors streamed it slower (f32 SmolLM2-135M tg64 on two Sapphire Rapids
    // cores: 34.4 t/s against 38.5 with 256-bit vectors, same run).
    #[cfg(target_arch = "x86_64")]
    if kern.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; every variant from AVX2 up
        // includes AVX2 and FMA.
        unsafe { panels_avx2(x, w, first, y) };
        return;
    }
    let _ = kern;
    panels_into(x, w, first, y)
}

/// `y = W·x` for a weight in panel layout, panels split in contiguous ranges over candle's CPU
/// worker threads.
pub(crate) fn gemv_packed(x: &[f32], w: &PackedMatrix, y: &mut [f32], kern: Isa) {
    debug_assert!(x.len() == w.k() && y.len() == w.n());
    let threads = super::worker_threads();
    if threads == 1 || w.n() * w.k() < 16 * 1024 {
        panels_best(x, w, 0, y, kern);
        return;
    }
    let per = w.panels().div_ceil(threads);
    super::par_chunks_mut(y, per * PANEL, |i, out| {
        panels_best(x, w, i * per, out, kern)
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
                let mut yp = vec![0f32; n];
                gemv_packed(&x, &PackedMatrix::pack(&w, n, k), &mut yp, kern);
                for (a, b) in y.iter().zip(&yp) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                        "packed {b} vs row-major {a}"
                    );
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
