//! Rows of block-quantized weights dotted with a quantized activation row, in integer arithmetic:
//! 32 weight values (as unsigned bytes) times 32 activation bytes per instruction sequence, scaled
//! per block. AVX2 (`maddubs`/`madd`) everywhere, AVX-512 VNNI (`dpbusd`) where the CPU has it.
//!
//! Each weight format is read in place, exactly as llama.cpp stores it (see
//! `switchyard_runtime::quant` for the layouts).

#![cfg(target_arch = "x86_64")]

use super::act::QActs;
use super::QuantMatrix;
use crate::cpu::kernels::Isa;
use std::arch::x86_64::*;
use switchyard_runtime::DType;

/// `Σ u·s` over each group of 4 bytes: 8 lanes of i32 (lane `i` covers bytes `4i..4i+4`).
trait IntDot {
    /// # Safety
    /// The CPU must support the instructions of the implementation.
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
}

/// AVX2: pairs of products to i16 (no saturation: `u ≤ 128` in every format here and
/// `|s| ≤ 127`, so a pair stays below 32767), then pairs of those to i32.
struct Avx2;
impl IntDot for Avx2 {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

/// AVX-512 VNNI on 256-bit vectors: one instruction.
struct Vnni;
impl IntDot for Vnni {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
}

/// The f16 at `p` as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The 32 nibbles of 16 bytes as 32 bytes: low nibbles first, then high ones.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let lo = _mm_and_si128(q, _mm_set1_epi8(0x0F));
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
    _mm256_set_m128i(hi, lo)
}

/// Byte `j` is 0xFF where bit `j` of `bits` is set.
#[inline(always)]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let v = _mm256_shuffle_epi8(v, spread);
    // Every bit but bit `i % 8` set in byte `i`: the byte is all ones exactly when that bit is.
    let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
}

/// How far ahead of the block being read the weight rows are prefetched: the rows of a
/// multi-row kernel are separate streams, more than the hardware prefetcher follows well
/// (measured on SmolLM2 q8_0 decode: 89 -> 108 tokens/s on 2 threads).
const PREFETCH_BYTES: usize = 1024;

/// Asks for the cache line `PREFETCH_BYTES` after `p` (a hint: never faults, even past the end).
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8);
}

/// Activation block `b` (32 signed bytes).
#[inline(always)]
unsafe fn act(a: &QActs, b: usize) -> __m256i {
    load(a.qs.as_ptr().add(b * 32) as *const u8)
}

/// `R` rows of Q8_0 at once (`R = 1` for a single row): the activation block is loaded once for
/// all of them and the `R` independent weight streams keep more loads in flight than one row does.
#[inline(always)]
unsafe fn rows_q8_0<D: IntDot, const R: usize>(
    rows: [*const u8; R],
    nb: usize,
    a: &QActs,
) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let x = act(a, b);
        let ad = a.d[b];
        for r in 0..R {
            let p = rows[r].add(b * 34);
            prefetch(p);
            let w = load(p.add(2));
            let prod = D::dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
            let scale = _mm256_set1_ps(f16_at(p) * ad);
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(prod), acc[r]);
        }
    }
    acc.map(|v| hsum(v))
}

/// `R` rows of Q4_0 at once (see [`rows_q8_0`]).
#[inline(always)]
unsafe fn rows_q4_0<D: IntDot, const R: usize>(
    rows: [*const u8; R],
    nb: usize,
    a: &QActs,
) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offset = [0f32; R];
    for b in 0..nb {
        let x = act(a, b);
        let (ad, ds) = (a.d[b], a.dsum[b]);
        for r in 0..R {
            let p = rows[r].add(b * 18);
            prefetch(p);
            let d = f16_at(p);
            let prod = D::dot(nibbles(p.add(2)), x);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * ad), _mm256_cvtepi32_ps(prod), acc[r]);
            // The stored values are q + 8.
            offset[r] += d * ds;
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]) - 8.0 * offset[r];
    }
    out
}

