//! Matrix products for prompt processing: `C = A·Wᵀ` (`A` `[M, K]` activations, `W` a
//! row-major `[N, K]` weight), and small single-threaded products for attention.
//!
//! Register-blocked kernels over operands packed per 256-deep slice: on AVX-512 one call covers
//! 12 rows × 32 columns with 24 zmm accumulators; on AVX2 the same 12 × 32 tile is four 6 × 16
//! blocks of 12 ymm accumulators each (16 registers in all: 12 sums, 2 weight vectors, one
//! broadcast activation). candle's general matmul reaches about 200 GFLOP/s on two AVX-512 cores;
//! these reach 250-300 on the shapes of a transformer layer.

use super::kernels::Isa;
use super::out::Out;

/// Rows of `A` per microkernel call.
const MR: usize = 12;
/// Columns of the result per microkernel call (two 16-lane registers).
const NR: usize = 32;
/// Rows of a weight per panel of [`super::packed::PackedMatrix`] (the kernel's column width).
pub(crate) const PANEL: usize = NR;
/// Depth of one packed slice (a `KC × NR` panel of the right operand stays in L1).
const KC: usize = 256;
/// Row blocks per chunk of rows: a chunk's `KC`-deep slice of A (16 × 12 rows × 256 × 4 bytes =
/// 192 KiB) stays in L2 while the column panels pass over it.
const MC_BLOCKS: usize = 16;

/// True when `isa` has a matrix-product kernel here.
pub(crate) fn available(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa.avx2()
}

/// How the right operand is stored.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    /// Element `(k, j)` is `w[j * ld + k]`: `C = A·Wᵀ` for a row-major `W` `[N, K]`.
    Transposed {
        /// The matrix.
        w: &'a [f32],
        /// Distance between rows of `W`.
        ld: usize,
    },
    /// Element `(k, j)` is `b[k * ld + j]`: `C = A·B` for a row-major `B` `[K, N]`.
    Plain {
        /// The matrix.
        b: &'a [f32],
        /// Distance between rows of `B`.
        ld: usize,
    },
    /// `C = A·Wᵀ` for a weight already in panel layout.
    Packed(&'a super::packed::PackedMatrix),
    /// `C = A·Wᵀ` for a block-quantized `[N, K]` weight, dequantized slice by slice as it is
    /// packed (depth slices are whole blocks: `KC` is a multiple of every block length).
    Quant(super::quant::QuantMatrix<'a>),
}

/// `tile = Apᵀ·Bp` for one packed slice and `R` (12 or 4) rows: `a` holds `kc` groups of `MR`
/// values (group `k` = the rows' `k`-th elements, the first `R` used), `b` holds `kc × NR`; the
/// `R × NR` result is written to the first `R` rows of `tile`. Four-row calls finish a block's
/// last rows, so a few rows (a batched decode step) do not pay for twelve.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn microkernel_avx512<const R: usize>(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(kc > 0 && a.len() >= (kc - 1) * MR + R && b.len() >= kc * NR && tile.len() >= R * NR);
    let mut c = [[_mm512_setzero_ps(); 2]; R];
    for k in 0..kc {
        // SAFETY: `b` holds at least `kc * NR` values (asserted above) and `k < kc`, so both
        // 16-value loads at `k * NR` and `k * NR + 16` are in bounds.
        let (b0, b1) = unsafe {
            let p = b.as_ptr().add(k * NR);
            (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
        };
        let ak = &a[k * MR..k * MR + R];
        for (ci, &av) in c.iter_mut().zip(ak) {
            let av = _mm512_set1_ps(av);
            ci[0] = _mm512_fmadd_ps(av, b0, ci[0]);
            ci[1] = _mm512_fmadd_ps(av, b1, ci[1]);
        }
    }
    for (i, ci) in c.iter().enumerate() {
        // SAFETY: `tile` has at least R * NR values; row `i < R` spans `i * NR .. i * NR + 32`.
        unsafe {
            let p = tile.as_mut_ptr().add(i * NR);
            _mm512_storeu_ps(p, ci[0]);
            _mm512_storeu_ps(p.add(16), ci[1]);
        }
    }
}

/// The same on AVX2: blocks of up to 6 rows × 16 columns, each held in at most 12 ymm
/// accumulators (12 rows: four blocks; 4 rows: two).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn microkernel_avx2<const R: usize>(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32]) {
    const NH: usize = NR / 2;
    assert!(kc > 0 && a.len() >= (kc - 1) * MR + R && b.len() >= kc * NR && tile.len() >= R * NR);
    if R > 6 {
        for r0 in (0..R).step_by(6) {
            for c0 in [0, NH] {
                // SAFETY: as for the whole tile; the block's rows and columns lie inside it.
                unsafe { block_avx2::<6>(kc, &a[r0..], b, c0, &mut tile[r0 * NR..]) }
            }
        }
    } else {
        for c0 in [0, NH] {
            // SAFETY: as above.
            unsafe { block_avx2::<R>(kc, a, b, c0, tile) }
        }
    }
}

