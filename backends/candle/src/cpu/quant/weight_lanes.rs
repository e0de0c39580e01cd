//! Activation rows against q4_0 and q8_0 weights with weight rows, not activation rows, in the
//! lanes of a vector: a few rows against q4_0 with AVX2 (a small batched decode step), any
//! number from two with AVX-512 VNNI (batched steps and prompts).
//!
//! The tile kernels ([`super::prompt`], [`super::dot`]) broadcast a weight row's codes to every
//! lane and pay, per block of every weight row, a scale conversion, a decode of the codes and a
//! shuffle per group of four values. Here one block of eight (AVX2) or sixteen (AVX-512) weight
//! rows is loaded and transposed once (for each group of four values, the rows' four codes side
//! by side), their scales convert in one instruction, and each activation row's groups are
//! broadcast straight from memory (a load, no shuffle): per activation row a block of weight
//! rows costs eight `vpmaddubsw` into i16 (eight pairs of `15 · 127` stay below 32767) and one
//! `vpmaddwd` to i32 with AVX2, or eight `vpdpbusd` with AVX-512 VNNI, then one multiply-add of
//! the scales. AVX2's 16 registers hold four activation rows' sums with the codes; AVX-512's 32
//! hold sixteen rows' accumulators (each row's integer sum lives only across its eight
//! `vpdpbusd`), and more rows take another pass over the weight rows, from L2 when a layer's
//! share fits there. The products are the decode kernels' and llama.cpp's: per block
//! `d_w · d_x · (Σ w·q)`, with q4_0's codes read unsigned (`w = code − 8`) and q8_0's offset by
//! 128 for `vpdpbusd`, the offset taken off as `−z·Σq`.

#![cfg(target_arch = "x86_64")]

use super::prompt::{tiles, zero_code, Tiles};
use super::QuantMatrix;
use crate::cpu::kernels::Isa;
use crate::cpu::out::Out;
use std::arch::x86_64::*;
use switchyard_runtime::DType;

/// The most activation rows the AVX2 kernel takes (one sum per row and per eight weight rows
/// must stay in registers with the codes).
pub(crate) const MAX_ROWS: usize = 4;

/// Weight rows per vector of the AVX2 kernel.
const LANES: usize = 8;

/// Bytes of a q4_0 block: an f16 scale, then 16 bytes of two codes each.
const BLOCK: usize = 18;

/// Bytes of a q8_0 block: an f16 scale, then 32 signed codes.
const Q8_BLOCK: usize = 34;

/// Bytes ahead of the block being read that each weight row prefetches.
const PREFETCH: usize = 1024;

/// True when [`matmul`] runs `m` rows against `dtype` with `isa`: from two rows, against q4_0
/// up to [`MAX_ROWS`] with AVX2 (without VNNI) and any number with AVX-512 VNNI; against q8_0
/// with AVX-512 VNNI. One row stays with the decode kernels, which are faster alone.
///
/// Measured on the built-in SmolLM2 (Sapphire Rapids, 2 threads, `bench --batch B -p 128 -n
/// 32`, two or three alternating runs each), generation t/s with the kernels chosen before this
/// one (the skinny-batch dot products up to 3 rows with AVX2 and 5 with VNNI, then the prompt
/// kernels) / with it. q4_0, AVX2 forced: B = 2 201-219 / 239-250, B = 3 220-226 / 295-301,
/// B = 4 268-299 / 311-354; four rows at a time for more (not taken): B = 8 388-407 / 395-401,
/// B = 16 482-499 / 433-443. q4_0, AVX-512 VNNI: B = 2 242-277 / 273-291, B = 3 316-323 /
/// 344-349, B = 4 341-342 / 382-385, B = 8 336-338 / 499-513, B = 16 486-496 / 590-614, B = 32
/// 612-631 / 598-621; prompts (`bench -p 128,512`, three runs each) pp128 1102-1104 /
/// 1242-1250, pp512 965-988 / 1037-1114. q8_0, AVX-512 VNNI: B = 2 160-163 / 167-169, B = 4
/// 256-268 / 274-279, B = 8 289-293 / 387-392, B = 16 427-437 / 485-512; q8_0 prompts level
/// (three alternating runs, prompt kernels / this one: pp128 949-1057 / 899-1065, pp512 877-936
/// / 918-946). One row against
/// q4_0, decode kernel / this kernel: AVX2 172-212 / 150-189, VNNI 224-234 / 179-210.
pub(crate) fn available(dtype: DType, isa: Isa, m: usize) -> bool {
    m >= 2
        && match dtype {
            DType::Q4_0 => isa.avx2() && (isa.vnni() || m <= MAX_ROWS),
            DType::Q8_0 => isa.vnni(),
            _ => false,
        }
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
unsafe fn group<const M: usize>(p: [*const u8; LANES], a: &Tiles, out: &mut [__m256; MAX_ROWS]) {
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
        let d = scales(&blk);
        for i in 0..M {
            let dx = _mm256_set1_ps(*a.d.get_unchecked(at[i]));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[i]), _mm256_mul_ps(d, dx), acc[i]);
        }
    }
    out[..M].copy_from_slice(&acc);
}

