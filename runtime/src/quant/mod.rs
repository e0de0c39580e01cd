//! Reference dequantization of the GGUF block formats.
//!
//! Plain, scalar code written from the published block layouts; it is the oracle that backends'
//! quantized kernels are checked against, so it favours clarity over speed.

mod encode;

pub use encode::quantize;

use crate::dtype::DType;
use crate::error::{Error, Result};
use half::f16;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `dtype`) to f32 values.
pub fn dequantize(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    let mut out = vec![0f32; bytes.len() / dtype.block_bytes() * dtype.block_len()];
    dequantize_into(dtype, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes `bytes` (whole blocks of `dtype`) into `out`, which must hold exactly as many
/// values as the blocks do (backends use it on weight slices without allocating).
pub fn dequantize_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let (bb, bl) = (dtype.block_bytes(), dtype.block_len());
    if !dtype.is_quantized()
        || !bytes.len().is_multiple_of(bb)
        || bytes.len() / bb * bl != out.len()
    {
        return Err(Error::InvalidTensor(format!(
            "cannot dequantize {} bytes as {dtype} into {} values",
            bytes.len(),
            out.len()
        )));
    }
    let block: fn(&[u8], &mut [f32]) = match dtype {
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q5_0 => q5_0,
        DType::Q5_1 => q5_1,
        DType::Q8_0 => q8_0,
        DType::Q2K => q2_k,
        DType::Q3K => q3_k,
        DType::Q4K => q4_k,
        DType::Q5K => q5_k,
        DType::Q6K => q6_k,
        _ => unreachable!("checked is_quantized above"),
    };
    for (b, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
        block(b, o);
    }
    Ok(())
}

/// Sequential writes into one block's values.
struct Writer<'a>(&'a mut [f32], usize);

impl Writer<'_> {
    fn push(&mut self, v: f32) {
        self.0[self.1] = v;
        self.1 += 1;
    }

    fn extend(&mut self, values: impl IntoIterator<Item = f32>) {
        for v in values {
            self.push(v);
        }
    }
}

/// Byte offsets of the f16 scale fields in one block of `dtype` (used to generate valid random
/// blocks: every other byte of a block may take any value).
pub fn scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 => &[0, 2],
        DType::Q2K => &[80, 82],
        DType::Q3K => &[108],
        DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q6K => &[208],
        _ => &[],
    }
}

// Q4_0: d (f16), qs[16]; element j = low nibble of qs[j], element j+16 = high nibble; minus 8.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
        *l = ((q & 0x0F) as i32 - 8) as f32 * d;
        *h = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

// Q4_1: d, m (f16), qs[16]; value = d * q + m.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let mut w = Writer(out, 0);
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    let lo = qs.iter().map(|q| (q & 0x0F) as f32 * d + m);
    let hi = qs.iter().map(|q| (q >> 4) as f32 * d + m);
    w.extend(lo.chain(hi));
}

// Q5_0: d (f16), qh (u32: the fifth bit of each element), qs[16]; minus 16.
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let (lo, hi) = out.split_at_mut(16);
    for (j, ((l, h), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[6..22]).enumerate() {
        let h0 = (((qh >> j) & 1) << 4) as i32;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as i32;
        *l = (((q & 0x0F) as i32 | h0) - 16) as f32 * d;
        *h = (((q >> 4) as i32 | h1) - 16) as f32 * d;
    }
}

// Q5_1: d, m (f16), qh (u32), qs[16]; value = d * q + m.
fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        out[j] = (((qs[j] & 0x0F) as u32) | h0) as f32 * d + m;
        out[j + 16] = (((qs[j] >> 4) as u32) | h1) as f32 * d + m;
    }
}

// Q8_0: d (f16), qs[32] (i8).
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

// The 6-bit scale and minimum of sub-block `j` packed in the 12-byte `scales` of Q4_K / Q5_K.
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
    } else {
        let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

// Q2_K: scales[16] (low nibble scale, high nibble minimum), qs[64], d, dmin (f16).
fn q2_k(b: &[u8], out: &mut [f32]) {
    let mut w = Writer(out, 0);
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for &v in &q[part * 16..part * 16 + 16] {
                    w.push(dl * ((v >> shift) & 3) as f32 - ml);
                }
            }
        }
    }
}

// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales, offset by 32), d (f16).
fn q3_k(b: &[u8], out: &mut [f32]) {
    let mut w = Writer(out, 0);
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let raw = &b[96..108];
    let d = f16_at(b, 108);
    // Unpack the sixteen 6-bit scales: low 4 bits from bytes 0..8, high 2 bits from bytes 8..12.
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 {
            raw[i] & 0x0F
        } else {
            raw[i - 8] >> 4
        };
        let high = (raw[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = ((low | (high << 4)) as i32) - 32;
    }
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let idx = part * 16 + l;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let sub = if hmask[idx] & m != 0 { 0 } else { 4 };
                    w.push(dl * (low - sub) as f32);
                }
            }
            m <<= 1;
        }
    }
}

// Q4_K: d, dmin (f16), scales[12], qs[128].
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for chunk in 0..4 {
        let q = &b[16 + chunk * 32..16 + chunk * 32 + 32];
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, o1, d2, o2) = (d * s1, dmin * m1, d * s2, dmin * m2);
        let (lo, hi) = out[64 * chunk..64 * chunk + 64].split_at_mut(32);
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *l = d1 * (v & 0x0F) as f32 - o1;
            *h = d2 * (v >> 4) as f32 - o2;
        }
    }
}

// Q5_K: d, dmin (f16), scales[12], qh[32], qs[128].
fn q5_k(b: &[u8], out: &mut [f32]) {
    let mut w = Writer(out, 0);
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for l in 0..32 {
            let hi = if qh[l] & u1 != 0 { 16 } else { 0 };
            w.push(d * s1 * ((q[l] & 0x0F) + hi) as f32 - dmin * m1);
        }
        for l in 0..32 {
            let hi = if qh[l] & u2 != 0 { 16 } else { 0 };
            w.push(d * s2 * ((q[l] >> 4) + hi) as f32 - dmin * m2);
        }
    }
}

// Q6_K: ql[128], qh[64], scales[16] (i8), d (f16).
fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut out[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q8_0_by_hand() {
        let mut b = vec![0u8; 34];
        b[0..2].copy_from_slice(&f16_bytes(0.5));
        for i in 0..32 {
            b[2 + i] = (i as i8 - 16) as u8;
        }
        let v = dequantize(DType::Q8_0, &b).unwrap();
        assert_eq!(v[0], -8.0);
        assert_eq!(v[31], 7.5);
    }

    #[test]
    fn q4_0_by_hand() {
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&f16_bytes(2.0));
        b[2] = 0xF0; // element 0: low nibble 0 -> -8; element 16: high nibble 15 -> 7
        let v = dequantize(DType::Q4_0, &b).unwrap();
        assert_eq!(v[0], -16.0);
        assert_eq!(v[16], 14.0);
        assert_eq!(v[1], -16.0);
    }

    #[test]
    fn q4_k_by_hand() {
        // d = 1, dmin = 1, sub-block 0 scale 2 min 1, all nibbles 3 -> 2*3 - 1 = 5.
        let mut b = vec![0u8; 144];
        b[0..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(1.0));
        b[4] = 2; // scale of sub-block 0
        b[8] = 1; // minimum of sub-block 0
        for q in &mut b[16..144] {
            *q = 0x33;
        }
        let v = dequantize(DType::Q4K, &b).unwrap();
        assert_eq!(v[0], 5.0);
        // Sub-block 1 has scale 0 and minimum 0.
        assert_eq!(v[32], 0.0);
    }

    #[test]
    fn q6_k_by_hand() {
        // All 6-bit values 32 + 1 = 33 -> q = 1; scales 3; d = 0.5 -> 1.5 everywhere.
        let mut b = vec![0u8; 210];
        for q in &mut b[0..128] {
            *q = 0x11;
        }
        for q in &mut b[128..192] {
            *q = 0b1010_1010;
        }
        for s in &mut b[192..208] {
            *s = 3;
        }
        b[208..210].copy_from_slice(&f16_bytes(0.5));
        let v = dequantize(DType::Q6K, &b).unwrap();
        assert!(v.iter().all(|&x| x == 1.5), "{:?}", &v[..8]);
    }

    #[test]
    fn rejects_partial_blocks() {
        assert!(dequantize(DType::Q4K, &[0u8; 100]).is_err());
        assert!(dequantize(DType::F32, &[0u8; 4]).is_err());
    }
}
