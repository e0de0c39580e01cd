//! Activations quantized for integer dot products with block-quantized weights, exactly as
//! llama.cpp quantizes them for each weight type, so the two compute the same rounded products:
//!
//! - [`ActFormat::Q8_0`] (for q4_0, q5_0, q8_0 weights): blocks of 32, `d = max|x| / 127` stored
//!   as f16, `q = round(x · 127 / max|x|)` (ties to even);
//! - [`ActFormat::Q8_1`] (q4_1, q5_1): the same, plus `s = d · Σq` stored as f16 (what a
//!   weight's minimum multiplies);
//! - [`ActFormat::Q8K`] (the k-quants): blocks of 256, the largest-magnitude value `max` maps to
//!   -127 (`d = -max / 127` in f32), `q = min(127, round(x / d))`.
//!
//! Each block also records `Σq` per 16 values (what offset formats subtract). With AVX2 the
//! 32-value blocks are quantized eight values at a time to the same bits; the scalar loop took
//! 9% of a 16-row q4_0 decode step (perf, Sapphire Rapids), the vector one 2.6%.

use super::super::kernels::Isa;
use half::f16;

/// How activations are quantized for a weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActFormat {
    /// 32-value blocks, f16 scale.
    Q8_0,
    /// 32-value blocks, f16 scale and f16 scaled sum.
    Q8_1,
    /// 256-value blocks, f32 scale.
    Q8K,
}

impl ActFormat {
    /// Values per scale.
    pub fn block(self) -> usize {
        match self {
            ActFormat::Q8_0 | ActFormat::Q8_1 => 32,
            ActFormat::Q8K => 256,
        }
    }
}

/// One activation row, quantized.
pub(crate) struct QActs {
    /// The format.
    pub format: ActFormat,
    /// `K` values (64-byte aligned start not required: loads are unaligned).
    pub qs: Vec<i8>,
    /// Per block: the scale.
    pub d: Vec<f32>,
    /// Per block (Q8_1): `d · Σq` as stored (f16).
    pub s: Vec<f32>,
    /// Per 16 values: `Σq`.
    pub sum16: Vec<i32>,
    /// Per 32 values: `d · Σq` (what a constant weight offset multiplies).
    pub dsum32: Vec<f32>,
}

/// Round to nearest, ties to even, as llama.cpp's vectorized quantizers (`_mm256_round_ps`) and
/// its `nearest_int` do: adding 1.5·2²³ leaves the integer part in the mantissa, rounded by the
/// FPU's default mode (exact for |x| < 2²²; activations here are at most 127.5).
#[inline(always)]
fn round(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// `max|x|` of a 32-value block and its codes `round(x · inv)` where `inv = 127 / max|x|` (0
/// for an all-zero block): the same operations as [`q8_block`], eight at a time, so the same
/// bits (a NaN is skipped by the maximum and quantizes to 0 in both).
///
/// # Safety
/// AVX2 is enabled. (`x` and `q` must hold 32 values: asserted.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn q8_block_avx2(x: &[f32], q: &mut [i8]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() == 32 && q.len() == 32);
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
    let sign = _mm256_set1_ps(-0.0);
    // `max(|v|, m)` keeps `m` where `v` is NaN, as `f32::max` does.
    let mut m = _mm256_setzero_ps();
    for v in v {
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v), m);
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)));
    let inv = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let magic = _mm256_set1_ps(12_582_912.0);
    let i: [__m256i; 4] = std::array::from_fn(|k| {
        let r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v[k], inv), magic), magic);
        // A NaN (a NaN or infinite input) converts to 0, as Rust's `as i8` does.
        let ordered = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
        _mm256_and_si256(_mm256_cvtps_epi32(r), ordered)
    });
    // Packing interleaves the 128-bit halves; the permutation puts the codes back in order.
    let w = _mm256_packs_epi16(
        _mm256_packs_epi32(i[0], i[1]),
        _mm256_packs_epi32(i[2], i[3]),
    );
    let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, w);
    amax
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_avx2(x: &[f32], format: ActFormat) -> QActs {
    // SAFETY: AVX2 is enabled here.
    quantize_with(x, format, |xb, qb| unsafe { q8_block_avx2(xb, qb) })
}

/// Quantizes `x` (a multiple of the format's block long), with AVX2 where `isa` has it: the
/// same bits either way.
pub(crate) fn quantize(isa: Isa, x: &[f32], format: ActFormat) -> QActs {
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() {
        // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they include
        // AVX2, FMA and F16C.
        return unsafe { quantize_avx2(x, format) };
    }
    let _ = isa;
    quantize_with(x, format, q8_block)
}

/// [`q8_block_avx2`] one value at a time.
#[inline(always)]
fn q8_block(xb: &[f32], qb: &mut [i8]) -> f32 {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qb.iter_mut().zip(xb) {
        *q = round(v * inv) as i8;
    }
    amax
}