/// Weight rows per vector of the AVX-512 kernel.
const WIDE_LANES: usize = 16;

/// The most activation rows one pass of the AVX-512 kernel takes: one accumulator per row, the
/// eight code vectors and a running sum in AVX-512's 32 registers.
const MAX_WIDE_ROWS: usize = 16;

/// [`scales`] for sixteen weight rows.
#[inline(always)]
unsafe fn scales16(p: &[*const u8; WIDE_LANES]) -> __m512 {
    let h = |j: usize| u64::from(std::ptr::read_unaligned(p[j] as *const u16));
    let four = |j: usize| (h(j) | h(j + 1) << 16 | h(j + 2) << 32 | h(j + 3) << 48) as i64;
    _mm512_cvtph_ps(_mm256_set_epi64x(four(12), four(8), four(4), four(0)))
}

/// The 16 bytes at `off` of each of sixteen blocks, transposed: dword `j` of the result's
/// `[c]` is bytes `off + 4c .. off + 4c + 4` of block `j`.
#[inline(always)]
unsafe fn transpose16(blk: &[*const u8; WIDE_LANES], off: usize) -> [__m512i; 4] {
    // Blocks j, j + 4, j + 8 and j + 12 in the four 128-bit lanes.
    let quad = |j: usize| {
        let lo = _mm256_loadu2_m128i(
            blk[j + 4].add(off) as *const __m128i,
            blk[j].add(off) as *const __m128i,
        );
        let hi = _mm256_loadu2_m128i(
            blk[j + 12].add(off) as *const __m128i,
            blk[j + 8].add(off) as *const __m128i,
        );
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    };
    let (r0, r1, r2, r3) = (quad(0), quad(1), quad(2), quad(3));
    let t0 = _mm512_unpacklo_epi32(r0, r1);
    let t1 = _mm512_unpacklo_epi32(r2, r3);
    let t2 = _mm512_unpackhi_epi32(r0, r1);
    let t3 = _mm512_unpackhi_epi32(r2, r3);
    [
        _mm512_unpacklo_epi64(t0, t1),
        _mm512_unpackhi_epi64(t0, t1),
        _mm512_unpacklo_epi64(t2, t3),
        _mm512_unpackhi_epi64(t2, t3),
    ]
}

