//! Matrix products for prompt processing: `C = A·Wᵀ` (`A` `[M, K]` activations, `W` a
//! row-major `[N, K]` weight), and small single-threaded products for attention.
//!
//! Register-blocked kernels over operands packed per depth slice (at most 192 deep, the depth
//! split evenly; whole depth for a few rows against a packed weight), summing whole tiles in the
//! result itself: on AVX-512 one call covers 12 rows × 32 columns with 24 zmm accumulators; on
//! AVX2 the same 12 × 32 tile is four 6 × 16 blocks of 12 ymm accumulators each (16 registers in all: 12 sums, 2 weight vectors, one broadcast
//! activation), or, against a whole-depth panel, rows in threes across all 32 columns (the panel
//! read in order). On two Sapphire Rapids cores, with a prompt of 512 rows against a layer's
//! weights (k 576), these reach 280-305 GFLOP/s with AVX-512 and 200-210 with AVX2 (2 × 124
//! GFLOP/s is AVX2's peak there); candle's general matmul about 200 with AVX-512.

use super::epilogue::Epilogue;
use super::kernels::Isa;
use super::out::Out;
use std::mem::MaybeUninit;

/// Rows of `A` per microkernel call.
const MR: usize = 12;
/// Columns of the result per microkernel call (two 16-lane registers).
const NR: usize = 32;
/// Rows of a weight per panel of [`super::packed::PackedMatrix`] (the kernel's column width).
pub(crate) const PANEL: usize = NR;
/// Greatest depth of one packed slice: a `KC × NR` slice of the right operand (24 KiB) and a
/// `KC × MR` block of the left (9 KiB) share L1 with room to spare. 256 deep (44 KiB, nearly all
/// of a Sapphire Rapids core's 48 KiB) measured 2-3% slower there on the f32 prompt product.
const KC: usize = 192;
/// Room for the deepest slice any operand needs: a quantized weight's slices are whole blocks,
/// and a k-quant block is 256 deep.
const KC_ROOM: usize = 256;
/// Row blocks per chunk of rows, at most: a chunk's slice of A (48 × 12 rows × 192 × 4 bytes =
/// 432 KiB) stays in L2 while the column panels pass over it, so a prompt of 576 rows reads each
/// weight from memory once.
const MC_BLOCKS: usize = 48;

/// Most rows of `A` for which a packed weight is read whole-depth, panel after panel, rather than
/// in slices [`KC`] deep. A few rows (a batched decode step) do too little work per weight value
/// to hide memory behind arithmetic: sliced, each slice of a panel is a short stream of its own,
/// 24 KiB here and the next 72 KiB further on; whole-depth, a thread's panels are one sequential
/// stream. Zen 3 EPYC, 2 threads, built-in SmolLM2 f32, `bench --batch B -p 128 -n 32`, runs
/// alternating: B = 4 109 → 144-150 t/s, B = 16 214-255 → 246-293, B = 32 286-319 → 319-333.
/// The rows' packed slice grows with the depth (12 rows × 1536 deep: 72 KiB), still in L2.
const FULL_DEPTH_ROWS: usize = 32;

/// Row blocks per chunk for slices `kc` deep: as many as fill half of this CPU's L2 (the other
/// half for the weight's panels and the result), between 4 and [`MC_BLOCKS`].
fn chunk_blocks(kc: usize) -> usize {
    (crate::cpu_info::l2_cache_bytes() / 2 / (MR * kc * 4)).clamp(4, MC_BLOCKS)
}

/// Depth of each slice of a `k`-deep product whose slices must be whole multiples of `align`:
/// the depth split evenly, so no short last slice pays a whole pass over the result for little
/// work (600 deep: four slices of 150 rather than 192 + 192 + 192 + 24).
fn slice_depth(k: usize, align: usize) -> usize {
    let slices = k.div_ceil(KC).max(1);
    k.div_ceil(slices).next_multiple_of(align).max(1)
}

