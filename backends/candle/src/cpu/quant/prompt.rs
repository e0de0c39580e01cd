//! Prompts (many activation rows) against the 32-value block formats in 8-bit integer
//! arithmetic. The activation rows are quantized as for decoding ([`act`]) and laid out a tile of
//! rows at a time (sixteen with AVX-512 VNNI, eight with AVX2, four with AVX2 for four rows or
//! fewer): for each group of four values, the tile's rows' four bytes side by side. One
//! `vpdpbusd` (or `vpmaddubsw` and `vpmaddwd`) then multiplies four codes of one weight row
//! (broadcast to every lane) with the same four values of every row of the tile, one i32 lane
//! per activation row, so a block's integer sums land one per row with no horizontal reduction
//! and its scales apply to the whole tile in one multiply-add.
//! Each weight block is decoded once for two tiles; the weights are read in place from the GGUF
//! layout.
//!
//! The products are the decode kernels' and llama.cpp's: per block,
//! `d_w · d_x · (Σ code·q − z·Σq)` for codes around a zero code `z` (q4_0: 8, q5_0: 16, q8_0:
//! 128 with VNNI, which takes its signed codes offset to unsigned; 0 with AVX2, which reads them
//! signed), or `d_w · d_x · Σ code·q + min · s` for the
//! formats with a minimum (q4_1, q5_1), with `s` the activations' stored `d · Σq`.

#![cfg(target_arch = "x86_64")]

use super::act::{self, ActFormat};
use super::formats::{self as f, Format};
use super::QuantMatrix;
use crate::cpu::kernels::Isa;
use crate::cpu::out::Out;
use std::arch::x86_64::*;
use switchyard_runtime::DType;

/// The most activation rows per tile (the i32 lanes of a 512-bit vector).
const MAX_LANES: usize = 16;
/// The most weight rows per register tile.
const MAX_ROWS: usize = 4;
/// Activation tiles per register tile (each weight block decoded once for all of them).
const TILES: usize = 2;

/// True when [`matmul`] runs `dtype` with the kernels `isa` allows (every 32-value format, from
/// AVX2 up).
pub(crate) fn available(dtype: DType, isa: Isa) -> bool {
    isa.avx2()
        && matches!(
            dtype,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0
        )
}

/// The unsigned code that stands for zero in `dtype`'s blocks as a kernel reads them (q8_0's
/// signed codes offset by 128 where `offset_signed`, else read signed); 0 for the formats with a
/// minimum.
pub(super) fn zero_code(dtype: DType, offset_signed: bool) -> i32 {
    match dtype {
        DType::Q4_0 => 8,
        DType::Q5_0 => 16,
        DType::Q8_0 if offset_signed => 128,
        _ => 0,
    }
}

/// Activation rows quantized in the format a weight type takes, `lanes` rows to a tile (rows past
/// the last are zero: they add nothing and their results are not stored).
pub(super) struct Tiles {
    /// Rows per tile.
    lanes: usize,
    /// Blocks of 32 values per row.
    pub(super) nb: usize,
    /// `[tile][block][group][lane][4]`: the codes.
    pub(super) qs: Vec<i8>,
    /// `[tile][block][lane]`: the scale.
    pub(super) d: Vec<f32>,
    /// `[tile][block][lane]`: `−z · Σq`, what the weight format's zero code `z` takes off.
    pub(super) corr: Vec<i32>,
    /// `[tile][block][lane]`: the stored `d · Σq` (Q8_1) that a block's minimum multiplies.
    s: Vec<f32>,
}

impl Tiles {
    /// Where block `b` of tile `t` starts in `qs` (and, divided by 32, in the other vectors).
    #[inline(always)]
    fn block(&self, t: usize, b: usize) -> usize {
        (t * self.nb + b) * 32 * self.lanes
    }
}

/// One tile's share of [`Tiles`]' vectors, filled by one task.
struct TilePart<'a> {
    tile: usize,
    qs: &'a mut [i8],
    d: &'a mut [f32],
    corr: &'a mut [i32],
    s: &'a mut [f32],
}

