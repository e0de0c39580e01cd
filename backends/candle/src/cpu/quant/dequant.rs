//! Block-quantized weights to f32 with AVX2, for the prompt path: slices of weight rows are
//! dequantized as they are packed for the f32 matrix product (the codes and scales of
//! [`super::formats`], eight values per conversion).

#![cfg(target_arch = "x86_64")]

use super::formats::{self as f, Format, Scales};
use std::arch::x86_64::*;
use switchyard_runtime::DType;

/// Eight codes (bytes `8q .. 8q + 8` of `u`) as f32.
#[inline(always)]
unsafe fn eight(u: __m256i, q: usize, signed: bool) -> __m256 {
    let half = if q < 2 {
        _mm256_castsi256_si128(u)
    } else {
        _mm256_extracti128_si256::<1>(u)
    };
    let bytes = if q.is_multiple_of(2) {
        half
    } else {
        _mm_srli_si128::<8>(half)
    };
    let ints = if signed {
        _mm256_cvtepi8_epi32(bytes)
    } else {
        _mm256_cvtepu8_epi32(bytes)
    };
    _mm256_cvtepi32_ps(ints)
}

#[inline(always)]
unsafe fn blocks<F: Format>(p: *const u8, nblocks: usize, out: *mut f32) {
    let mut sc = Scales::ZERO;
    for b in 0..nblocks {
        let blk = p.add(b * F::BYTES);
        F::scales(blk, &mut sc);
        for g in 0..F::VALUES / 32 {
            let u = F::codes(blk, g);
            for q in 0..4 {
                let sub = 2 * g + q / 2;
                let (m, add) = if F::MIN {
                    (sc.mult[sub], sc.min)
                } else {
                    (sc.mult[sub], -sc.off[sub])
                };
                let v = _mm256_fmadd_ps(
                    eight(u, q, F::SIGNED),
                    _mm256_set1_ps(m),
                    _mm256_set1_ps(add),
                );
                _mm256_storeu_ps(out.add(b * F::VALUES + 32 * g + 8 * q), v);
            }
        }
    }
}

/// Dequantizes `bytes` (whole blocks of `dtype`) into `out` (`out.len()` values).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `bytes` holds whole blocks and `out` as many values.
#[inline(always)]
pub(crate) unsafe fn into(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let n = bytes.len() / dtype.block_bytes();
    debug_assert_eq!(n * dtype.block_len(), out.len());
    let (p, o) = (bytes.as_ptr(), out.as_mut_ptr());
    match dtype {
        DType::Q4_0 => blocks::<f::Q4_0>(p, n, o),
        DType::Q4_1 => blocks::<f::Q4_1>(p, n, o),
        DType::Q5_0 => blocks::<f::Q5_0>(p, n, o),
        DType::Q5_1 => blocks::<f::Q5_1>(p, n, o),
        DType::Q8_0 => blocks::<f::Q8_0>(p, n, o),
        DType::Q2K => blocks::<f::Q2K>(p, n, o),
        DType::Q3K => blocks::<f::Q3K>(p, n, o),
        DType::Q4K => blocks::<f::Q4K>(p, n, o),
        DType::Q5K => blocks::<f::Q5K>(p, n, o),
        DType::Q6K => blocks::<f::Q6K>(p, n, o),
        other => unreachable!("{other} is not block-quantized"),
    }
}