/// `H` rows × 16 columns (from `c0`) of an AVX2 tile in `2·H` ymm accumulators.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_avx2<const H: usize>(kc: usize, a: &[f32], b: &[f32], c0: usize, tile: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut c = [[_mm256_setzero_ps(); 2]; H];
    for k in 0..kc {
        // SAFETY: `k < kc` and `c0 + 16 <= NR`, so both 8-value loads lie inside the `kc * NR`
        // values of `b` (the caller asserted it).
        let (b0, b1) = unsafe {
            let p = b.as_ptr().add(k * NR + c0);
            (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        };
        let ak = &a[k * MR..k * MR + H];
        for (ci, &av) in c.iter_mut().zip(ak) {
            let av = _mm256_set1_ps(av);
            ci[0] = _mm256_fmadd_ps(av, b0, ci[0]);
            ci[1] = _mm256_fmadd_ps(av, b1, ci[1]);
        }
    }
    for (i, ci) in c.iter().enumerate() {
        // SAFETY: row `i < H`, columns `c0..c0 + 16 <= NR`: inside `tile` (at least H rows).
        unsafe {
            let p = tile.as_mut_ptr().add(i * NR + c0);
            _mm256_storeu_ps(p, ci[0]);
            _mm256_storeu_ps(p.add(8), ci[1]);
        }
    }
}

/// Packs the rows of `A` (each at least `k` long) as `[k-slice][m-block][kc][MR]`, zero-padded
/// to whole blocks.
fn pack_a(rows: &[&[f32]], k: usize) -> Vec<f32> {
    let mut packed = vec![0f32; k.div_ceil(KC) * rows.len().div_ceil(MR) * KC * MR];
    for (i, block) in packed.chunks_exact_mut(KC * MR).enumerate() {
        pack_a_block(rows, k, i, block);
    }
    packed
}

/// [`pack_a`] on candle's CPU worker threads (one `KC × MR` block of the layout per part), for
/// callers outside them: a prompt's activations are megabytes.
fn pack_a_parallel(rows: &[&[f32]], k: usize) -> Vec<f32> {
    let mut packed = vec![0f32; k.div_ceil(KC) * rows.len().div_ceil(MR) * KC * MR];
    super::par_chunks_mut(&mut packed, KC * MR, |i, block| {
        pack_a_block(rows, k, i, block)
    });
    packed
}

/// Block `i` of [`pack_a`]'s layout (k-slice `i / m-blocks`, m-block `i % m-blocks`).
#[inline(always)]
fn pack_a_block(rows: &[&[f32]], k: usize, i: usize, block: &mut [f32]) {
    let mblocks = rows.len().div_ceil(MR);
    let (kb, mb) = (i / mblocks, i % mblocks);
    let (k0, kc) = (kb * KC, KC.min(k - kb * KC));
    for (r, row) in rows.iter().enumerate().skip(mb * MR).take(MR) {
        for (kk, &v) in row[k0..k0 + kc].iter().enumerate() {
            block[kk * MR + r % MR] = v;
        }
    }
}

