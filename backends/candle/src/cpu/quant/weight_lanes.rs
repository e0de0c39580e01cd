//! A few activation rows (a small batched decode step) against q4_0 weights, eight weight rows in
//! the lanes of a vector instead of activation rows.
//!
//! The tile kernels ([`super::prompt`], [`super::dot`]) broadcast a weight row's codes to every
//! lane and pay, per block of every weight row, a scale conversion, a nibble decode and a
//! shuffle per group of four values. Here one block of eight weight rows is loaded and transposed
//! once (for each group of four values, the eight rows' four codes side by side), the eight
//! scales convert in one instruction, and each activation row's groups are broadcast straight
//! from memory (a load, no shuffle): per activation row a block of eight weight rows costs eight
//! `vpmaddubsw` into i16 (eight pairs of `15 · 127` stay below 32767) and one `vpmaddwd` to i32
//! with AVX2, or eight `vpdpbusd` with AVX-512 VNNI, then one multiply-add of the scales. The
//! products are the decode kernels' and llama.cpp's: per block `d_w · d_x · (Σ code·q − 8·Σq)`.

#![cfg(target_arch = "x86_64")]

use super::prompt::{tiles, Tiles};
use super::QuantMatrix;
use crate::cpu::kernels::Isa;
use crate::cpu::out::Out;
use std::arch::x86_64::*;
use switchyard_runtime::DType;

/// The most activation rows one pass takes (one accumulator per row and per eight weight rows
/// must stay in registers with the codes).
pub(crate) const MAX_ROWS: usize = 4;

/// Weight rows per vector.
const LANES: usize = 8;

/// Bytes of a q4_0 block: an f16 scale, then 16 bytes of two codes each.
const BLOCK: usize = 18;

/// Bytes ahead of the block being read that each weight row prefetches.
const PREFETCH: usize = 1024;

/// True when [`matmul`] runs `m` rows against `dtype` with `isa`: q4_0, two to [`MAX_ROWS`]
/// rows, from AVX2 up. One row stays with the decode kernels, which are faster alone.
///
/// Measured on the built-in SmolLM2 q4_0 (Sapphire Rapids, 2 threads, `bench --batch B -p 128
/// -n 32`, three alternating runs each), generation t/s with the kernels chosen before (the
/// skinny-batch dot products; with AVX2 at B = 4 the prompt kernels) / with this kernel: AVX2 forced, B = 2 201-219 / 239-250, B = 3 220-226 / 295-301, B = 4
/// 268-299 / 311-354; AVX-512 VNNI, B = 2 191-221 / 219-274, B = 3 224-240 / 289-311, B = 4
/// 294-303 / 351-354. One row, decode kernel / this kernel: AVX2 172-212 / 150-189, VNNI
/// 200-217 / 152-189.
pub(crate) fn available(dtype: DType, isa: Isa, m: usize) -> bool {
    dtype == DType::Q4_0 && isa.avx2() && (2..=MAX_ROWS).contains(&m)
}

/// The eight f16 scales at `p[0..8]` as f32 (gathered in general-purpose registers, which the
/// vector work leaves idle, then converted at once).
#[inline(always)]
unsafe fn scales(p: &[*const u8; LANES]) -> __m256 {
    let h = |j: usize| u64::from(std::ptr::read_unaligned(p[j] as *const u16));
    let lo = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
    let hi = h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48;
    _mm256_cvtph_ps(_mm_set_epi64x(hi as i64, lo as i64))
}

/// `M` activation rows times the eight weight rows at `p` (each pointing at its row's first
/// block): `out[i][j]` is activation row `i`'s product with weight row `j`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; each `p[j]` points at a whole row of `a.nb` q4_0 blocks; `a`
/// holds at least `M` rows in tiles of one row.
#[inline(always)]
unsafe fn group<const VNNI: bool, const M: usize>(
    p: [*const u8; LANES],
    a: &Tiles,
    out: &mut [__m256; MAX_ROWS],
) {
    let nb = a.nb;
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); M];
    for b in 0..nb {
        let blk: [*const u8; LANES] = std::array::from_fn(|j| p[j].add(b * BLOCK));
        if b % 4 == 0 {
            for q in &blk {
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH) as *const i8);
            }
        }
        // Rows j and j + 4 in the two halves; dword c of a half is bytes 4c..4c+4 of the codes.
        let half = |j: usize| {
            _mm256_loadu2_m128i(
                blk[j + 4].add(2) as *const __m128i,
                blk[j].add(2) as *const __m128i,
            )
        };
        let (r0, r1, r2, r3) = (half(0), half(1), half(2), half(3));
        let t0 = _mm256_unpacklo_epi32(r0, r1);
        let t1 = _mm256_unpacklo_epi32(r2, r3);
        let t2 = _mm256_unpackhi_epi32(r0, r1);
        let t3 = _mm256_unpackhi_epi32(r2, r3);
        // `bytes[c]`: bytes 4c..4c+4 of rows 0..8, one dword per row in order. Their low nibbles
        // are values 4c..4c+4 (group c), their high nibbles values 16+4c.. (group c + 4).
        let bytes = [
            _mm256_unpacklo_epi64(t0, t1),
            _mm256_unpackhi_epi64(t0, t1),
            _mm256_unpacklo_epi64(t2, t3),
            _mm256_unpackhi_epi64(t2, t3),
        ];
        let at: [usize; M] = std::array::from_fn(|i| i * nb + b);
        let q: [*const u8; M] = std::array::from_fn(|i| a.qs.as_ptr().add(at[i] * 32) as *const u8);
        let group_of = |i: usize, g: usize| {
            _mm256_set1_epi32(std::ptr::read_unaligned(q[i].add(4 * g) as *const i32))
        };
        // Per activation row, the integer sums of the eight weight rows, from `−8·Σq`.
        let mut sum: [__m256i; M] =
            std::array::from_fn(|i| _mm256_set1_epi32(*a.corr.get_unchecked(at[i])));
        if VNNI {
            for (c, v) in bytes.iter().enumerate() {
                let lo = _mm256_and_si256(*v, mask);
                for (i, sum) in sum.iter_mut().enumerate() {
                    *sum = _mm256_dpbusd_epi32(*sum, lo, group_of(i, c));
                }
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(*v), mask);
                for (i, sum) in sum.iter_mut().enumerate() {
                    *sum = _mm256_dpbusd_epi32(*sum, hi, group_of(i, c + 4));
                }
            }
        } else {
            let mut pairs = [_mm256_setzero_si256(); M];
            for (c, v) in bytes.iter().enumerate() {
                let lo = _mm256_and_si256(*v, mask);
                for (i, pairs) in pairs.iter_mut().enumerate() {
                    *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(lo, group_of(i, c)));
                }
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(*v), mask);
                for (i, pairs) in pairs.iter_mut().enumerate() {
                    *pairs = _mm256_add_epi16(*pairs, _mm256_maddubs_epi16(hi, group_of(i, c + 4)));
                }
            }
            for (sum, pairs) in sum.iter_mut().zip(pairs) {
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
            }
        }
        let d = scales(&blk);
        for i in 0..M {
            let dx = _mm256_set1_ps(*a.d.get_unchecked(at[i]));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[i]), _mm256_mul_ps(d, dx), acc[i]);
        }
    }
    out[..M].copy_from_slice(&acc);
}