/// `R` rows of Q5_0 at once (see [`rows_q8_0`]).
#[inline(always)]
unsafe fn rows_q5_0<D: IntDot, const R: usize>(
    rows: [*const u8; R],
    nb: usize,
    a: &QActs,
) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offset = [0f32; R];
    for b in 0..nb {
        let x = act(a, b);
        let (ad, ds) = (a.d[b], a.dsum[b]);
        for r in 0..R {
            let p = rows[r].add(b * 22);
            prefetch(p);
            let d = f16_at(p);
            let qh = u32::from_le_bytes([*p.add(2), *p.add(3), *p.add(4), *p.add(5)]);
            let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
            let u = _mm256_or_si256(nibbles(p.add(6)), high);
            let prod = D::dot(u, x);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * ad), _mm256_cvtepi32_ps(prod), acc[r]);
            // The stored values are q + 16.
            offset[r] += d * ds;
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]) - 16.0 * offset[r];
    }
    out
}

/// The eight 6-bit (scale, minimum) pairs of a Q4_K super-block.
#[inline(always)]
unsafe fn scales_k4(s: *const u8) -> ([u8; 8], [u8; 8]) {
    let s = std::slice::from_raw_parts(s, 12);
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, m)
}

#[inline(always)]
unsafe fn row_q4_k<D: IntDot>(row: *const u8, nsb: usize, a: &QActs) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let mask = _mm256_set1_epi8(0x0F);
    for s in 0..nsb {
        let p = row.add(s * 144);
        prefetch(p);
        prefetch(p.wrapping_add(64));
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let (sc, m) = scales_k4(p.add(4));
        let qs = p.add(16);
        for c in 0..4 {
            let q = load(qs.add(32 * c));
            let lo = _mm256_and_si256(q, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
            let (b0, b1) = (8 * s + 2 * c, 8 * s + 2 * c + 1);
            let p0 = D::dot(lo, act(a, b0));
            let p1 = D::dot(hi, act(a, b1));
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(d * sc[2 * c] as f32 * a.d[b0]),
                _mm256_cvtepi32_ps(p0),
                acc,
            );
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(d * sc[2 * c + 1] as f32 * a.d[b1]),
                _mm256_cvtepi32_ps(p1),
                acc,
            );
        }
        for (j, &mj) in m.iter().enumerate() {
            mins += dmin * mj as f32 * a.dsum[8 * s + j];
        }
    }
    hsum(acc) - mins
}

/// Bits `S..S+2` of each byte of `qh`, moved to bits 4 and 5 (the high bits of a Q6_K value).
#[inline(always)]
unsafe fn high_bits<const S: i32>(qh: __m256i) -> __m256i {
    let h = _mm256_and_si256(_mm256_srli_epi16::<S>(qh), _mm256_set1_epi8(3));
    _mm256_slli_epi16(h, 4)
}

#[inline(always)]
unsafe fn row_q6_k<D: IntDot>(row: *const u8, nsb: usize, a: &QActs) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for s in 0..nsb {
        let p = row.add(s * 210);
        prefetch(p);
        prefetch(p.wrapping_add(128));
        let d = f16_at(p.add(208));
        let scales = p.add(192) as *const i8;
        for n in 0..2 {
            let ql = p.add(64 * n);
            let qh = load(p.add(128 + 32 * n));
            let (lo, hi) = (load(ql), load(ql.add(32)));
            let groups = [
                _mm256_or_si256(_mm256_and_si256(lo, m4), high_bits::<0>(qh)),
                _mm256_or_si256(_mm256_and_si256(hi, m4), high_bits::<2>(qh)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4),
                    high_bits::<4>(qh),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(hi, 4), m4),
                    high_bits::<6>(qh),
                ),
            ];
            for (g, u) in groups.into_iter().enumerate() {
                let b = 8 * s + 4 * n + g;
                let (s0, s1) = (
                    *scales.add(8 * n + 2 * g) as f32,
                    *scales.add(8 * n + 2 * g + 1) as f32,
                );
                let prod = D::dot(u, act(a, b));
                let dx = d * a.d[b];
                let scale = _mm256_setr_m128(_mm_set1_ps(dx * s0), _mm_set1_ps(dx * s1));
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(prod), acc);
                // The stored values are q + 32.
                offset += dx * (s0 * a.sum16[2 * b] as f32 + s1 * a.sum16[2 * b + 1] as f32);
            }
        }
    }
    hsum(acc) - 32.0 * offset
}

