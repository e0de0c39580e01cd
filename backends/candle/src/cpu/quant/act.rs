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
//! Each block also records `Σq` per 16 values (what offset formats subtract).

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

/// Quantizes `x` (a multiple of the format's block long).
pub(crate) fn quantize(x: &[f32], format: ActFormat) -> QActs {
    let bl = format.block();
    debug_assert!(x.len().is_multiple_of(bl));
    let blocks = x.len() / bl;
    let mut qs = vec![0i8; x.len()];
    let mut d = vec![0f32; blocks];
    let mut s = vec![0f32; if format == ActFormat::Q8_1 { blocks } else { 0 }];
    for (b, (xb, qb)) in x.chunks_exact(bl).zip(qs.chunks_exact_mut(bl)).enumerate() {
        match format {
            ActFormat::Q8_0 | ActFormat::Q8_1 => {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let mut sum = 0i32;
                for (q, &v) in qb.iter_mut().zip(xb) {
                    *q = round(v * inv) as i8;
                    sum += *q as i32;
                }
                d[b] = f16::from_f32(scale).to_f32();
                if format == ActFormat::Q8_1 {
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
            let a = quantize(&x, format);
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
        let zeros = quantize(&[0.0; 256], ActFormat::Q8K);
        assert_eq!(zeros.d[0], 0.0);
        assert!(zeros.qs.iter().all(|&q| q == 0));
    }

    /// The largest magnitude maps to -127 in Q8_K, whatever its sign (llama.cpp's convention).
    #[test]
    fn q8k_maps_the_extreme_to_minus_127() {
        let mut x = vec![0.5f32; 256];
        x[3] = 2.0;
        let a = quantize(&x, ActFormat::Q8K);
        assert_eq!(a.qs[3], -127);
        assert!(a.d[0] < 0.0);
    }
}