/// Depth of each slice when `m` rows multiply `rhs` (`k` deep) across the threads: whole depth
/// for a few rows against a packed weight ([`FULL_DEPTH_ROWS`]), else [`slice_depth`].
fn depth_for(rhs: Rhs<'_>, m: usize, k: usize) -> usize {
    match rhs {
        Rhs::Packed(_) if m <= FULL_DEPTH_ROWS => k,
        _ => slice_depth(k, depth_align(rhs)),
    }
}

/// The alignment `rhs` needs of its slices' depth.
fn depth_align(rhs: Rhs<'_>) -> usize {
    match rhs {
        Rhs::Quant(w) => w.dtype.block_len(),
        _ => 1,
    }
}

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

/// `C (+)= Apᵀ·Bp` for one packed slice and `R` (12 or 4) rows: `a` holds `kc` groups of `MR`
/// values (group `k` = the rows' `k`-th elements, the first `R` used), `b` holds `kc × NR`; the
/// `R × NR` result goes to `dst` (rows `ld` apart), added to what is there when `acc`. Four-row
/// calls finish a block's last rows, so a few rows (a batched decode step) do not pay for twelve.
///
/// # Safety
/// The instructions are enabled; `dst` points at `R` rows of `NR` values, `ld` apart, that this
/// thread alone reads and writes meanwhile.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn microkernel_avx512<const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    dst: *mut f32,
    ld: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    assert!(kc > 0 && a.len() >= (kc - 1) * MR + R && b.len() >= kc * NR);
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
    for (i, ci) in c.iter_mut().enumerate() {
        // SAFETY: row `i < R` of `dst` spans `i * ld .. i * ld + 32` (this function's contract).
        unsafe {
            let p = dst.add(i * ld);
            if acc {
                ci[0] = _mm512_add_ps(_mm512_loadu_ps(p), ci[0]);
                ci[1] = _mm512_add_ps(_mm512_loadu_ps(p.add(16)), ci[1]);
            }
            _mm512_storeu_ps(p, ci[0]);
            _mm512_storeu_ps(p.add(16), ci[1]);
        }
    }
}

/// The same on AVX2: blocks of up to 6 rows × 16 columns, each held in at most 12 ymm
/// accumulators (12 rows: four blocks; 4 rows: two).
///
/// # Safety
/// As for [`microkernel_avx512`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn microkernel_avx2<const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    dst: *mut f32,
    ld: usize,
    acc: bool,
) {
    const NH: usize = NR / 2;
    assert!(kc > 0 && a.len() >= (kc - 1) * MR + R && b.len() >= kc * NR);
    if kc > KC {
        // A whole-depth panel streaming from memory: rows in threes (or twos), all columns.
        for r0 in (0..R).step_by(if R > 6 { 3 } else { 2 }) {
            // SAFETY: the rows lie inside `dst`'s `R` rows (this function's contract).
            unsafe {
                if R > 6 {
                    full_width_avx2::<3>(kc, &a[r0..], b, dst.add(r0 * ld), ld, acc)
                } else {
                    full_width_avx2::<2>(kc, &a[r0..], b, dst.add(r0 * ld), ld, acc)
                }
            }
        }
    } else if R > 6 {
        for r0 in (0..R).step_by(6) {
            for c0 in [0, NH] {
                // SAFETY: the block's rows and columns lie inside `dst`'s `R × NR` (this
                // function's contract).
                unsafe { block_avx2::<6>(kc, &a[r0..], b, c0, dst.add(r0 * ld), ld, acc) }
            }
        }
    } else {
        for c0 in [0, NH] {
            // SAFETY: as above.
            unsafe { block_avx2::<R>(kc, a, b, c0, dst, ld, acc) }
        }
    }
}

