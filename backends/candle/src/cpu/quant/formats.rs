//! The GGUF block formats as the integer kernels read them, in place: for each block, the scale
//! of every 16 values, and for each group of 32 values their codes as 32 bytes. A weight value is
//! `mult · code - off` (per 16 values), or `mult · code + min` for the 32-value formats with a
//! minimum (q4_1, q5_1: the minimum meets the activations' stored sums, as llama.cpp computes it).
//!
//! Layouts as `switchyard_runtime::quant` documents them (llama.cpp's, version 2).

#![cfg(target_arch = "x86_64")]

use super::act::ActFormat;
use std::arch::x86_64::*;

/// Per 16 values of one block: the multiplier of `Σ code·q` and the coefficient subtracted per
/// unit of `Σ q`.
pub(crate) struct Scales {
    pub mult: [f32; 16],
    pub off: [f32; 16],
    /// The block's minimum (q4_1, q5_1).
    pub min: f32,
}

impl Scales {
    pub const ZERO: Scales = Scales {
        mult: [0.0; 16],
        off: [0.0; 16],
        min: 0.0,
    };
}

/// One block format.
pub(crate) trait Format {
    /// Bytes per block.
    const BYTES: usize;
    /// Values per block (32 or 256).
    const VALUES: usize;
    /// How activations are quantized against it.
    const ACT: ActFormat;
    /// Codes are signed bytes (q8_0); else unsigned.
    const SIGNED: bool = false;
    /// The block's minimum meets the activations' stored sums (q4_1, q5_1).
    const MIN: bool = false;
    /// For 32-value formats: the code standing for zero (the offset is `d` times it).
    const ZERO_CODE: f32 = 0.0;
    /// The largest unsigned code (q8_0's signed codes, offset by 128, reach 255).
    const MAX_CODE: i32 = 255;

    /// The scales of the block at `b`.
    ///
    /// # Safety
    /// `b` points at a whole block.
    unsafe fn scales(b: *const u8, out: &mut Scales);

    /// For 32-value formats: the block's multiplier, offset per unit of `Σq` and minimum.
    ///
    /// # Safety
    /// `b` points at a whole block; the CPU has F16C.
    #[inline(always)]
    unsafe fn scale32(b: *const u8) -> (f32, f32, f32) {
        let mut s = Scales::ZERO;
        Self::scales(b, &mut s);
        (s.mult[0], s.off[0], s.min)
    }

    /// The codes of group `g` (values `32g .. 32g + 32`) of the block at `b`.
    ///
    /// # Safety
    /// `b` points at a whole block; `g < VALUES / 32`; the CPU has AVX2.
    unsafe fn codes(b: *const u8, g: usize) -> __m256i;
}

/// The f16 at `p` as f32, with F16C (the `half` crate's conversion is a software routine
/// unless the whole crate is compiled for F16C).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
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

/// The two f16 at `p` and `p + 2` as f32, in one conversion.
#[inline(always)]
unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
    let bits = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// Byte `j` is `0x10` where bit `j` of `bits` is set (the fifth bit of 5-bit codes).
#[inline(always)]
unsafe fn fifth_bits(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let v = _mm256_shuffle_epi8(v, spread);
    // Every bit but bit `i % 8` set in byte `i`: the byte is all ones exactly when that bit is.
    let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    let set = _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Bits `shift ..` of every byte of `v`, masked to `mask`.
#[inline(always)]
unsafe fn bits(v: __m256i, shift: usize, mask: i8) -> __m256i {
    let s = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift as i32));
    _mm256_and_si256(s, _mm256_set1_epi8(mask))
}

#[inline(always)]
fn two(mult: f32, off: f32, min: f32, out: &mut Scales) {
    out.mult[0] = mult;
    out.mult[1] = mult;
    out.off[0] = off;
    out.off[1] = off;
    out.min = min;
}

pub(crate) struct Q4_0;
impl Format for Q4_0 {
    const ZERO_CODE: f32 = 8.0;
    const MAX_CODE: i32 = 15;
    const BYTES: usize = 18;
    const VALUES: usize = 32;
    const ACT: ActFormat = ActFormat::Q8_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        let d = f16_at(b);
        two(d, 8.0 * d, 0.0, out);
    }
    #[inline(always)]
    unsafe fn scale32(b: *const u8) -> (f32, f32, f32) {
        let d = f16_at(b);
        (d, 8.0 * d, 0.0)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, _: usize) -> __m256i {
        nibbles(b.add(2))
    }
}

pub(crate) struct Q4_1;
impl Format for Q4_1 {
    const BYTES: usize = 20;
    const VALUES: usize = 32;
    const ACT: ActFormat = ActFormat::Q8_1;
    const MIN: bool = true;
    const MAX_CODE: i32 = 15;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        two(f16_at(b), 0.0, f16_at(b.add(2)), out);
    }
    #[inline(always)]
    unsafe fn scale32(b: *const u8) -> (f32, f32, f32) {
        let (d, m) = f16_pair(b);
        (d, 0.0, m)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, _: usize) -> __m256i {
        nibbles(b.add(4))
    }
}

pub(crate) struct Q5_0;
impl Format for Q5_0 {
    const ZERO_CODE: f32 = 16.0;
    const MAX_CODE: i32 = 31;
    const BYTES: usize = 22;
    const VALUES: usize = 32;
    const ACT: ActFormat = ActFormat::Q8_0;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        let d = f16_at(b);
        two(d, 16.0 * d, 0.0, out);
    }
    #[inline(always)]
    unsafe fn scale32(b: *const u8) -> (f32, f32, f32) {
        let d = f16_at(b);
        (d, 16.0 * d, 0.0)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, _: usize) -> __m256i {
        let qh = u32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
        _mm256_or_si256(nibbles(b.add(6)), fifth_bits(qh))
    }
}