/// Weight rows `r0..r1` of `w` (q4_0) times the `m` activation rows of `a` (two to
/// [`MAX_ROWS`], as [`available`] allows), written to `out`.
///
/// # Safety
/// As for [`group`]; `w`'s rows `r0..r1` lie inside its bytes; no other thread writes columns
/// `r0..r1` of `out` meanwhile.
#[inline(always)]
unsafe fn rows<const VNNI: bool>(
    w: &QuantMatrix<'_>,
    a: &Tiles,
    m: usize,
    r0: usize,
    r1: usize,
    out: &Out,
) {
    let row_bytes = w.row_bytes();
    let mut r = r0;
    while r < r1 {
        let valid = LANES.min(r1 - r);
        // A last group of fewer rows reads its last row again and stores only the valid lanes.
        let p: [*const u8; LANES] =
            std::array::from_fn(|j| w.bytes.as_ptr().add((r + j.min(valid - 1)) * row_bytes));
        let mut res = [_mm256_setzero_ps(); MAX_ROWS];
        match m {
            2 => group::<VNNI, 2>(p, a, &mut res),
            3 => group::<VNNI, 3>(p, a, &mut res),
            _ => group::<VNNI, 4>(p, a, &mut res),
        }
        for (i, v) in res.iter().enumerate().take(m) {
            let mut lanes = [0f32; LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
            // SAFETY: this thread alone writes columns `r0..r1` (the caller's contract).
            unsafe { out.write(i, r, &lanes[..valid]) };
        }
        r += valid;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(w: &QuantMatrix<'_>, a: &Tiles, m: usize, r0: usize, r1: usize, out: &Out) {
    rows::<false>(w, a, m, r0, r1, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni(w: &QuantMatrix<'_>, a: &Tiles, m: usize, r0: usize, r1: usize, out: &Out) {
    rows::<true>(w, a, m, r0, r1, out)
}

/// `y = x·Wᵀ` for `m` ([`available`]) activation rows `x` (`[m, k]`) and a q4_0 `W` `[n, k]`,
/// `y` `[m, n]`, groups of eight weight rows split over candle's CPU worker threads. Returns
/// `false` (leaving `y` alone) unless [`available`].
pub(crate) fn matmul(isa: Isa, x: &[f32], m: usize, w: &QuantMatrix<'_>, y: &mut [f32]) -> bool {
    if !available(w.dtype, isa, m) || !w.k.is_multiple_of(32) {
        return false;
    }
    assert!(x.len() == m * w.k && y.len() == m * w.n);
    assert!(w.n * w.row_bytes() <= w.bytes.len());
    let a = tiles(x, m, w.k, w.dtype, 1, 8);
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let groups = w.n.div_ceil(LANES);
    let out = Out::of(y, w.n);
    pool.execute(|tid| {
        let (g0, g1) = (tid * groups / threads, (tid + 1) * groups / threads);
        let (r0, r1) = (g0 * LANES, (g1 * LANES).min(w.n));
        if r0 < r1 {
            // SAFETY: `available` asked for AVX2/FMA/F16C and an `Isa` exists only for what this
            // CPU runs; the rows lie inside `w.bytes` (asserted) and `a` holds `m` rows of `w.k`
            // values in tiles of one row (built above); thread `tid` alone writes columns
            // `r0..r1`, and `y` stays mutably borrowed until `execute` returns.
            unsafe {
                if isa.vnni() {
                    rows_vnni(w, &a, m, r0, r1, &out)
                } else {
                    rows_avx2(w, &a, m, r0, r1, &out)
                }
            }
        }
    });
    true
}