/// [`group`] with sixteen weight rows in the lanes of a 512-bit vector (AVX-512 VNNI), q4_0 or
/// (`Q8`) q8_0: `M` activation rows times the sixteen weight rows at `p`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL/VNNI, FMA and F16C; each `p[j]` points at a whole row of `a.nb`
/// q4_0 blocks; `a` holds at least `M` rows in tiles of one row.
#[inline(always)]
unsafe fn group_wide<const Q8: bool, const M: usize>(
    p: [*const u8; WIDE_LANES],
    a: &Tiles,
    i0: usize,
    out: &mut [__m512; MAX_WIDE_ROWS],
) {
    let nb = a.nb;
    let (block, lines) = if Q8 { (Q8_BLOCK, 2) } else { (BLOCK, 4) };
    let mask = _mm512_set1_epi8(0x0F);
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        let blk: [*const u8; WIDE_LANES] = std::array::from_fn(|j| p[j].add(b * block));
        // About once per cache line of each row.
        if b % lines == 0 {
            for q in &blk {
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH) as *const i8);
            }
        }
        // Group g's four codes of every row (dword `j` of `codes[g]` is row `j`'s), unsigned.
        let codes: [__m512i; 8] = if Q8 {
            // Bytes 4g..4g+4, read `+ 128` (`w ^ 0x80` as an unsigned byte).
            let (lo, hi) = (transpose16(&blk, 2), transpose16(&blk, 18));
            std::array::from_fn(|g| _mm512_xor_si512(if g < 4 { lo[g] } else { hi[g - 4] }, flip))
        } else {
            // Low nibbles of bytes 4c..4c+4 are group c, their high nibbles group c + 4.
            let bytes = transpose16(&blk, 2);
            std::array::from_fn(|g| {
                if g < 4 {
                    _mm512_and_si512(bytes[g], mask)
                } else {
                    _mm512_and_si512(_mm512_srli_epi16::<4>(bytes[g - 4]), mask)
                }
            })
        };
        let d = scales16(&blk);
        for (i, acc) in acc.iter_mut().enumerate() {
            let at = (i0 + i) * nb + b;
            let q = a.qs.as_ptr().add(at * 32) as *const u8;
            // From `−z·Σq`, what the zero code (8, or q8_0's offset 128) adds.
            let mut sum = _mm512_set1_epi32(*a.corr.get_unchecked(at));
            for (g, code) in codes.iter().enumerate() {
                let x = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(4 * g) as *const i32));
                sum = _mm512_dpbusd_epi32(sum, *code, x);
            }
            let dx = _mm512_set1_ps(*a.d.get_unchecked(at));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(d, dx), *acc);
        }
    }
    out[..M].copy_from_slice(&acc);
}

