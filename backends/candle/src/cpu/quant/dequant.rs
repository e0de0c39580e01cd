//! Block-quantized rows to f32, fast enough to run once per weight per prompt: the matrix product
//! for prompts dequantizes each slice of weights as it packs it for the f32 kernel.

use half::f16;
use switchyard_runtime::DType;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
        *l = ((q & 0x0F) as i32 - 8) as f32 * d;
        *h = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

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

fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let s = &b[4..16];
    let scale_min = |j: usize| -> (f32, f32) {
        if j < 4 {
            ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
        } else {
            (
                ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4)) as f32,
                ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f32,
            )
        }
    };
    for c in 0..4 {
        let q = &b[16 + 32 * c..16 + 32 * c + 32];
        let (s1, m1) = scale_min(2 * c);
        let (s2, m2) = scale_min(2 * c + 1);
        let (d1, o1, d2, o2) = (d * s1, dmin * m1, d * s2, dmin * m2);
        let (lo, hi) = out[64 * c..64 * c + 64].split_at_mut(32);
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *l = d1 * (v & 0x0F) as f32 - o1;
            *h = d2 * (v >> 4) as f32 - o2;
        }
    }
}

fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut out[128 * n..128 * n + 128];
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

/// Dequantizes whole blocks `bytes` of `dtype` into `out` (as many values as the blocks hold).
pub(crate) fn dequantize_into(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let (bl, bb) = (dtype.block_len(), dtype.block_bytes());
    debug_assert_eq!(bytes.len() / bb * bl, out.len());
    let f: fn(&[u8], &mut [f32]) = match dtype {
        DType::Q8_0 => q8_0,
        DType::Q4_0 => q4_0,
        DType::Q5_0 => q5_0,
        DType::Q4K => q4_k,
        DType::Q6K => q6_k,
        _ => {
            let v = switchyard_runtime::quant::dequantize(dtype, bytes)
                .expect("whole blocks of a quantized type");
            out.copy_from_slice(&v);
            return;
        }
    };
    for (b, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
        f(b, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_dequantization() {
        for dtype in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q5_0,
            DType::Q4K,
            DType::Q6K,
            DType::Q4_1,
        ] {
            let bytes = super::super::tests::random_blocks(dtype, 3, 7);
            let want = switchyard_runtime::quant::dequantize(dtype, &bytes).unwrap();
            let mut got = vec![0f32; want.len()];
            dequantize_into(dtype, &bytes, &mut got);
            assert_eq!(got, want, "{dtype}");
        }
    }
}