/// Quantizes the `m` rows of `x` (`[m, k]`) for `dtype` and interleaves them into tiles of
/// `lanes` rows, a tile per task on the worker threads; `zero` is the code standing for zero as
/// the kernel reads the weights ([`zero_code`]).
pub(super) fn tiles(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    dtype: DType,
    lanes: usize,
    zero: i32,
) -> Tiles {
    let format = super::act_format(dtype);
    let nb = k / 32;
    let count = m.div_ceil(lanes);
    let per = nb * lanes;
    let mut t = Tiles {
        lanes,
        nb,
        qs: vec![0; count * per * 32],
        d: vec![0.0; count * per],
        corr: vec![0; count * per],
        s: vec![0.0; count * per],
    };
    let parts: Vec<TilePart<'_>> =
        t.qs.chunks_mut(per * 32)
            .zip(t.d.chunks_mut(per))
            .zip(t.corr.chunks_mut(per))
            .zip(t.s.chunks_mut(per))
            .enumerate()
            .map(|(tile, (((qs, d), corr), s))| TilePart {
                tile,
                qs,
                d,
                corr,
                s,
            })
            .collect();
    let fill = |TilePart {
                    tile,
                    qs,
                    d,
                    corr,
                    s,
                }: TilePart<'_>| {
        for lane in 0..lanes.min(m - tile * lanes) {
            let row = tile * lanes + lane;
            let a = act::quantize(isa, &x[row * k..(row + 1) * k], format);
            for b in 0..nb {
                for g in 0..8 {
                    let at = (b * 8 + g) * 4 * lanes + lane * 4;
                    qs[at..at + 4].copy_from_slice(&a.qs[32 * b + 4 * g..32 * b + 4 * g + 4]);
                }
                d[b * lanes + lane] = a.d[b];
                corr[b * lanes + lane] = -zero * (a.sum16[2 * b] + a.sum16[2 * b + 1]);
                if format == ActFormat::Q8_1 {
                    s[b * lanes + lane] = a.s[b];
                }
            }
        }
    };
    crate::cpu::par_parts(parts, fill);
    t
}

/// A register tile's results: `[weight row][activation tile][lane]`.
type Results = [[[f32; MAX_LANES]; TILES]; MAX_ROWS];

/// One instruction set's kernel.
trait Kernel {
    /// Activation rows per tile.
    const LANES: usize;
    /// Weight rows per full register tile.
    const ROWS: usize;
    /// `rt` weight rows (`Self::ROWS` or 1) times activation tiles `t0 .. t0 + tt` (`tt` is
    /// [`TILES`] or 1): lane `c` of `out[r][t]` is row `r`'s product with activation row
    /// `LANES · (t0 + t) + c`.
    ///
    /// # Safety
    /// The CPU has the kernel's instructions; `rows[..rt]` point at whole rows of `a.nb` blocks
    /// of `F`; `a` has the tiles, `Self::LANES` rows each.
    unsafe fn tile<F: Format>(
        rows: [*const u8; MAX_ROWS],
        rt: usize,
        tt: usize,
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    );
}

/// One prefetch per cache line of a weight row, a little ahead of the block being read.
#[inline(always)]
unsafe fn prefetch<F: Format>(p: *const u8, b: usize) {
    if b.is_multiple_of((64 / F::BYTES).max(1)) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(1024) as *const i8);
    }
}

/// AVX-512 VNNI: sixteen activation rows per tile, four weight rows per register tile.
struct Vnni;