/// [`quantize`] with `q8` quantizing a 32-value block of the Q8_0/Q8_1 formats (returning its
/// `max|x|`).
#[inline(always)]
fn quantize_with(x: &[f32], format: ActFormat, q8: impl Fn(&[f32], &mut [i8]) -> f32) -> QActs {
    let bl = format.block();
    debug_assert!(x.len().is_multiple_of(bl));
    let blocks = x.len() / bl;
    let mut qs = vec![0i8; x.len()];
    let mut d = vec![0f32; blocks];
    let mut s = vec![0f32; if format == ActFormat::Q8_1 { blocks } else { 0 }];
    for (b, (xb, qb)) in x.chunks_exact(bl).zip(qs.chunks_exact_mut(bl)).enumerate() {
        match format {
            ActFormat::Q8_0 | ActFormat::Q8_1 => {
                let amax = q8(xb, qb);
                let scale = amax / 127.0;
                d[b] = f16::from_f32(scale).to_f32();
                if format == ActFormat::Q8_1 {
                    let sum: i32 = qb.iter().map(|&q| q as i32).sum();
                    s[b] = f16::from_f32(scale * sum as f32).to_f32();
                }
            }
            ActFormat::Q8K => {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in xb {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                if amax == 0.0 {
                    qb.fill(0);
                    d[b] = 0.0;
                    continue;
                }
                let iscale = -127.0 / max;
                for (q, &v) in qb.iter_mut().zip(xb) {
                    *q = (round(iscale * v) as i32).min(127) as i8;
                }
                d[b] = 1.0 / iscale;
            }
        }
    }
    let sum16: Vec<i32> = qs
        .chunks_exact(16)
        .map(|c| c.iter().map(|&q| q as i32).sum())
        .collect();
    let dsum32 = sum16
        .chunks_exact(2)
        .enumerate()
        .map(|(i, s)| d[i * 32 / bl] * (s[0] + s[1]) as f32)
        .collect();
    QActs {
        format,
        qs,
        d,
        s,
        sum16,
        dsum32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
            .collect();
        for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
            let a = quantize(Isa::PORTABLE, &x, format);
            let bl = format.block();
            for (b, xb) in x.chunks(bl).enumerate() {
                // Half a step, plus the f16 rounding of the stored scale (2^-11 of it, times
                // 127 steps).
                let slack = a.d[b].abs() * (0.5 + 127.0 / 2048.0) + 1e-6;
                for (i, &v) in xb.iter().enumerate() {
                    let back = a.qs[b * bl + i] as f32 * a.d[b];
                    assert!((back - v).abs() <= slack, "{format:?}: {v} vs {back}");
                }
            }
            for (j, c) in a.qs.chunks(16).enumerate() {
                assert_eq!(a.sum16[j], c.iter().map(|&q| q as i32).sum::<i32>());
            }
        }
        let zeros = quantize(Isa::PORTABLE, &[0.0; 256], ActFormat::Q8K);
        assert_eq!(zeros.d[0], 0.0);
        assert!(zeros.qs.iter().all(|&q| q == 0));
    }

    /// The largest magnitude maps to -127 in Q8_K, whatever its sign (llama.cpp's convention).
    #[test]
    fn q8k_maps_the_extreme_to_minus_127() {
        let mut x = vec![0.5f32; 256];
        x[3] = 2.0;
        let a = quantize(Isa::PORTABLE, &x, ActFormat::Q8K);
        assert_eq!(a.qs[3], -127);
        assert!(a.d[0] < 0.0);
    }

    /// Every kernel variant quantizes to the same bits as the scalar loop (the reference the
    /// integer products are checked against), ties, zeros, NaN and infinities included.
    #[test]
    fn every_variant_quantizes_to_the_same_bits() {
        let mut x: Vec<f32> = (0..4096)
            .map(|i| (((i * 7919) % 2003) as f32 - 1001.0) / 37.0)
            .collect();
        // A block whose values land on half steps (ties to even), an all-zero block, a block
        // with a NaN, one with an infinity, one with only -0.0 and tiny values.
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.5;
        }
        x[96..128].fill(0.0);
        x[130] = f32::NAN;
        x[170] = f32::INFINITY;
        x[192..224]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = -1e-30 * i as f32);
        for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
            let want = quantize(Isa::PORTABLE, &x, format);
            for isa in Isa::all_here() {
                let got = quantize(isa, &x, format);
                assert_eq!(got.qs, want.qs, "{isa} {format:?}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.d), bits(&want.d), "{isa} {format:?}");
                assert_eq!(bits(&got.s), bits(&want.s), "{isa} {format:?}");
                assert_eq!(got.sum16, want.sum16, "{isa} {format:?}");
            }
        }
    }
}
