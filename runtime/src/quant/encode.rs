//! Reference quantization into the GGUF block formats: the inverse of [`super::dequantize`].
//!
//! Plain round-to-nearest encoders written from the block layouts (per block or sub-block a
//! scale from the extreme value, scales themselves quantized where the format stores them in
//! 4, 6 or 8 bits). They are not llama.cpp's quantizers (whose k-quant search for scales is
//! iterative) and need not be: they produce valid blocks of realistic values, for tests and
//! conformance cases that must not depend on a backend's own quantizer.

use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;

/// Quantizes `values` (whole blocks of `dtype`) into `dtype`'s block bytes.
pub fn quantize(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    let (bb, bl) = (dtype.block_bytes(), dtype.block_len());
    if !dtype.is_quantized() || !values.len().is_multiple_of(bl) {
        return Err(Error::InvalidTensor(format!(
            "cannot quantize {} values as {dtype} (blocks of {bl})",
            values.len()
        )));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidTensor(format!(
            "cannot quantize the non-finite value {v} as {dtype}"
        )));
    }
    let block: fn(&[f32], &mut [u8]) = match dtype {
        DType::Q4_0 => |x, b| signed_32(x, b, 4),
        DType::Q5_0 => |x, b| signed_32(x, b, 5),
        DType::Q4_1 => |x, b| affine_32(x, b, 4),
        DType::Q5_1 => |x, b| affine_32(x, b, 5),
        DType::Q8_0 => q8_0,
        DType::Q2K => q2_k,
        DType::Q3K => q3_k,
        DType::Q4K => |x, b| k_affine(x, b, 4),
        DType::Q5K => |x, b| k_affine(x, b, 5),
        DType::Q6K => q6_k,
        _ => unreachable!("checked is_quantized above"),
    };
    let mut out = vec![0u8; values.len() / bl * bb];
    for (x, b) in values.chunks_exact(bl).zip(out.chunks_exact_mut(bb)) {
        block(x, b);
    }
    Ok(out)
}

/// `v` rounded to f16, as stored, and its bytes.
fn half(v: f32) -> (f32, [u8; 2]) {
    let h = f16::from_f32(v);
    (h.to_f32(), h.to_le_bytes())
}

/// The element of largest magnitude, with its sign.
fn signed_max(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

fn code(x: f32, inv: f32, offset: f32, max: i32) -> u8 {
    ((x * inv + offset).round() as i32).clamp(0, max) as u8
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Q8_0: `d = max|x| / 127`, `q = round(x / d)`.
fn q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, bytes) = half(amax / 127.0);
    b[0..2].copy_from_slice(&bytes);
    let inv = inverse(d);
    for (o, &v) in b[2..34].iter_mut().zip(x) {
        *o = ((v * inv).round().clamp(-127.0, 127.0) as i8) as u8;
    }
}

/// Q4_0 / Q5_0: `value = d·(q - 2^(bits-1))`, `d` chosen so the extreme value maps to code 0.
fn signed_32(x: &[f32], b: &mut [u8], bits: u32) {
    let half_range = (1 << (bits - 1)) as f32;
    let (d, bytes) = half(signed_max(x) / -half_range);
    b[0..2].copy_from_slice(&bytes);
    let inv = inverse(d);
    let max = (1 << bits) - 1;
    let q: Vec<u8> = x.iter().map(|&v| code(v, inv, half_range, max)).collect();
    let qs = if bits == 4 {
        &mut b[2..18]
    } else {
        &mut b[6..22]
    };
    pack_nibbles(&q, qs);
    if bits == 5 {
        b[2..6].copy_from_slice(&high_bits(&q).to_le_bytes());
    }
}

/// Q4_1 / Q5_1: `value = d·q + m` from the block's minimum and maximum.
fn affine_32(x: &[f32], b: &mut [u8], bits: u32) {
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = (1 << bits) - 1;
    let (d, dbytes) = half((hi - lo) / max as f32);
    let (m, mbytes) = half(lo);
    b[0..2].copy_from_slice(&dbytes);
    b[2..4].copy_from_slice(&mbytes);
    let inv = inverse(d);
    let q: Vec<u8> = x.iter().map(|&v| code(v - m, inv, 0.0, max)).collect();
    let qs = if bits == 4 {
        &mut b[4..20]
    } else {
        &mut b[8..24]
    };
    pack_nibbles(&q, qs);
    if bits == 5 {
        b[4..8].copy_from_slice(&high_bits(&q).to_le_bytes());
    }
}

/// Element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble.
fn pack_nibbles(q: &[u8], qs: &mut [u8]) {
    for (j, o) in qs.iter_mut().enumerate() {
        *o = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
    }
}

/// Bit `j` is the fifth bit of element `j`.
fn high_bits(q: &[u8]) -> u32 {
    q.iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | (((v as u32 >> 4) & 1) << j))
}