impl Vnni {
    #[inline(always)]
    unsafe fn run<F: Format, const R: usize, const T: usize>(
        rows: [*const u8; MAX_ROWS],
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    ) {
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let flip = _mm256_set1_epi8(-128);
        let group: [__m512i; 8] = std::array::from_fn(|g| _mm512_set1_epi32(g as i32));
        for b in 0..a.nb {
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = rows[r].add(b * F::BYTES);
                prefetch::<F>(p, b);
                let (m, _, mn) = F::scale32(p);
                let mut u = F::codes(p, 0);
                if F::SIGNED {
                    // `w ^ 0x80` is `w + 128` as an unsigned byte.
                    u = _mm256_xor_si256(u, flip);
                }
                let u = _mm512_castsi256_si512(u);
                // Group g's four codes in every lane (the indices read only the low 256 bits).
                let w: [__m512i; 8] =
                    std::array::from_fn(|g| _mm512_permutexvar_epi32(group[g], u));
                let mv = _mm512_set1_ps(m);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let at = a.block(t0 + t, b);
                    let q = a.qs.as_ptr().add(at);
                    let mut sum = if F::MIN {
                        _mm512_setzero_si512()
                    } else {
                        _mm512_loadu_si512(a.corr.as_ptr().add(at / 32) as *const _)
                    };
                    for (g, wg) in w.iter().enumerate() {
                        let x = _mm512_loadu_si512(q.add(g * 64) as *const _);
                        sum = _mm512_dpbusd_epi32(sum, *wg, x);
                    }
                    let dx = _mm512_loadu_ps(a.d.as_ptr().add(at / 32));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(mv, dx), *acc);
                    if F::MIN {
                        let s = _mm512_loadu_ps(a.s.as_ptr().add(at / 32));
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(mn), s, *acc);
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            for (o, acc) in o.iter_mut().zip(acc) {
                _mm512_storeu_ps(o.as_mut_ptr(), *acc);
            }
        }
    }
}

impl Kernel for Vnni {
    const LANES: usize = 16;
    const ROWS: usize = 4;
    #[inline(always)]
    unsafe fn tile<F: Format>(
        rows: [*const u8; MAX_ROWS],
        rt: usize,
        tt: usize,
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    ) {
        match (rt, tt) {
            (4, 2) => Self::run::<F, 4, 2>(rows, a, t0, out),
            (4, _) => Self::run::<F, 4, 1>(rows, a, t0, out),
            (_, 2) => Self::run::<F, 1, 2>(rows, a, t0, out),
            _ => Self::run::<F, 1, 1>(rows, a, t0, out),
        }
    }
}

/// AVX2: eight activation rows per tile, two weight rows per register tile (16 registers). Pairs
/// of products go to i16 (`vpmaddubsw`: at most `2 · F::MAX_CODE · 127`), as many groups summed
/// there as cannot pass 32767, then to i32 (`vpmaddwd` by ones). Signed codes (q8_0) go in as
/// magnitudes with their signs moved onto the activations, one group at a time.
struct Avx2;

impl Avx2 {
    #[inline(always)]
    unsafe fn run<F: Format, const R: usize, const T: usize>(
        rows: [*const u8; MAX_ROWS],
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    ) {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        // One pair of products must fit in i16: unsigned codes as they are, signed ones (q8_0)
        // as magnitudes with their signs moved onto the activations (at most 2·128·127).
        assert!(
            F::SIGNED || 2 * 127 * F::MAX_CODE <= 32767,
            "codes too large for vpmaddubsw"
        );
        let ones = _mm256_set1_epi16(1);
        // Groups summed in i16 before widening (one for signed codes).
        let run = if F::SIGNED {
            1
        } else {
            (32767 / (2 * 127 * F::MAX_CODE)).clamp(1, 8) as usize
        };
        // Each group's weight codes are broadcast as they are used rather than all eight first:
        // with the sums of both tiles live, eight more registers would spill the accumulators.
        for b in 0..a.nb {
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = rows[r].add(b * F::BYTES);
                prefetch::<F>(p, b);
                let (m, _, mn) = F::scale32(p);
                let u = F::codes(p, 0);
                let q: [*const i8; T] =
                    std::array::from_fn(|t| a.qs.as_ptr().add(a.block(t0 + t, b)));
                let mut sum: [__m256i; T] = std::array::from_fn(|t| {
                    if F::MIN || F::SIGNED {
                        _mm256_setzero_si256()
                    } else {
                        _mm256_loadu_si256(a.corr.as_ptr().add(a.block(t0 + t, b) / 32) as *const _)
                    }
                });
                let mut pairs = [_mm256_setzero_si256(); T];
                for g in 0..8 {
                    let wg = _mm256_permutevar8x32_epi32(u, _mm256_set1_epi32(g as i32));
                    let magnitude = if F::SIGNED {
                        _mm256_sign_epi8(wg, wg)
                    } else {
                        wg
                    };
                    for (pairs, q) in pairs.iter_mut().zip(&q) {
                        let mut x = _mm256_loadu_si256(q.add(g * 32) as *const _);
                        if F::SIGNED {
                            x = _mm256_sign_epi8(x, wg);
                        }
                        *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(magnitude, x));
                    }
                    if (g + 1) % run == 0 || g == 7 {
                        for (sum, pairs) in sum.iter_mut().zip(&mut pairs) {
                            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(*pairs, ones));
                            *pairs = _mm256_setzero_si256();
                        }
                    }
                }
                let mv = _mm256_set1_ps(m);
                for (t, (acc, sum)) in acc.iter_mut().zip(sum).enumerate() {
                    let at = a.block(t0 + t, b) / 32;
                    let dx = _mm256_loadu_ps(a.d.as_ptr().add(at));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(mv, dx), *acc);
                    if F::MIN {
                        let s = _mm256_loadu_ps(a.s.as_ptr().add(at));
                        *acc = _mm256_fmadd_ps(_mm256_set1_ps(mn), s, *acc);
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            for (o, acc) in o.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), *acc);
            }
        }
    }
}