/// Packs columns `j0..j0 + cols` (at most NR) of depths `k0..k0 + kc` as `[kc][NR]`, zero-padded.
#[inline(always)]
fn pack_b(rhs: Rhs<'_>, j0: usize, cols: usize, k0: usize, kc: usize, bp: &mut [f32]) {
    match rhs {
        Rhs::Transposed { w, ld } => {
            for j in 0..NR {
                if j < cols {
                    let row = &w[(j0 + j) * ld + k0..(j0 + j) * ld + k0 + kc];
                    for (kk, &v) in row.iter().enumerate() {
                        bp[kk * NR + j] = v;
                    }
                } else {
                    for kk in 0..kc {
                        bp[kk * NR + j] = 0.0;
                    }
                }
            }
        }
        Rhs::Packed(_) => unreachable!("packed weights are read in place by `panels`"),
        Rhs::Quant(w) => {
            let mut row = [0f32; KC];
            let (bl, bb) = (w.dtype.block_len(), w.dtype.block_bytes());
            let row_bytes = w.row_bytes();
            for j in 0..NR {
                if j < cols {
                    let start = (j0 + j) * row_bytes + k0 / bl * bb;
                    let bytes = &w.bytes[start..start + kc / bl * bb];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `panels` runs only inside functions with AVX2/FMA enabled (this is
                    // inlined into them), F16C comes with every `Isa` that has AVX2, and the
                    // slice is whole blocks for `kc` values (depth slices are whole blocks).
                    unsafe {
                        super::quant::dequant::into(w.dtype, bytes, &mut row[..kc])
                    };
                    for (kk, &v) in row[..kc].iter().enumerate() {
                        bp[kk * NR + j] = v;
                    }
                } else {
                    for kk in 0..kc {
                        bp[kk * NR + j] = 0.0;
                    }
                }
            }
        }
        Rhs::Plain { b, ld } => {
            for kk in 0..kc {
                let dst = &mut bp[kk * NR..kk * NR + NR];
                dst[..cols].copy_from_slice(&b[(k0 + kk) * ld + j0..(k0 + kk) * ld + j0 + cols]);
                dst[cols..].fill(0.0);
            }
        }
    }
}

/// Columns `n0..n1` of `C = A·rhs` for `m` rows packed in `ap`, written to `out` (row `i`, column
/// `j` at `out.row(i, j - n0)`), with the AVX-512 microkernel or the AVX2 one.
///
/// # Safety
/// The instructions of the microkernel are enabled; no other thread touches columns
/// `n0..n1` of `out`'s first `m` rows meanwhile.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_with<const AVX512: bool>(
    ap: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs<'_>,
    n0: usize,
    n1: usize,
    out: Out,
) {
    let mblocks = m.div_ceil(MR);
    let kblocks = k.div_ceil(KC);
    let mut bp = vec![0f32; KC * NR];
    let mut tile = [0f32; MR * NR];
    // Rows go in chunks whose depth slice of A stays in L2 while every column panel passes over
    // it (many rows, e.g. a batch of encoder inputs, would otherwise stream A from memory once
    // per panel). Only a weight read in place is chunked: the others would be packed (or
    // dequantized) again for every chunk.
    let chunk = match rhs {
        Rhs::Packed(_) => MC_BLOCKS,
        _ => mblocks.max(1),
    };
    for c0 in (0..mblocks).step_by(chunk) {
        for kb in 0..kblocks {
            let (k0, kc) = (kb * KC, KC.min(k - kb * KC));
            for p0 in (n0..n1).step_by(NR) {
                let cols = NR.min(n1 - p0);
                // A packed weight is read in place; other operands are packed slice by slice.
                let b: &[f32] = match rhs {
                    Rhs::Packed(w) => &w.panel(p0 / NR)[k0 * NR..(k0 + kc) * NR],
                    _ => {
                        pack_b(rhs, p0, cols, k0, kc, &mut bp);
                        &bp
                    }
                };
                for mb in c0..(c0 + chunk).min(mblocks) {
                    let a = &ap[(kb * mblocks + mb) * KC * MR..];
                    let rows = MR.min(m - mb * MR);
                    // SAFETY: the caller runs this inside a function with the instructions enabled.
                    unsafe {
                        if rows > 8 {
                            if AVX512 {
                                microkernel_avx512::<MR>(kc, a, b, &mut tile)
                            } else {
                                microkernel_avx2::<MR>(kc, a, b, &mut tile)
                            }
                        } else {
                            for r0 in (0..rows).step_by(4) {
                                let (a, t) = (&a[r0..], &mut tile[r0 * NR..]);
                                if AVX512 {
                                    microkernel_avx512::<4>(kc, a, b, t)
                                } else {
                                    microkernel_avx2::<4>(kc, a, b, t)
                                }
                            }
                        }
                    };
                    for i in 0..rows {
                        // SAFETY: columns `n0..n1` of these rows are this call's alone (the
                        // caller's contract), and `dst` ends before the next row is taken.
                        let dst = unsafe { out.row(mb * MR + i, p0 - n0, cols) };
                        let src = &tile[i * NR..i * NR + cols];
                        if kb == 0 {
                            dst.copy_from_slice(src);
                        } else {
                            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_avx512(
    ap: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs<'_>,
    n0: usize,
    n1: usize,
    out: Out,
) {
    // SAFETY: AVX-512F is enabled for this function.
    unsafe { panels_with::<true>(ap, m, k, rhs, n0, n1, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_avx2(
    ap: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs<'_>,
    n0: usize,
    n1: usize,
    out: Out,
) {
    // SAFETY: AVX2 and FMA are enabled for this function.
    unsafe { panels_with::<false>(ap, m, k, rhs, n0, n1, out) }
}

/// [`panels_with`] with the widest kernel `isa` allows (which must be [`available`]).
///
/// # Safety
/// No other thread touches columns `n0..n1` of `out`'s first `m` rows meanwhile.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels(
    isa: Isa,
    ap: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs<'_>,
    n0: usize,
    n1: usize,
    out: Out,
) {
    assert!(available(isa));
    if isa.avx512() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; this one has AVX-512F. The
        // columns are ours (this function's contract).
        unsafe { panels_avx512(ap, m, k, rhs, n0, n1, out) }
    } else {
        // SAFETY: as above; every available variant has AVX2 and FMA.
        unsafe { panels_avx2(ap, m, k, rhs, n0, n1, out) }
    }
}

/// Single-threaded `C = A·rhs` for the rows of `A` given, `C` row `i` at `c[i * ldc ..][..n]`.
/// Returns `false` (leaving `c` untouched) when `isa` has no kernel ([`available`]).
pub(crate) fn gemm_rows(
    isa: Isa,
    a_rows: &[&[f32]],
    k: usize,
    rhs: Rhs<'_>,
    n: usize,
    c: &mut [f32],
    ldc: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !available(isa) || a_rows.is_empty() || n == 0 {
            return available(isa);
        }
        assert!(c.len() >= (a_rows.len() - 1) * ldc + n);
        let ap = pack_a(a_rows, k);
        // SAFETY: `c` is borrowed mutably for the call and only this thread writes it.
        unsafe { panels(isa, &ap, a_rows.len(), k, rhs, 0, n, Out::of(c, ldc)) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, a_rows, k, rhs, n, c, ldc);
        false
    }
}

/// `c = a·rhs` for `a` `[m, k]` and `c` `[m, n]` (`rhs` a transposed or packed `[n, k]` weight),
/// split by columns over candle's CPU worker threads. Returns `false` (leaving `c` untouched) when
/// `isa` has no kernel ([`available`]).
pub(crate) fn gemm_nt(
    isa: Isa,
    a: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs<'_>,
    n: usize,
    c: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !available(isa) {
            return false;
        }
        assert!(a.len() >= m * k && c.len() >= m * n);
        let rows: Vec<&[f32]> = a.chunks_exact(k).take(m).collect();
        let ap = pack_a_parallel(&rows, k);
        let pool = candle_core::utils::barrier_pool();
        let threads = pool.n_workers() + 1;
        let count = n.div_ceil(NR);
        // Each thread writes its own columns of `c` in place (no per-thread block to allocate
        // and copy back).
        let out = Out::of(&mut c[..m * n], n);
        pool.execute(|tid| {
            let (p0, p1) = (tid * count / threads, (tid + 1) * count / threads);
            if p0 == p1 {
                return;
            }
            let (n0, n1) = (p0 * NR, (p1 * NR).min(n));
            // SAFETY: thread `tid` alone writes columns `n0..n1` (the ranges split `0..n`), and
            // `c` stays mutably borrowed until `execute` returns with every thread done.
            unsafe { panels(isa, &ap, m, k, rhs, n0, n1, out.columns_from(n0)) };
        });
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, a, m, k, rhs, n, c);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 50.0)
            .collect()
    }

    /// Every kernel this CPU runs (AVX2 and AVX-512 where present), against a plain loop.
    #[test]
    fn matches_a_plain_loop() {
        for isa in Isa::all_here().into_iter().filter(|i| available(*i)) {
            for (m, n, k) in [(1, 1, 1), (13, 33, 257), (30, 70, 600), (2, 5, 3)] {
                let a = values(m * k, 1);
                let w = values(n * k, 2);
                let mut c = vec![f32::NAN; m * n];
                assert!(gemm_nt(
                    isa,
                    &a,
                    m,
                    k,
                    Rhs::Transposed { w: &w, ld: k },
                    n,
                    &mut c
                ));
                let packed = super::super::packed::PackedMatrix::pack(&w, n, k);
                let mut cp = vec![f32::NAN; m * n];
                assert!(gemm_nt(isa, &a, m, k, Rhs::Packed(&packed), n, &mut cp));
                assert_eq!(c, cp, "packed and row-major weights give the same result");
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|t| a[i * k + t] as f64 * w[j * k + t] as f64)
                            .sum();
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{isa}: m{m} n{n} k{k} ({i},{j})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strided_operands() {
        for isa in Isa::all_here().into_iter().filter(|i| available(*i)) {
            // B stored with a row stride of 7 (only the first 5 columns used); A rows scattered.
            let (m, k, n, ld) = (14, 300, 5, 7);
            let store = values(m * 400, 3);
            let rows: Vec<&[f32]> = (0..m)
                .map(|i| &store[i * 400 + 10..i * 400 + 10 + k])
                .collect();
            let b = values(k * ld, 4);
            let mut c = vec![f32::NAN; m * 9];
            assert!(gemm_rows(
                isa,
                &rows,
                k,
                Rhs::Plain { b: &b, ld },
                n,
                &mut c,
                9
            ));
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|t| rows[i][t] as f64 * b[t * ld + j] as f64)
                        .sum();
                    assert!(
                        (c[i * 9 + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{isa}: ({i},{j})"
                    );
                }
            }
        }
    }
}