/// Scale and minimum codes of a super-block's sub-blocks: each sub-block's `(scale, min)` in
/// f32 is quantized to `levels` codes against a shared `d` and `dmin` (f16).
fn sub_scales(scale: &[f32], mins: &[f32], levels: f32) -> (f32, f32, Vec<u8>, Vec<u8>) {
    let (d, _) = half(scale.iter().copied().fold(0f32, f32::max) / levels);
    let (dmin, _) = half(mins.iter().copied().fold(0f32, f32::max) / levels);
    let sc = scale
        .iter()
        .map(|&s| (s * inverse(d)).round().clamp(0.0, levels) as u8)
        .collect();
    let mn = mins
        .iter()
        .map(|&m| (m * inverse(dmin)).round().clamp(0.0, levels) as u8)
        .collect();
    (d, dmin, sc, mn)
}

/// Per sub-block: the step for `max_code` codes covering `[min(0, lo), hi]`, and `-min(0, lo)`.
fn affine_sub(x: &[f32], max_code: f32) -> (f32, f32) {
    let lo = x.iter().copied().fold(0f32, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    ((hi - lo) / max_code, -lo)
}

/// Q4_K / Q5_K: eight sub-blocks of 32, `value = d·sc·q - dmin·m` with 6-bit `sc` and `m`.
fn k_affine(x: &[f32], b: &mut [u8], bits: u32) {
    let max_code = ((1 << bits) - 1) as f32;
    let (steps, mins): (Vec<f32>, Vec<f32>) =
        x.chunks_exact(32).map(|s| affine_sub(s, max_code)).unzip();
    let (d, dmin, sc, mn) = sub_scales(&steps, &mins, 63.0);
    b[0..2].copy_from_slice(&half(d).1);
    b[2..4].copy_from_slice(&half(dmin).1);
    let scales = &mut b[4..16];
    scales.fill(0);
    for j in 0..8 {
        if j < 4 {
            scales[j] = sc[j];
            scales[j + 4] = mn[j];
        } else {
            scales[j + 4] = (sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4);
            scales[j - 4] |= (sc[j] >> 4) << 6;
            scales[j] |= (mn[j] >> 4) << 6;
        }
    }
    let q: Vec<u8> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = i / 32;
            let step = d * sc[j] as f32;
            code(v + dmin * mn[j] as f32, inverse(step), 0.0, max_code as i32)
        })
        .collect();
    let (qh_at, qs_at) = if bits == 4 { (16, 16) } else { (16, 48) };
    if bits == 5 {
        b[qh_at..qh_at + 32].fill(0);
    }
    for chunk in 0..4 {
        for l in 0..32 {
            let (lo, hi) = (q[64 * chunk + l], q[64 * chunk + 32 + l]);
            b[qs_at + 32 * chunk + l] = (lo & 0x0F) | ((hi & 0x0F) << 4);
            if bits == 5 {
                let bits_here = ((lo >> 4) & 1) << (2 * chunk) | ((hi >> 4) & 1) << (2 * chunk + 1);
                b[qh_at + l] |= bits_here;
            }
        }
    }
}

/// Where element `e` (0..256) of a Q2_K / Q3_K super-block lives: byte `half·32 + part·16 + l`
/// of the 2-bit codes, at bit `2·g`, with `e = half·128 + g·32 + part·16 + l`.
fn two_bit_slot(e: usize) -> (usize, u32) {
    let (half, r) = (e / 128, e % 128);
    let (g, r) = (r / 32, r % 32);
    (half * 32 + r, 2 * g as u32)
}

/// Q2_K: sixteen sub-blocks of 16, `value = d·sc·q - dmin·m`, 4-bit `sc` and `m`, 2-bit `q`.
fn q2_k(x: &[f32], b: &mut [u8]) {
    let (steps, mins): (Vec<f32>, Vec<f32>) =
        x.chunks_exact(16).map(|s| affine_sub(s, 3.0)).unzip();
    let (d, dmin, sc, mn) = sub_scales(&steps, &mins, 15.0);
    for j in 0..16 {
        b[j] = sc[j] | (mn[j] << 4);
    }
    b[16..80].fill(0);
    for (e, &v) in x.iter().enumerate() {
        let j = e / 16;
        let q = code(v + dmin * mn[j] as f32, inverse(d * sc[j] as f32), 0.0, 3);
        let (at, shift) = two_bit_slot(e);
        b[16 + at] |= q << shift;
    }
    b[80..82].copy_from_slice(&half(d).1);
    b[82..84].copy_from_slice(&half(dmin).1);
}