impl Kernel for Avx2 {
    const LANES: usize = 8;
    const ROWS: usize = 2;
    #[inline(always)]
    unsafe fn tile<F: Format>(
        rows: [*const u8; MAX_ROWS],
        rt: usize,
        tt: usize,
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    ) {
        match (rt, tt) {
            (2, 2) => Self::run::<F, 2, 2>(rows, a, t0, out),
            (2, _) => Self::run::<F, 2, 1>(rows, a, t0, out),
            (_, 2) => Self::run::<F, 1, 2>(rows, a, t0, out),
            _ => Self::run::<F, 1, 1>(rows, a, t0, out),
        }
    }
}

/// AVX2 for batches of at most four activation rows (a batched decode step of four): tiles of
/// four rows, whose layout puts two groups of four values side by side in a 256-bit vector
/// (dwords 0-3: group `2i` of rows 0-3; 4-7: group `2i + 1`), so a block takes four broadcasts
/// of two groups' codes and four `vpmaddubsw` per weight row where [`Avx2`]'s eight-row tiles
/// take eight of each, half of them on zero rows; the two halves are added at the block's end.
/// On a Zen 3 EPYC (2 threads, built-in SmolLM2, `bench --batch 4`, alternating runs) this took
/// four sequences' generation from 153-164 to 182-190 tokens/s with q4_0, 163-165 to 184-187
/// with q8_0.
struct Avx2Narrow;

impl Avx2Narrow {
    #[inline(always)]
    unsafe fn run<F: Format, const R: usize, const T: usize>(
        rows: [*const u8; MAX_ROWS],
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    ) {
        let mut acc = [[_mm_setzero_ps(); T]; R];
        assert!(
            F::SIGNED || 2 * 127 * F::MAX_CODE <= 32767,
            "codes too large for vpmaddubsw"
        );
        let ones = _mm256_set1_epi16(1);
        // Pairs of groups summed in i16 before widening (each i16 lane takes one pair of
        // products per pair of groups; one pair of groups for signed codes).
        let run = if F::SIGNED {
            1
        } else {
            (32767 / (2 * 127 * F::MAX_CODE)).clamp(1, 4) as usize
        };
        for b in 0..a.nb {
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = rows[r].add(b * F::BYTES);
                prefetch::<F>(p, b);
                let (m, _, mn) = F::scale32(p);
                let u = F::codes(p, 0);
                let q: [*const i8; T] =
                    std::array::from_fn(|t| a.qs.as_ptr().add(a.block(t0 + t, b)));
                let mut sum = [_mm256_setzero_si256(); T];
                let mut pairs = [_mm256_setzero_si256(); T];
                for gp in 0..4 {
                    let (g0, g1) = (2 * gp as i32, 2 * gp as i32 + 1);
                    let wg = _mm256_permutevar8x32_epi32(
                        u,
                        _mm256_setr_epi32(g0, g0, g0, g0, g1, g1, g1, g1),
                    );
                    let magnitude = if F::SIGNED {
                        _mm256_sign_epi8(wg, wg)
                    } else {
                        wg
                    };
                    for (pairs, q) in pairs.iter_mut().zip(&q) {
                        let mut x = _mm256_loadu_si256(q.add(gp * 32) as *const _);
                        if F::SIGNED {
                            x = _mm256_sign_epi8(x, wg);
                        }
                        *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(magnitude, x));
                    }
                    if (gp + 1) % run == 0 || gp == 3 {
                        for (sum, pairs) in sum.iter_mut().zip(&mut pairs) {
                            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(*pairs, ones));
                            *pairs = _mm256_setzero_si256();
                        }
                    }
                }
                let mv = _mm_set1_ps(m);
                for (t, (acc, sum)) in acc.iter_mut().zip(sum).enumerate() {
                    let at = a.block(t0 + t, b) / 32;
                    // The even groups' sums and the odd groups', row by row.
                    let mut s = _mm_add_epi32(
                        _mm256_castsi256_si128(sum),
                        _mm256_extracti128_si256::<1>(sum),
                    );
                    if !(F::MIN || F::SIGNED) {
                        s = _mm_add_epi32(s, _mm_loadu_si128(a.corr.as_ptr().add(at) as *const _));
                    }
                    let dx = _mm_loadu_ps(a.d.as_ptr().add(at));
                    *acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s), _mm_mul_ps(mv, dx), *acc);
                    if F::MIN {
                        let s = _mm_loadu_ps(a.s.as_ptr().add(at));
                        *acc = _mm_fmadd_ps(_mm_set1_ps(mn), s, *acc);
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            for (o, acc) in o.iter_mut().zip(acc) {
                _mm_storeu_ps(o.as_mut_ptr(), *acc);
            }
        }
    }
}