/// `H` (2 or 3) rows × all [`NR`] columns of an AVX2 tile in `4·H` ymm accumulators, for a
/// whole-depth panel (a few rows against a packed weight): each depth step's 32 weight values
/// (two cache lines) are read together, so the panel streams from memory in order, where the
/// 6 × 16 blocks read every other line in one pass and the rest in the next. Built-in SmolLM2
/// f32, AVX2 forced on the Sapphire Rapids, `bench --batch B -p 128 -n 32`, alternating runs:
/// B = 4 (two rows twice) 78-80 -> 106-110 t/s, B = 16 (three rows four times, then two twice)
/// 194-196 -> 218-228. Sliced products (prompts) keep the 6 × 16 blocks: a slice sits in L1
/// and they load less per multiply-add.
///
/// # Safety
/// As for [`block_avx2`], for `H` rows and all `NR` columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn full_width_avx2<const H: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    dst: *mut f32,
    ld: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    assert!(kc > 0 && a.len() >= (kc - 1) * MR + H && b.len() >= kc * NR);
    let mut c = [[_mm256_setzero_ps(); 4]; H];
    for k in 0..kc {
        // SAFETY: `k < kc`: the 32 values at `k * NR` lie inside `b`, and `k * MR + H <=
        // a.len()` (asserted above).
        unsafe {
            let p = b.as_ptr().add(k * NR);
            let av: [__m256; H] =
                std::array::from_fn(|i| _mm256_set1_ps(*a.get_unchecked(k * MR + i)));
            for j in 0..4 {
                let bj = _mm256_loadu_ps(p.add(8 * j));
                for (ci, ai) in c.iter_mut().zip(&av) {
                    ci[j] = _mm256_fmadd_ps(*ai, bj, ci[j]);
                }
            }
        }
    }
    for (i, ci) in c.iter_mut().enumerate() {
        // SAFETY: row `i < H`, columns `0..NR`: this thread's (the contract).
        unsafe {
            let p = dst.add(i * ld);
            for (j, cij) in ci.iter_mut().enumerate() {
                if acc {
                    *cij = _mm256_add_ps(_mm256_loadu_ps(p.add(8 * j)), *cij);
                }
                _mm256_storeu_ps(p.add(8 * j), *cij);
            }
        }
    }
}

/// `H` rows × 16 columns (from `c0`) of an AVX2 tile in `2·H` ymm accumulators.
///
/// # Safety
/// AVX2 and FMA are enabled; `dst` points at `H` rows, `ld` apart, whose columns
/// `c0..c0 + 16` this thread alone reads and writes meanwhile.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_avx2<const H: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c0: usize,
    dst: *mut f32,
    ld: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    // Checked once here rather than per step (per-step checks were five of the loop's 28
    // instructions).
    assert!(kc > 0 && a.len() >= (kc - 1) * MR + H && b.len() >= kc * NR && c0 + 16 <= NR);
    let mut c = [[_mm256_setzero_ps(); 2]; H];
    for k in 0..kc {
        // SAFETY: `k < kc` and `c0 + 16 <= NR`, so both 8-value loads lie inside the `kc * NR`
        // values of `b` (asserted above).
        let (b0, b1) = unsafe {
            let p = b.as_ptr().add(k * NR + c0);
            (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        };
        for (i, ci) in c.iter_mut().enumerate() {
            // SAFETY: `k * MR + i < (kc - 1) * MR + H <= a.len()` (asserted above).
            let av = _mm256_set1_ps(unsafe { *a.get_unchecked(k * MR + i) });
            ci[0] = _mm256_fmadd_ps(av, b0, ci[0]);
            ci[1] = _mm256_fmadd_ps(av, b1, ci[1]);
        }
    }
    for (i, ci) in c.iter_mut().enumerate() {
        // SAFETY: row `i < H`, columns `c0..c0 + 16`: this thread's (the contract).
        unsafe {
            let p = dst.add(i * ld + c0);
            if acc {
                ci[0] = _mm256_add_ps(_mm256_loadu_ps(p), ci[0]);
                ci[1] = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), ci[1]);
            }
            _mm256_storeu_ps(p, ci[0]);
            _mm256_storeu_ps(p.add(8), ci[1]);
        }
    }
}