/// [`rows`] with the AVX-512 kernel, `m` up to [`MAX_WIDE_ROWS`].
///
/// # Safety
/// As for [`group_wide`]; `w`'s rows `r0..r1` lie inside its bytes; no other thread writes
/// columns `r0..r1` of `out` meanwhile.
#[inline(always)]
unsafe fn rows_wide_of<const Q8: bool>(
    w: &QuantMatrix<'_>,
    a: &Tiles,
    m: usize,
    r0: usize,
    r1: usize,
    out: &Out,
) {
    let row_bytes = w.row_bytes();
    // Activation rows outside, weight rows inside: one pass over this thread's weight rows per
    // sixteen activation rows (from L2 when the rows fit, as a layer's do).
    for i0 in (0..m).step_by(MAX_WIDE_ROWS) {
        let rows = MAX_WIDE_ROWS.min(m - i0);
        let mut r = r0;
        while r < r1 {
            let valid = WIDE_LANES.min(r1 - r);
            let p: [*const u8; WIDE_LANES] =
                std::array::from_fn(|j| w.bytes.as_ptr().add((r + j.min(valid - 1)) * row_bytes));
            let mut res = [_mm512_setzero_ps(); MAX_WIDE_ROWS];
            macro_rules! by_rows {
                ($($n:literal)*) => {
                    match rows {
                        $($n => group_wide::<Q8, $n>(p, a, i0, &mut res),)*
                        _ => group_wide::<Q8, MAX_WIDE_ROWS>(p, a, i0, &mut res),
                    }
                };
            }
            by_rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            for (i, v) in res.iter().enumerate().take(rows) {
                let mut lanes = [0f32; WIDE_LANES];
                _mm512_storeu_ps(lanes.as_mut_ptr(), *v);
                // SAFETY: this thread alone writes columns `r0..r1` (the caller's contract).
                unsafe { out.write(i0 + i, r, &lanes[..valid]) };
            }
            r += valid;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_wide(w: &QuantMatrix<'_>, a: &Tiles, m: usize, r0: usize, r1: usize, out: &Out) {
    if w.dtype == DType::Q8_0 {
        rows_wide_of::<true>(w, a, m, r0, r1, out)
    } else {
        rows_wide_of::<false>(w, a, m, r0, r1, out)
    }
}

/// Weight rows `r0..r1` of `w` (q4_0) times the `m` activation rows of `a` (two to
/// [`MAX_ROWS`], as [`available`] allows), written to `out`.
///
/// # Safety
/// As for [`group`]; `w`'s rows `r0..r1` lie inside its bytes; no other thread writes columns
/// `r0..r1` of `out` meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(w: &QuantMatrix<'_>, a: &Tiles, m: usize, r0: usize, r1: usize, out: &Out) {
    let row_bytes = w.row_bytes();
    let mut r = r0;
    while r < r1 {
        let valid = LANES.min(r1 - r);
        // A last group of fewer rows reads its last row again and stores only the valid lanes.
        let p: [*const u8; LANES] =
            std::array::from_fn(|j| w.bytes.as_ptr().add((r + j.min(valid - 1)) * row_bytes));
        let mut res = [_mm256_setzero_ps(); MAX_ROWS];
        match m {
            2 => group::<2>(p, a, &mut res),
            3 => group::<3>(p, a, &mut res),
            _ => group::<4>(p, a, &mut res),
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

/// `y = x·Wᵀ` for `m` ([`available`]) activation rows `x` (`[m, k]`) and a q4_0 `W` `[n, k]`,
/// `y` `[m, n]`, groups of eight (AVX2) or sixteen (AVX-512 VNNI) weight rows split over
/// candle's CPU worker threads. Returns
/// `false` (leaving `y` alone) unless [`available`].
pub(crate) fn matmul(isa: Isa, x: &[f32], m: usize, w: &QuantMatrix<'_>, y: &mut [f32]) -> bool {
    if !available(w.dtype, isa, m) || !w.k.is_multiple_of(32) {
        return false;
    }
    assert!(x.len() == m * w.k && y.len() == m * w.n);
    assert!(w.n * w.row_bytes() <= w.bytes.len());
    // The codes as the kernels read them: q4_0's unsigned, q8_0's offset by 128.
    let a = tiles(isa, x, m, w.k, w.dtype, 1, zero_code(w.dtype, true));
    let wide = isa.vnni();
    let lanes = if wide { WIDE_LANES } else { LANES };
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let groups = w.n.div_ceil(lanes);
    let out = Out::of(y, w.n);
    pool.execute(|tid| {
        let (g0, g1) = (tid * groups / threads, (tid + 1) * groups / threads);
        let (r0, r1) = (g0 * lanes, (g1 * lanes).min(w.n));
        if r0 < r1 {
            // SAFETY: `available` asked for AVX2/FMA/F16C (and `wide` for AVX-512 VNNI) and an
            // `Isa` exists only for what this CPU runs; the rows lie inside `w.bytes` (asserted) and `a` holds `m` rows of `w.k`
            // values in tiles of one row (built above); thread `tid` alone writes columns
            // `r0..r1`, and `y` stays mutably borrowed until `execute` returns.
            unsafe {
                if wide {
                    rows_wide(w, &a, m, r0, r1, &out)
                } else {
                    rows_avx2(w, &a, m, r0, r1, &out)
                }
            }
        }
    });
    true
}