impl Kernel for Avx2Narrow {
    const LANES: usize = 4;
    const ROWS: usize = 2;
    #[inline(always)]
    unsafe fn tile<F: Format>(
        rows: [*const u8; MAX_ROWS],
        rt: usize,
        tt: usize,
        a: &Tiles,
        t0: usize,
        out: &mut Results,
    ) {
        match (rt, tt) {
            (2, 2) => Self::run::<F, 2, 2>(rows, a, t0, out),
            (2, _) => Self::run::<F, 2, 1>(rows, a, t0, out),
            (_, 2) => Self::run::<F, 1, 2>(rows, a, t0, out),
            _ => Self::run::<F, 1, 1>(rows, a, t0, out),
        }
    }
}

/// Weight rows `r0..r1` of `w` times every activation row, written to `out` (`[m, n]`).
///
/// # Safety
/// The CPU has `K`'s instructions; `w`'s rows `r0..r1` lie inside its bytes and `a` holds `m`
/// rows of `w.k` values for `w`'s type in tiles of `K::LANES`; no other thread writes columns
/// `r0..r1` of `out` meanwhile.
#[inline(always)]
unsafe fn rows<K: Kernel, F: Format>(
    w: &QuantMatrix<'_>,
    a: &Tiles,
    m: usize,
    r0: usize,
    r1: usize,
    out: &Out,
) {
    let row_bytes = w.row_bytes();
    let count = m.div_ceil(K::LANES);
    // Activation tiles outside, weight rows inside: a pair of tiles (up to 32 rows of `k` bytes)
    // stays in L1 while this thread's rows stream past it from L2, instead of every pair of
    // tiles coming from L2 again for every few weight rows.
    let mut t = 0;
    while t < count {
        let tt = if t + TILES <= count { TILES } else { 1 };
        let mut r = r0;
        while r < r1 {
            let rt = if r + K::ROWS <= r1 { K::ROWS } else { 1 };
            let ptrs: [*const u8; MAX_ROWS] =
                std::array::from_fn(|i| w.bytes.as_ptr().add((r + i.min(rt - 1)) * row_bytes));
            let mut results: Results = [[[0.0; MAX_LANES]; TILES]; MAX_ROWS];
            K::tile::<F>(ptrs, rt, tt, a, t, &mut results);
            let value = |i: usize, j: usize, c: usize| results[i][j][c];
            for j in 0..tt {
                for c in 0..K::LANES.min(m - (t + j) * K::LANES) {
                    // SAFETY: this thread alone writes columns `r0..r1` (the caller's contract).
                    let dst = unsafe { out.row((t + j) * K::LANES + c, r, rt) };
                    for (i, v) in dst.iter_mut().enumerate() {
                        *v = value(i, j, c);
                    }
                }
            }
            r += rt;
        }
        t += tt;
    }
}