#[inline(always)]
unsafe fn rows<D: IntDot>(w: &QuantMatrix<'_>, a: &QActs, first: usize, out: &mut [f32]) {
    let row_bytes = w.row_bytes();
    let blocks = w.k / w.dtype.block_len();
    let base = w.bytes.as_ptr().add(first * row_bytes);
    let row_at = |i: usize| base.add(i * row_bytes);
    // Eight rows at a time where a multi-row kernel exists, the remainder one by one. (A match
    // per group, not a function pointer, so the kernels inline into this target-feature body.)
    let mut done = 0;
    if matches!(w.dtype, DType::Q8_0 | DType::Q4_0 | DType::Q5_0) {
        for (g, ys) in out.chunks_exact_mut(8).enumerate() {
            let i = 8 * g;
            let r: [*const u8; 8] = std::array::from_fn(|j| row_at(i + j));
            ys.copy_from_slice(&match w.dtype {
                DType::Q8_0 => rows_q8_0::<D, 8>(r, blocks, a),
                DType::Q4_0 => rows_q4_0::<D, 8>(r, blocks, a),
                _ => rows_q5_0::<D, 8>(r, blocks, a),
            });
            done = i + 8;
        }
    }
    for (i, y) in out.iter_mut().enumerate().skip(done) {
        let row = w.bytes.as_ptr().add((first + i) * row_bytes);
        *y = match w.dtype {
            DType::Q8_0 => rows_q8_0::<D, 1>([row], blocks, a)[0],
            DType::Q4_0 => rows_q4_0::<D, 1>([row], blocks, a)[0],
            DType::Q5_0 => rows_q5_0::<D, 1>([row], blocks, a)[0],
            DType::Q4K => row_q4_k::<D>(row, blocks, a),
            DType::Q6K => row_q6_k::<D>(row, blocks, a),
            other => unreachable!("{other} has no integer kernel (see `supported`)"),
        };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(w: &QuantMatrix<'_>, a: &QActs, first: usize, out: &mut [f32]) {
    rows::<Avx2>(w, a, first, out)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni(w: &QuantMatrix<'_>, a: &QActs, first: usize, out: &mut [f32]) {
    rows::<Vnni>(w, a, first, out)
}

/// True when `isa` has these kernels.
pub(crate) fn available(isa: Isa) -> bool {
    isa.avx2()
}

/// `out[i] = row(first + i) · x` for the rows of `w`, `a` being `x` quantized, with the VNNI
/// kernels when `isa` allows them, else the AVX2 ones.
///
/// Panics unless [`available`] and `w` is [`super::supported`] and in bounds.
pub(crate) fn dot_rows(isa: Isa, w: &QuantMatrix<'_>, a: &QActs, first: usize, out: &mut [f32]) {
    assert!(available(isa) && super::supported(w.dtype));
    assert!((first + out.len()) * w.row_bytes() <= w.bytes.len());
    assert_eq!(a.qs.len(), w.k);
    if isa.vnni() {
        // SAFETY: an `Isa` exists only for variants this CPU runs, and the VNNI one includes
        // AVX2, FMA, F16C and AVX-512 VNNI/VL/BW; rows `first..first + out.len()` lie inside
        // `w.bytes` and `a` holds `w.k` activations (asserted), so every block read is in bounds.
        unsafe { rows_vnni(w, a, first, out) }
    } else {
        // SAFETY: as above, with the AVX2 kernels (every available variant has AVX2/FMA/F16C).
        unsafe { rows_avx2(w, a, first, out) }
    }
}