/// Q3_K: sixteen sub-blocks of 16, `value = d·s·(q - 4)`, 6-bit signed `s` (stored + 32),
/// 3-bit `q` (two low bits with the 2-bit codes, the third in `hmask`).
fn q3_k(x: &[f32], b: &mut [u8]) {
    let subs: Vec<f32> = x.chunks_exact(16).map(|s| signed_max(s) / -4.0).collect();
    let amax = subs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, dbytes) = half(amax / 31.0);
    let s: Vec<i32> = subs
        .iter()
        .map(|&v| ((v * inverse(d)).round() as i32).clamp(-32, 31))
        .collect();
    b.fill(0);
    for (i, &si) in s.iter().enumerate() {
        let u = (si + 32) as u8;
        if i < 8 {
            b[96 + i] |= u & 0x0F;
        } else {
            b[96 + i - 8] |= (u & 0x0F) << 4;
        }
        b[96 + 8 + i % 4] |= ((u >> 4) & 3) << (2 * (i / 4));
    }
    for (e, &v) in x.iter().enumerate() {
        let step = d * s[e / 16] as f32;
        let q = code(v, inverse(step), 4.0, 7);
        let (at, shift) = two_bit_slot(e);
        b[32 + at] |= (q & 3) << shift;
        if q & 4 != 0 {
            let idx = at % 32;
            let bit = (e / 128) * 4 + (shift / 2) as usize;
            b[idx] |= 1 << bit;
        }
    }
    b[108..110].copy_from_slice(&dbytes);
}

/// Q6_K: sixteen sub-blocks of 16, `value = d·sc·(q - 32)`, 8-bit signed `sc`, 6-bit `q`.
fn q6_k(x: &[f32], b: &mut [u8]) {
    let subs: Vec<f32> = x.chunks_exact(16).map(|s| signed_max(s) / -32.0).collect();
    let amax = subs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, dbytes) = half(amax / 127.0);
    let sc: Vec<i8> = subs
        .iter()
        .map(|&v| (v * inverse(d)).round().clamp(-128.0, 127.0) as i8)
        .collect();
    b.fill(0);
    for half_i in 0..2 {
        for l in 0..32 {
            let q = |g: usize| {
                let e = half_i * 128 + g * 32 + l;
                code(x[e], inverse(d * sc[e / 16] as f32), 32.0, 63)
            };
            let (q1, q2, q3, q4) = (q(0), q(1), q(2), q(3));
            let ql = &mut b[half_i * 64..half_i * 64 + 64];
            ql[l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            ql[l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            b[128 + half_i * 32 + l] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
        for j in 0..8 {
            b[192 + half_i * 8 + j] = sc[half_i * 8 + j] as u8;
        }
    }
    b[208..210].copy_from_slice(&dbytes);
}

#[cfg(test)]
mod tests {
    use super::super::dequantize;
    use super::*;

    /// Values of several magnitudes and signs, with an outlier per 64.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let u = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32;
                let v = (u - 0.5) * 2.0;
                if i % 64 == 7 {
                    v * 9.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Each format's worst rounding error, bounded per block from its own step sizes: a
    /// round-to-nearest code is within half a step, scale codes add their own rounding, so the
    /// bound is stated per format as a fraction of the block's range (`max - min`).
    #[test]
    fn round_trips_within_each_formats_step() {
        for (dtype, frac) in [
            (DType::Q8_0, 0.5 / 127.0 * 2.0),
            (DType::Q4_0, 0.5 / 8.0 + 0.01),
            (DType::Q5_0, 0.5 / 16.0 + 0.01),
            (DType::Q4_1, 0.5 / 15.0 + 0.01),
            (DType::Q5_1, 0.5 / 31.0 + 0.01),
            // k-quants: the 4- or 6-bit scale codes round too (half a scale step, relative to
            // the largest sub-block scale), on top of half a value step.
            (DType::Q2K, 0.5 / 3.0 + 0.5 / 15.0 * 3.0 + 0.02),
            (DType::Q3K, 0.5 / 4.0 + 0.5 / 31.0 * 4.0 + 0.02),
            (DType::Q4K, 0.5 / 15.0 + 0.5 / 63.0 * 15.0 + 0.02),
            (DType::Q5K, 0.5 / 31.0 + 0.5 / 63.0 * 31.0 + 0.02),
            (DType::Q6K, 0.5 / 32.0 + 0.5 / 127.0 * 32.0 + 0.02),
        ] {
            let x = values(4 * 256, dtype as u32);
            let back = dequantize(dtype, &quantize(dtype, &x).unwrap()).unwrap();
            for (b, (xs, ys)) in x
                .chunks(dtype.block_len())
                .zip(back.chunks(dtype.block_len()))
                .enumerate()
            {
                let range = xs.iter().copied().fold(0f32, |m, v| m.max(v.abs())) * 2.0;
                for (i, (a, r)) in xs.iter().zip(ys).enumerate() {
                    assert!(
                        (a - r).abs() <= frac * range + 1e-6,
                        "{dtype} block {b} element {i}: {a} came back as {r} (range {range})"
                    );
                }
            }
        }
    }

    #[test]
    fn zeros_and_bad_input() {
        for dtype in crate::dtype::ALL_DTYPES
            .into_iter()
            .filter(|d| d.is_quantized())
        {
            let n = dtype.block_len();
            let back = dequantize(dtype, &quantize(dtype, &vec![0.0; n]).unwrap()).unwrap();
            assert!(back.iter().all(|v| *v == 0.0), "{dtype}: {back:?}");
            assert!(quantize(dtype, &vec![0.0; n + 1]).is_err());
            assert!(quantize(dtype, &vec![f32::NAN; n]).is_err());
        }
        assert!(quantize(DType::F32, &[1.0]).is_err());
    }
}