#[inline(always)]
unsafe fn by_type<K: Kernel>(
    w: &QuantMatrix<'_>,
    a: &Tiles,
    m: usize,
    r0: usize,
    r1: usize,
    out: &Out,
) {
    match w.dtype {
        DType::Q4_0 => rows::<K, f::Q4_0>(w, a, m, r0, r1, out),
        DType::Q4_1 => rows::<K, f::Q4_1>(w, a, m, r0, r1, out),
        DType::Q5_0 => rows::<K, f::Q5_0>(w, a, m, r0, r1, out),
        DType::Q5_1 => rows::<K, f::Q5_1>(w, a, m, r0, r1, out),
        DType::Q8_0 => rows::<K, f::Q8_0>(w, a, m, r0, r1, out),
        other => unreachable!("{other} has no integer prompt kernel"),
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni(w: &QuantMatrix<'_>, a: &Tiles, m: usize, r0: usize, r1: usize, out: &Out) {
    by_type::<Vnni>(w, a, m, r0, r1, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(w: &QuantMatrix<'_>, a: &Tiles, m: usize, r0: usize, r1: usize, out: &Out) {
    by_type::<Avx2>(w, a, m, r0, r1, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2_narrow(
    w: &QuantMatrix<'_>,
    a: &Tiles,
    m: usize,
    r0: usize,
    r1: usize,
    out: &Out,
) {
    by_type::<Avx2Narrow>(w, a, m, r0, r1, out)
}

/// `y = x·Wᵀ` for `m` activation rows `x` (`[m, k]`) and `W` `[n, k]` in one of the 32-value
/// formats, `y` `[m, n]`, the weight rows split over candle's CPU worker threads. Returns `false`
/// (leaving `y` alone) unless [`available`].
pub(crate) fn matmul(isa: Isa, x: &[f32], m: usize, w: &QuantMatrix<'_>, y: &mut [f32]) -> bool {
    if !available(w.dtype, isa) || !w.k.is_multiple_of(32) || m == 0 {
        return false;
    }
    assert!(x.len() == m * w.k && y.len() == m * w.n);
    assert!(w.n * w.row_bytes() <= w.bytes.len());
    // VNNI's `vpdpbusd` takes q8_0's codes offset to unsigned; AVX2 moves their signs instead.
    let narrow = !isa.vnni() && m <= Avx2Narrow::LANES;
    let (lanes, step, zero) = if isa.vnni() {
        (Vnni::LANES, Vnni::ROWS, zero_code(w.dtype, true))
    } else if narrow {
        (
            Avx2Narrow::LANES,
            Avx2Narrow::ROWS,
            zero_code(w.dtype, false),
        )
    } else {
        (Avx2::LANES, Avx2::ROWS, zero_code(w.dtype, false))
    };
    let a = tiles(isa, x, m, w.k, w.dtype, lanes, zero);
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let groups = w.n.div_ceil(step);
    let out = Out::of(y, w.n);
    pool.execute(|tid| {
        let (g0, g1) = (tid * groups / threads, (tid + 1) * groups / threads);
        let (r0, r1) = (g0 * step, (g1 * step).min(w.n));
        if r0 >= r1 {
            return;
        }
        if isa.vnni() {
            // SAFETY: the VNNI variant runs here (an `Isa` exists only for what this CPU runs);
            // the rows lie inside `w.bytes` and `a` holds `m` rows of `w.k` values in tiles of
            // its lanes (asserted, built above); thread `tid` alone writes columns `r0..r1`, and
            // `y` stays mutably borrowed until `execute` returns with every thread done.
            unsafe { rows_vnni(w, &a, m, r0, r1, &out) }
        } else if narrow {
            // SAFETY: as above; `a` is in tiles of four rows, as `Avx2Narrow` reads them.
            unsafe { rows_avx2_narrow(w, &a, m, r0, r1, &out) }
        } else {
            // SAFETY: as above, with AVX2/FMA/F16C (`available` asked for them).
            unsafe { rows_avx2(w, &a, m, r0, r1, &out) }
        }
    });
    true
}