pub(crate) struct Q5_1;
impl Format for Q5_1 {
    const BYTES: usize = 24;
    const VALUES: usize = 32;
    const ACT: ActFormat = ActFormat::Q8_1;
    const MIN: bool = true;
    const MAX_CODE: i32 = 31;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        two(f16_at(b), 0.0, f16_at(b.add(2)), out);
    }
    #[inline(always)]
    unsafe fn scale32(b: *const u8) -> (f32, f32, f32) {
        let (d, m) = f16_pair(b);
        (d, 0.0, m)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, _: usize) -> __m256i {
        let qh = u32::from_le_bytes([*b.add(4), *b.add(5), *b.add(6), *b.add(7)]);
        _mm256_or_si256(nibbles(b.add(8)), fifth_bits(qh))
    }
}

pub(crate) struct Q8_0;
impl Format for Q8_0 {
    const BYTES: usize = 34;
    const VALUES: usize = 32;
    const ACT: ActFormat = ActFormat::Q8_0;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        two(f16_at(b), 0.0, 0.0, out);
    }
    #[inline(always)]
    unsafe fn scale32(b: *const u8) -> (f32, f32, f32) {
        (f16_at(b), 0.0, 0.0)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, _: usize) -> __m256i {
        load(b.add(2))
    }
}

/// Where group `g` of a Q2_K / Q3_K super-block keeps its 2-bit codes: 32 bytes at
/// `(g / 4) · 32`, bits `2 · (g % 4)`.
#[inline(always)]
fn two_bit_group(g: usize) -> (usize, usize) {
    ((g / 4) * 32, 2 * (g % 4))
}

pub(crate) struct Q2K;
impl Format for Q2K {
    const BYTES: usize = 84;
    const VALUES: usize = 256;
    const ACT: ActFormat = ActFormat::Q8K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        let (d, dmin) = (f16_at(b.add(80)), f16_at(b.add(82)));
        for j in 0..16 {
            let sc = *b.add(j);
            out.mult[j] = d * (sc & 0x0F) as f32;
            out.off[j] = dmin * (sc >> 4) as f32;
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, g: usize) -> __m256i {
        let (at, shift) = two_bit_group(g);
        bits(load(b.add(16 + at)), shift, 3)
    }
}

pub(crate) struct Q3K;
impl Format for Q3K {
    const BYTES: usize = 110;
    const VALUES: usize = 256;
    const ACT: ActFormat = ActFormat::Q8K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        let raw = std::slice::from_raw_parts(b.add(96), 12);
        let d = f16_at(b.add(108));
        for j in 0..16 {
            let low = if j < 8 {
                raw[j] & 0x0F
            } else {
                raw[j - 8] >> 4
            };
            let high = (raw[8 + j % 4] >> (2 * (j / 4))) & 3;
            let s = d * (((low | (high << 4)) as i32) - 32) as f32;
            // The codes are 0..8 standing for -4..3.
            out.mult[j] = s;
            out.off[j] = 4.0 * s;
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, g: usize) -> __m256i {
        let (at, shift) = two_bit_group(g);
        let low = bits(load(b.add(32 + at)), shift, 3);
        // The third bit of group g (= 4·half + shift/2) is bit g of the 32 hmask bytes.
        let high = bits(load(b), g, 1);
        _mm256_or_si256(low, _mm256_slli_epi16(high, 2))
    }
}

/// The 6-bit scale and minimum of sub-block `j` in the 12 scale bytes of Q4_K / Q5_K.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
    } else {
        let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

#[inline(always)]
unsafe fn k4_scales(b: *const u8, out: &mut Scales) {
    let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
    let s = std::slice::from_raw_parts(b.add(4), 12);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, s);
        out.mult[2 * j] = d * sc;
        out.mult[2 * j + 1] = d * sc;
        out.off[2 * j] = dmin * m;
        out.off[2 * j + 1] = dmin * m;
    }
}

pub(crate) struct Q4K;
impl Format for Q4K {
    const BYTES: usize = 144;
    const VALUES: usize = 256;
    const ACT: ActFormat = ActFormat::Q8K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        k4_scales(b, out)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, g: usize) -> __m256i {
        bits(load(b.add(16 + 32 * (g / 2))), 4 * (g % 2), 0x0F)
    }
}

pub(crate) struct Q5K;
impl Format for Q5K {
    const BYTES: usize = 176;
    const VALUES: usize = 256;
    const ACT: ActFormat = ActFormat::Q8K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        k4_scales(b, out)
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, g: usize) -> __m256i {
        let low = bits(load(b.add(48 + 32 * (g / 2))), 4 * (g % 2), 0x0F);
        let high = bits(load(b.add(16)), g, 1);
        _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
    }
}

pub(crate) struct Q6K;
impl Format for Q6K {
    const BYTES: usize = 210;
    const VALUES: usize = 256;
    const ACT: ActFormat = ActFormat::Q8K;
    #[inline(always)]
    unsafe fn scales(b: *const u8, out: &mut Scales) {
        let d = f16_at(b.add(208));
        for j in 0..16 {
            let s = d * (*b.add(192 + j) as i8) as f32;
            // The codes are 0..64 standing for -32..31.
            out.mult[j] = s;
            out.off[j] = 32.0 * s;
        }
    }
    #[inline(always)]
    unsafe fn codes(b: *const u8, g: usize) -> __m256i {
        let (half, gg) = (g / 4, g % 4);
        let low = bits(load(b.add(half * 64 + (gg & 1) * 32)), 4 * (gg >> 1), 0x0F);
        let high = bits(load(b.add(128 + half * 32)), 2 * gg, 3);
        _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
    }
}