/// One microkernel call of `R` rows at row `i0`, columns `j0..j0 + cols` of `out`, for a block
/// with `rows` real rows: a whole `R × NR` tile is summed in `out` itself; a ragged one (the
/// last rows or columns) goes through `tile` and only its real part is copied (or added, when
/// `acc`).
///
/// # Safety
/// The instructions are enabled; no other thread touches those rows and columns meanwhile, and
/// `out` was made from a slice still mutably borrowed for it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const AVX512: bool, const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    out: &Out,
    (i0, j0): (usize, usize),
    (rows, cols): (usize, usize),
    acc: bool,
    tile: &mut [f32; MR * NR],
) {
    let kernel = |dst: *mut f32, ld: usize, acc: bool| {
        // SAFETY: the instructions are enabled (this function's contract) and `dst` is `R` rows
        // of `NR` values `ld` apart that are this thread's: a tile of `out` (bounds asserted by
        // `Out::block`) or the local `tile` (`R <= MR` rows of `NR`).
        unsafe {
            if AVX512 {
                microkernel_avx512::<R>(kc, a, b, dst, ld, acc)
            } else {
                microkernel_avx2::<R>(kc, a, b, dst, ld, acc)
            }
        }
    };
    if rows == R && cols == NR {
        kernel(out.block(i0, j0, R, NR), out.ld(), acc);
        return;
    }
    kernel(tile.as_mut_ptr(), NR, false);
    for i in 0..rows {
        let src = &tile[i * NR..i * NR + cols];
        if acc {
            // SAFETY: these rows and columns are this call's alone (the contract), written by
            // the first slice's pass, and `dst` ends before the next row is taken.
            let dst = unsafe { out.row(i0 + i, j0, cols) };
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        } else {
            // SAFETY: as above (a first write: `out` may not be initialized yet).
            unsafe { out.write(i0 + i, j0, src) };
        }
    }
}

/// Packs the rows of `A` (each at least `k` long) as `[k-slice][m-block][kc][MR]`, zero-padded
/// to whole blocks (slices `kc` deep, the last one shorter), one `kc × MR` block per part on
/// candle's CPU worker threads when `parallel` (for callers outside them: a prompt's
/// activations are megabytes). The memory is not zeroed first, every value is written once:
/// zeroing a prompt's 6-24 MiB took 3% of an encoder call, on one thread while the others
/// waited.
fn pack_a(rows: &[&[f32]], k: usize, kc: usize, parallel: bool) -> Vec<f32> {
    let len = k.div_ceil(kc) * rows.len().div_ceil(MR) * kc * MR;
    let mut packed = Vec::with_capacity(len);
    let blocks = &mut packed.spare_capacity_mut()[..len];
    let pack = |i, block: &mut [MaybeUninit<f32>]| pack_a_block(rows, k, kc, i, block);
    if parallel {
        super::par_chunks_mut(blocks, kc * MR, pack);
    } else {
        for (i, block) in blocks.chunks_exact_mut(kc * MR).enumerate() {
            pack(i, block);
        }
    }
    // SAFETY: `len` is a whole number of `kc * MR` blocks, each handed to `pack_a_block`, which
    // writes all of its block.
    unsafe { packed.set_len(len) };
    packed
}

/// Block `i` of [`pack_a`]'s layout (k-slice `i / m-blocks`, m-block `i % m-blocks`), every
/// value written, in order: one group of `MR` values per depth, gathered from the block's rows
/// (zeros past the last row), then zeros past a short last slice's depth.
#[inline(always)]
fn pack_a_block(rows: &[&[f32]], k: usize, kc: usize, i: usize, block: &mut [MaybeUninit<f32>]) {
    let mblocks = rows.len().div_ceil(MR);
    let (kb, mb) = (i / mblocks, i % mblocks);
    let (k0, depth) = (kb * kc, kc.min(k - kb * kc));
    let mine = &rows[mb * MR..rows.len().min(mb * MR + MR)];
    let (groups, rest) = block.split_at_mut(depth * MR);
    if let Ok(full) = <&[&[f32]; MR]>::try_from(mine) {
        let src: [&[f32]; MR] = std::array::from_fn(|r| &full[r][k0..k0 + depth]);
        for (kk, group) in groups.chunks_exact_mut(MR).enumerate() {
            for (g, row) in group.iter_mut().zip(&src) {
                g.write(row[kk]);
            }
        }
    } else {
        for (kk, group) in groups.chunks_exact_mut(MR).enumerate() {
            for (r, g) in group.iter_mut().enumerate() {
                g.write(mine.get(r).map_or(0.0, |row| row[k0 + kk]));
            }
        }
    }
    rest.iter_mut().for_each(|v| {
        v.write(0.0);
    });
}

/// Packs columns `j0..j0 + cols` (at most NR) of depths `k0..k0 + kc` as `[kc][NR]`, zero-padded.
/// Row-major and quantized weights give rows of the product's columns: eight at a time are
/// transposed into the panel with 8 × 8 register transposes.
#[inline(always)]
fn pack_b(rhs: Rhs<'_>, j0: usize, cols: usize, k0: usize, kc: usize, bp: &mut [f32]) {
    const ZEROS: [f32; KC_ROOM] = [0.0; KC_ROOM];
    assert!(kc <= KC_ROOM);
    match rhs {
        Rhs::Transposed { w, ld } => {
            for g in (0..NR).step_by(8) {
                let rows: [&[f32]; 8] = std::array::from_fn(|r| {
                    let at = (j0 + g + r) * ld + k0;
                    if g + r < cols {
                        &w[at..at + kc]
                    } else {
                        &ZEROS[..kc]
                    }
                });
                columns_of_8_rows(rows, kc, bp, g);
            }
        }
        Rhs::Packed(_) => unreachable!("packed weights are read in place by `panels`"),
        Rhs::Quant(w) => {
            let mut scratch = [[0f32; KC_ROOM]; 8];
            let (bl, bb) = (w.dtype.block_len(), w.dtype.block_bytes());
            let row_bytes = w.row_bytes();
            for g in (0..NR).step_by(8) {
                for (r, row) in scratch.iter_mut().enumerate() {
                    if g + r >= cols {
                        row[..kc].fill(0.0);
                        continue;
                    }
                    let start = (j0 + g + r) * row_bytes + k0 / bl * bb;
                    let len = kc / bl * bb;
                    let bytes = &w.bytes[start..start + len];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `panels` runs only inside functions with AVX2/FMA enabled (this is
                    // inlined into them), F16C comes with every `Isa` that has AVX2, and the
                    // slice is whole blocks for `kc` values (depth slices are whole blocks).
                    unsafe {
                        super::quant::dequant::into(w.dtype, bytes, &mut row[..kc])
                    };
                    // The same depths of the next panel's row, which is packed next: 32 rows
                    // a panel apart are more streams than the hardware prefetchers follow.
                    #[cfg(target_arch = "x86_64")]
                    if let Some(next) = w
                        .bytes
                        .get(start + NR * row_bytes..start + NR * row_bytes + len)
                    {
                        for line in next.chunks(64) {
                            // SAFETY: a prefetch of an address inside `w.bytes`; it reads nothing.
                            unsafe {
                                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                                    line.as_ptr().cast(),
                                )
                            }
                        }
                    }
                }
                let rows: [&[f32]; 8] = std::array::from_fn(|r| &scratch[r][..kc]);
                columns_of_8_rows(rows, kc, bp, g);
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

/// Writes `rows` (each `kc` long) as columns `g..g + 8` of the `[kc][NR]` panel `bp`.
#[inline(always)]
fn columns_of_8_rows(rows: [&[f32]; 8], kc: usize, bp: &mut [f32], g: usize) {
    assert!(g + 8 <= NR && bp.len() >= kc * NR && rows.iter().all(|r| r.len() >= kc));
    let whole = if cfg!(target_arch = "x86_64") {
        kc / 8 * 8
    } else {
        0
    };
    #[cfg(target_arch = "x86_64")]
    for k0 in (0..whole).step_by(8) {
        // SAFETY: this runs only inside the panel functions, which have AVX2 enabled (it is
        // inlined into them); `k0 + 8 <= kc`, inside every row and inside `bp`'s `kc` rows
        // (asserted above).
        unsafe { transpose_8x8(&rows, k0, bp, g) }
    }
    for kk in whole..kc {
        for (j, row) in rows.iter().enumerate() {
            bp[kk * NR + g + j] = row[kk];
        }
    }
}

/// `bp[(k0 + c) * NR + g + r] = rows[r][k0 + c]` for `r, c < 8`: an 8 × 8 block transposed in
/// registers (pairs interleaved, then quads, then the 128-bit halves exchanged).
///
/// # Safety
/// AVX2 is enabled; every row has `k0 + 8` values, `bp` has `(k0 + 8) * NR` and `g + 8 <= NR`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose_8x8(rows: &[&[f32]; 8], k0: usize, bp: &mut [f32], g: usize) {
    use std::arch::x86_64::*;
    // SAFETY: every row has `k0 + 8` values (the contract).
    let r: [__m256; 8] =
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(rows[i].as_ptr().add(k0)) });
    // Within each 128-bit half: rows (0, 1) interleaved by pairs of columns, and so on.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Rows 0-3 (s0..s3) and 4-7 (s4..s7) of columns c | c + 4, for c = 0..4.
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let columns = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (c, col) in columns.into_iter().enumerate() {
        // SAFETY: `(k0 + c) * NR + g + 8 <= (k0 + 8) * NR` (the contract).
        unsafe { _mm256_storeu_ps(bp.as_mut_ptr().add((k0 + c) * NR + g), col) }
    }
}

/// Columns `n0..n1` of `C = A·rhs` for `m` rows packed in `ap` by [`pack_a`] with slices
/// `kc` deep, written to `out` (row `i`, column `j` at `out.row(i, j - n0)`), with the AVX-512
/// microkernel or the AVX2 one; `epi` (its columns from `n0` on) finishes each tile after its
/// last depth slice.
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
    (k, kc): (usize, usize),
    rhs: Rhs<'_>,
    (n0, n1): (usize, usize),
    out: Out,
    epi: Epilogue<'_>,
) {
    // Slices deeper than `KC_ROOM` only for a packed weight, read in place (no `bp` to fill).
    assert!(
        kc > 0
            && (kc <= KC_ROOM || matches!(rhs, Rhs::Packed(_)))
            && kc.is_multiple_of(depth_align(rhs))
    );
    let mblocks = m.div_ceil(MR);
    let kblocks = k.div_ceil(kc);
    let mut bp = vec![0f32; KC_ROOM * NR];
    let mut tile = [0f32; MR * NR];
    // Rows go in chunks whose depth slice of A stays in L2 while every column panel passes over
    // it (many rows, e.g. a batch of encoder inputs, would otherwise stream A from memory once
    // per panel). Only a weight read in place is chunked: the others would be packed (or
    // dequantized) again for every chunk.
    let chunk = match rhs {
        Rhs::Packed(_) => chunk_blocks(kc),
        _ => mblocks.max(1),
    };
    for c0 in (0..mblocks).step_by(chunk) {
        for kb in 0..kblocks {
            let (k0, depth) = (kb * kc, kc.min(k - kb * kc));
            for p0 in (n0..n1).step_by(NR) {
                let cols = NR.min(n1 - p0);
                // A packed weight is read in place; other operands are packed slice by slice.
                let b: &[f32] = match rhs {
                    Rhs::Packed(w) => &w.panel(p0 / NR)[k0 * NR..(k0 + depth) * NR],
                    _ => {
                        pack_b(rhs, p0, cols, k0, depth, &mut bp);
                        &bp
                    }
                };
                for mb in c0..(c0 + chunk).min(mblocks) {
                    let a = &ap[(kb * mblocks + mb) * kc * MR..];
                    let (i0, rows) = (mb * MR, MR.min(m - mb * MR));
                    let at = |r0: usize| (i0 + r0, p0 - n0);
                    // SAFETY: the caller runs this inside a function with the instructions
                    // enabled, and these rows and columns are its alone.
                    unsafe {
                        if rows > 8 {
                            step::<AVX512, MR>(
                                depth,
                                a,
                                b,
                                &out,
                                at(0),
                                (rows, cols),
                                kb > 0,
                                &mut tile,
                            )
                        } else {
                            for r0 in (0..rows).step_by(4) {
                                let shape = ((rows - r0).min(4), cols);
                                step::<AVX512, 4>(
                                    depth,
                                    &a[r0..],
                                    b,
                                    &out,
                                    at(r0),
                                    shape,
                                    kb > 0,
                                    &mut tile,
                                )
                            }
                        }
                    }
                    if kb + 1 == kblocks && !epi.is_empty() {
                        for i in i0..i0 + rows {
                            // SAFETY: these rows and columns are this thread's (the contract),
                            // all written by now, and the slice ends with this iteration.
                            epi.apply(i, p0 - n0, unsafe { out.row(i, p0 - n0, cols) });
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
    k: (usize, usize),
    rhs: Rhs<'_>,
    n: (usize, usize),
    out: Out,
    epi: Epilogue<'_>,
) {
    // SAFETY: AVX-512F is enabled for this function.
    unsafe { panels_with::<true>(ap, m, k, rhs, n, out, epi) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_avx2(
    ap: &[f32],
    m: usize,
    k: (usize, usize),
    rhs: Rhs<'_>,
    n: (usize, usize),
    out: Out,
    epi: Epilogue<'_>,
) {
    // SAFETY: AVX2 and FMA are enabled for this function.
    unsafe { panels_with::<false>(ap, m, k, rhs, n, out, epi) }
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
    k: (usize, usize),
    rhs: Rhs<'_>,
    n: (usize, usize),
    out: Out,
    epi: Epilogue<'_>,
) {
    assert!(available(isa));
    if isa.avx512() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; this one has AVX-512F. The
        // columns are ours (this function's contract).
        unsafe { panels_avx512(ap, m, k, rhs, n, out, epi) }
    } else {
        // SAFETY: as above; every available variant has AVX2 and FMA.
        unsafe { panels_avx2(ap, m, k, rhs, n, out, epi) }
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
        let kc = slice_depth(k, depth_align(rhs));
        let ap = pack_a(a_rows, k, kc, false);
        // SAFETY: `c` is borrowed mutably for the call and only this thread writes it.
        unsafe {
            panels(
                isa,
                &ap,
                a_rows.len(),
                (k, kc),
                rhs,
                (0, n),
                Out::of(c, ldc),
                Epilogue::default(),
            )
        };
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
    assert!(c.len() >= m * n);
    gemm_nt_out(
        isa,
        a,
        m,
        k,
        rhs,
        n,
        Out::of(&mut c[..m * n], n),
        Epilogue::default(),
    )
}

/// [`gemm_nt`] into a new vector, finished by `epi` (a residual of `m` rows `n` apart); `None`
/// when `isa` has no kernel ([`available`]). The result is written once into fresh memory: a
/// result of megabytes is never zeroed first.
pub(crate) fn gemm_nt_new(
    isa: Isa,
    a: &[f32],
    (m, k): (usize, usize),
    rhs: Rhs<'_>,
    n: usize,
    epi: Epilogue<'_>,
) -> Option<Vec<f32>> {
    assert!(epi.bias.is_none_or(|b| b.len() >= n));
    assert!(epi
        .residual
        .is_none_or(|(r, ld)| ld >= n && r.len() >= (m.max(1) - 1) * ld + n));
    let mut c = Vec::with_capacity(m * n);
    let out = Out::of_uninit(&mut c.spare_capacity_mut()[..m * n], n);
    if !gemm_nt_out(isa, a, m, k, rhs, n, out, epi) {
        return None;
    }
    // SAFETY: `gemm_nt_out` returned `true`: every one of the `m * n` values has been written.
    unsafe { c.set_len(m * n) };
    Some(c)
}

/// [`gemm_nt`] into `out` (`[m, n]`, rows `n` apart, made from a slice still mutably borrowed).
/// Every element is written once by the first depth slice's pass before any is read.
#[allow(clippy::too_many_arguments)]
fn gemm_nt_out(
    isa: Isa,
    a: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs<'_>,
    n: usize,
    out: Out,
    epi: Epilogue<'_>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !available(isa) {
            return false;
        }
        assert!(a.len() >= m * k);
        if k == 0 {
            // No depth slice to write the result: an empty sum is zero (then the epilogue).
            for i in 0..m {
                let mut row = vec![0f32; n];
                epi.apply(i, 0, &mut row);
                // SAFETY: the whole result is this call's (the caller's contract).
                unsafe { out.write(i, 0, &row) };
            }
            return true;
        }
        let rows: Vec<&[f32]> = a.chunks_exact(k).take(m).collect();
        let kc = depth_for(rhs, m, k);
        let ap = pack_a(&rows, k, kc, true);
        let pool = candle_core::utils::barrier_pool();
        let threads = pool.n_workers() + 1;
        let count = n.div_ceil(NR);
        // Each thread writes its own columns of `c` in place (no per-thread block to allocate
        // and copy back).
        pool.execute(|tid| {
            let (p0, p1) = (tid * count / threads, (tid + 1) * count / threads);
            if p0 == p1 {
                return;
            }
            let (n0, n1) = (p0 * NR, (p1 * NR).min(n));
            // SAFETY: thread `tid` alone writes columns `n0..n1` (the ranges split `0..n`), and
            // the result stays mutably borrowed until `execute` returns with every thread done.
            unsafe {
                panels(
                    isa,
                    &ap,
                    m,
                    (k, kc),
                    rhs,
                    (n0, n1),
                    out.columns_from(n0),
                    epi.columns_from(n0),
                )
            };
        });
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, a, m, k, rhs, n, out, epi);
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
            for (m, n, k) in [
                (1, 1, 1),
                (13, 33, 257),
                (30, 70, 600),
                (40, 70, 600),
                (2, 5, 3),
                (3, 4, 0),
            ] {
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
                let row_major = Rhs::Transposed { w: &w, ld: k };
                if depth_for(Rhs::Packed(&packed), m, k) == depth_for(row_major, m, k) {
                    // The same depth slices, so the same sums in the same order.
                    assert_eq!(c, cp, "packed and row-major weights give the same result");
                }
                let rhs = Rhs::Packed(&packed);
                let cu = gemm_nt_new(isa, &a, (m, k), rhs, n, Epilogue::default());
                assert_eq!(
                    Some(&cp),
                    cu.as_ref(),
                    "a result written into fresh memory is the same"
                );
                // Bias, residual and GELU applied once to every finished value (the column
                // split over threads, ragged tiles and several depth slices included): the
                // same bits as the three ops one after the other.
                let (bias, residual) = (values(n, 5), values(m * n, 6));
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: Some((&residual, n)),
                    activation: Some(super::super::epilogue::Activation::GeluErf),
                };
                let ce = gemm_nt_new(isa, &a, (m, k), rhs, n, epi).expect("a kernel");
                let mut want: Vec<f32> = (0..m * n)
                    .map(|e| (cp[e] + bias[e % n]) + residual[e])
                    .collect();
                super::super::activation::gelu_erf_in_place(&mut want);
                assert_eq!(ce, want, "{isa}: m{m} n{n} k{k} with an epilogue");
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|t| a[i * k + t] as f64 * w[j * k + t] as f64)
                            .sum();
                        // Summed in f32 over at most 600 terms, in slices or in one run: each
                        // addition rounds by at most 2⁻²⁴ of its partial sum, so a result is
                        // within 600·2⁻²⁴·max|partial| = 3.6e-5·max|partial| of exact; for these
                        // inputs max|partial| ≤ 1.42·(1 + |x|) over the prefix sums (computed
                        // offline), so within 5.1e-5·(1 + |x|), under the bound.
                        for got in [c[i * n + j] as f64, cp[i * n + j] as f64] {
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{isa}: m{m} n{n} k{k} ({i},{j})"
                            );
                        }
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
