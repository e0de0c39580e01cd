//! Tiles of `R` weight rows × `C` activation rows in integer arithmetic: per group of 32 values,
//! the weight codes (unsigned bytes, or signed for q8_0) times the quantized activations (signed
//! bytes) summed in 8 lanes of i32, scaled per 16 values by the weight's and per block by the
//! activations' scales; offsets and minima are applied through the activations' sums. Each
//! weight block is decoded once for all `C` activation rows and each activation group loaded
//! once for all `R` weight rows. AVX2 (`maddubs`/`madd`) everywhere, AVX-512 VNNI (`dpbusd`)
//! where the CPU has it.

#![cfg(target_arch = "x86_64")]

use super::act::QActs;
use super::formats::{self as f, Format, Scales};
use super::QuantMatrix;
use crate::cpu::kernels::Isa;
use std::arch::x86_64::*;
use switchyard_runtime::DType;

/// `Σ u·s` over each group of 4 bytes: 8 lanes of i32 (lane `i` covers bytes `4i..4i+4`).
trait IntDot {
    /// Weight rows per tile when several activation rows share it (more with more registers).
    const SKINNY_ROWS: usize;
    /// Signed weights may take activations offset to unsigned (`x + 128`) with the offset's
    /// products `128·Σw` subtracted in the integer accumulator, instead of moving signs onto the
    /// activations per weight row (needs a dot product that cannot saturate).
    const OFFSET_ACTS: bool;
    /// `acc + dot(u, s)`, four products per 32-bit lane.
    ///
    /// # Safety
    /// The CPU must support the instructions of the implementation.
    #[inline(always)]
    unsafe fn dot_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(acc, Self::dot(u, s))
    }
    /// # Safety
    /// The CPU must support the instructions of the implementation.
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
}

/// AVX2: pairs of products to i16 (no saturation: codes are at most 128 and activations at most
/// 127 in magnitude, so a pair stays below 32767), then pairs of those to i32.
struct Avx2;
impl IntDot for Avx2 {
    const SKINNY_ROWS: usize = 2;
    // maddubs saturates pairs of (x + 128)·w at 16 bits.
    const OFFSET_ACTS: bool = false;
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

/// AVX-512 VNNI on 256-bit vectors: one instruction.
struct Vnni;
impl IntDot for Vnni {
    const SKINNY_ROWS: usize = 4;
    const OFFSET_ACTS: bool = true;
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
    #[inline(always)]
    unsafe fn dot_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Prefetches the block `ahead` bytes past `p`. The kernels read tiles of consecutive rows, so
/// they pass the distance to the same block of the next tile's rows (the rows this thread reads
/// next, one tile's work ahead): the rows of a tile are separate streams, more than the hardware
/// prefetcher follows well, and a fixed distance overshoots short rows into rows already read
/// (576 values of q4_0 are 324 bytes).
#[inline(always)]
unsafe fn prefetch(p: *const u8, ahead: usize) {
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead) as *const i8);
}

/// `out[r][c] = row r · activations c` for `R` weight rows of `nb` blocks of `F` and `C`
/// activation rows quantized for `F`; `ahead` is the distance to the next tile's rows.
#[inline(always)]
unsafe fn tile<D: IntDot, F: Format, const R: usize, const C: usize>(
    rows: [*const u8; R],
    nb: usize,
    acts: [&QActs; C],
    ahead: usize,
) -> [[f32; C]; R] {
    if F::VALUES == 32 {
        return tile32::<D, F, R, C>(rows, nb, acts, ahead);
    }
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut off = [[0f32; C]; R];
    let mut sc: [Scales; R] = std::array::from_fn(|_| Scales::ZERO);
    let groups = F::VALUES / 32;
    let act_block = F::ACT.block();
    for b in 0..nb {
        for r in 0..R {
            let p = rows[r].add(b * F::BYTES);
            prefetch(p, ahead);
            if F::BYTES > 64 {
                prefetch(p, ahead + 64);
            }
            F::scales(p, &mut sc[r]);
        }
        for g in 0..groups {
            let k0 = b * F::VALUES + 32 * g;
            let x: [__m256i; C] = std::array::from_fn(|c| {
                _mm256_loadu_si256(acts[c].qs.as_ptr().add(k0) as *const __m256i)
            });
            let dx: [f32; C] = std::array::from_fn(|c| acts[c].d[k0 / act_block]);
            for r in 0..R {
                let u = F::codes(rows[r].add(b * F::BYTES), g);
                let (m0, m1) = (sc[r].mult[2 * g], sc[r].mult[2 * g + 1]);
                let mv = _mm256_setr_m128(_mm_set1_ps(m0), _mm_set1_ps(m1));
                for c in 0..C {
                    let p = if F::SIGNED {
                        D::dot(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x[c], u))
                    } else {
                        D::dot(u, x[c])
                    };
                    let scale = _mm256_mul_ps(mv, _mm256_set1_ps(dx[c]));
                    acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[r][c]);
                    if !F::MIN && !F::SIGNED {
                        let s = &acts[c].sum16[k0 / 16..k0 / 16 + 2];
                        off[r][c] += dx[c]
                            * (sc[r].off[2 * g] * s[0] as f32 + sc[r].off[2 * g + 1] * s[1] as f32);
                    }
                }
            }
        }
        if F::MIN {
            for r in 0..R {
                for c in 0..C {
                    off[r][c] -= sc[r].min * acts[c].s[b];
                }
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum(acc[r][c]) - off[r][c];
        }
    }
    out
}

/// [`tile`] for the 32-value formats: one scale per block, so one broadcast per (row, column)
/// and block, and offsets through the activations' precomputed `d · Σq`.
#[inline(always)]
unsafe fn tile32<D: IntDot, F: Format, const R: usize, const C: usize>(
    rows: [*const u8; R],
    nb: usize,
    acts: [&QActs; C],
    ahead: usize,
) -> [[f32; C]; R] {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut off = [[0f32; C]; R];
    let qs: [*const i8; C] = std::array::from_fn(|c| acts[c].qs.as_ptr());
    let d: [*const f32; C] = std::array::from_fn(|c| acts[c].d.as_ptr());
    let extra: [*const f32; C] = std::array::from_fn(|c| {
        if F::MIN {
            acts[c].s.as_ptr()
        } else {
            acts[c].dsum32.as_ptr()
        }
    });
    // Signed weights against several activation rows: the activations offset once per block
    // (`x ^ 0x80` is `x + 128` as u8), the offset's products taken off once per weight row.
    let offset = F::SIGNED && D::OFFSET_ACTS && C > 1;
    let k80 = _mm256_set1_epi8(-128);
    let fold_zero = !F::SIGNED && !F::MIN && F::ZERO_CODE != 0.0 && D::OFFSET_ACTS && C > 1;
    let zero_code = _mm256_set1_epi8(F::ZERO_CODE as i8);
    for b in 0..nb {
        let x: [__m256i; C] = std::array::from_fn(|c| {
            let v = _mm256_loadu_si256(qs[c].add(32 * b) as *const __m256i);
            if offset {
                _mm256_xor_si256(v, k80)
            } else {
                v
            }
        });
        let dx: [f32; C] = std::array::from_fn(|c| *d[c].add(b));
        let ex: [f32; C] = std::array::from_fn(|c| *extra[c].add(b));
        // Unsigned codes around a zero code `z`: `Σ(u − z)·x = Σu·x − z·Σx`, the second term
        // taken off in the integer accumulator once per activation row and block.
        let zero_terms: [__m256i; C] = std::array::from_fn(|c| {
            if fold_zero {
                _mm256_sub_epi32(_mm256_setzero_si256(), D::dot(zero_code, x[c]))
            } else {
                _mm256_setzero_si256()
            }
        });
        // One prefetch per cache line of each row, not per (smaller) block.
        let fetch = b % (64 / F::BYTES).max(1) == 0;
        for r in 0..R {
            let p = rows[r].add(b * F::BYTES);
            if fetch {
                prefetch(p, ahead);
            }
            let (m, o, mn) = F::scale32(p);
            let u = F::codes(p, 0);
            let less = if offset {
                _mm256_sub_epi32(_mm256_setzero_si256(), D::dot(k80, u))
            } else {
                _mm256_setzero_si256()
            };
            for c in 0..C {
                let prod = if offset {
                    D::dot_acc(less, x[c], u)
                } else if fold_zero {
                    D::dot_acc(zero_terms[c], u, x[c])
                } else if F::SIGNED {
                    D::dot(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x[c], u))
                } else {
                    D::dot(u, x[c])
                };
                let scale = _mm256_set1_ps(m * dx[c]);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(prod), scale, acc[r][c]);
                if F::MIN {
                    off[r][c] -= mn * ex[c];
                } else if !F::SIGNED && !fold_zero {
                    off[r][c] += o * ex[c];
                }
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum(acc[r][c]) - off[r][c];
        }
    }
    out
}

/// Eight rows of a 32-value format against one activation row (decode), with the eight rows'
/// block sums reduced into one vector before any float work: per block, the rows' scale
/// fields put in one vector, one conversion, one multiply-add for all eight rows (instead of a
/// conversion, broadcast, multiply and multiply-add per row).
#[inline(always)]
unsafe fn rows8_32<D: IntDot, F: Format>(
    base: *const u8,
    row_bytes: usize,
    nb: usize,
    a: &QActs,
) -> [f32; 8] {
    let mut acc = _mm256_setzero_ps();
    let mut off = _mm256_setzero_ps();
    // Low and high 16 bits of each 32-bit lane, packed into the low 8 bytes of each half.
    let lo16 = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1,
        -1, -1, -1, -1, -1, -1,
    );
    let hi16 = _mm256_setr_epi8(
        2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10, 11, 14, 15, -1,
        -1, -1, -1, -1, -1, -1, -1,
    );
    let halves = |v: __m256i| -> __m256 {
        let packed = _mm256_permute4x64_epi64::<0b1000>(v);
        _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
    };
    let fetch = (64 / F::BYTES).max(1);
    for b in 0..nb {
        let block = base.add(b * F::BYTES);
        if b % fetch == 0 {
            for r in 0..8 {
                prefetch(block.add(r * row_bytes), 8 * row_bytes);
            }
        }
        let x = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
        // The rows' first four bytes (scale, and minimum or nothing), one 32-bit load each:
        // `vpgatherdd` took a fifth of this loop on Zen 3 (20.8 -> 23.2 GMAC/s on one core
        // without it, q4_0 1536 × 576 in cache, alternating runs).
        let field = |r: usize| (block.add(r * row_bytes) as *const i32).read_unaligned();
        let fields = _mm256_setr_epi32(
            field(0),
            field(1),
            field(2),
            field(3),
            field(4),
            field(5),
            field(6),
            field(7),
        );
        let d8 = halves(_mm256_shuffle_epi8(fields, lo16));
        let mut p = [_mm256_setzero_si256(); 8];
        for (r, pr) in p.iter_mut().enumerate() {
            let u = F::codes(block.add(r * row_bytes), 0);
            *pr = if F::SIGNED {
                D::dot(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x, u))
            } else {
                D::dot(u, x)
            };
        }
        // Lane r of `s`: the sum of row r's eight lanes.
        let h01 = _mm256_hadd_epi32(p[0], p[1]);
        let h23 = _mm256_hadd_epi32(p[2], p[3]);
        let h45 = _mm256_hadd_epi32(p[4], p[5]);
        let h67 = _mm256_hadd_epi32(p[6], p[7]);
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        let s = _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(h0123, h4567),
            _mm256_permute2x128_si256::<0x31>(h0123, h4567),
        );
        let dx = *a.d.get_unchecked(b);
        acc = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(s),
            _mm256_mul_ps(d8, _mm256_set1_ps(dx)),
            acc,
        );
        if F::MIN {
            let m8 = halves(_mm256_shuffle_epi8(fields, hi16));
            off = _mm256_fnmadd_ps(m8, _mm256_set1_ps(*a.s.get_unchecked(b)), off);
        } else if F::ZERO_CODE != 0.0 {
            let ex = F::ZERO_CODE * *a.dsum32.get_unchecked(b);
            off = _mm256_fmadd_ps(d8, _mm256_set1_ps(ex), off);
        }
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), _mm256_sub_ps(acc, off));
    out
}

/// `y[c · ldy + i] = row(first + i) · acts[c]` for `i < rows`, tiles of `RT × CT` and the
/// remainders one row or one column at a time.
#[inline(always)]
unsafe fn rows_of<D: IntDot, F: Format, const RT: usize, const CT: usize>(
    w: &QuantMatrix<'_>,
    acts: &[QActs],
    first: usize,
    rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    let row_bytes = w.row_bytes();
    let nb = w.k / F::VALUES;
    let base = w.bytes.as_ptr().add(first * row_bytes);
    let row = |i: usize| base.add(i * row_bytes);
    let full_r = rows / RT * RT;
    let full_c = acts.len() / CT * CT;
    let mut c0 = 0;
    while c0 < acts.len() {
        let ct = if c0 < full_c { CT } else { 1 };
        let mut r0 = 0;
        while r0 < rows {
            let rt = if r0 < full_r { RT } else { 1 };
            macro_rules! run {
                ($r:tt, $c:tt) => {{
                    let t = tile::<D, F, $r, $c>(
                        std::array::from_fn(|i| row(r0 + i)),
                        nb,
                        std::array::from_fn(|j| &acts[c0 + j]),
                        $r * row_bytes,
                    );
                    for i in 0..$r {
                        for j in 0..$c {
                            y[(c0 + j) * ldy + r0 + i] = t[i][j];
                        }
                    }
                }};
            }
            match (rt == RT, ct == CT) {
                (true, true) if RT == 8 && CT == 1 && F::VALUES == 32 => {
                    let t = rows8_32::<D, F>(row(r0), row_bytes, nb, &acts[c0]);
                    y[c0 * ldy + r0..c0 * ldy + r0 + 8].copy_from_slice(&t);
                }
                (true, true) => {
                    let t = tile::<D, F, RT, CT>(
                        std::array::from_fn(|i| row(r0 + i)),
                        nb,
                        std::array::from_fn(|j| &acts[c0 + j]),
                        RT * row_bytes,
                    );
                    for i in 0..RT {
                        for j in 0..CT {
                            y[(c0 + j) * ldy + r0 + i] = t[i][j];
                        }
                    }
                }
                (true, false) => {
                    let t = tile::<D, F, RT, 1>(
                        std::array::from_fn(|i| row(r0 + i)),
                        nb,
                        [&acts[c0]],
                        RT * row_bytes,
                    );
                    for i in 0..RT {
                        y[c0 * ldy + r0 + i] = t[i][0];
                    }
                }
                (false, true) => run!(1, CT),
                (false, false) => run!(1, 1),
            }
            r0 += rt;
        }
        c0 += ct;
    }
}

/// Eight weight rows at a time for one activation row (decode: the rows are separate memory
/// streams, more loads in flight); several activation rows (a batched decode step) in tiles of
/// four activation rows by two weight rows (AVX2: 16 ymm registers) or four (VNNI: AVX-512VL's
/// 32), each weight block loaded once for four activation rows.
#[inline(always)]
unsafe fn dispatch<D: IntDot, F: Format>(
    w: &QuantMatrix<'_>,
    acts: &[QActs],
    first: usize,
    rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    if acts.len() >= 4 && D::SKINNY_ROWS == 4 {
        rows_of::<D, F, 4, 4>(w, acts, first, rows, y, ldy)
    } else if acts.len() >= 4 {
        rows_of::<D, F, 2, 4>(w, acts, first, rows, y, ldy)
    } else {
        rows_of::<D, F, 8, 1>(w, acts, first, rows, y, ldy)
    }
}

#[inline(always)]
unsafe fn by_type<D: IntDot>(
    w: &QuantMatrix<'_>,
    acts: &[QActs],
    first: usize,
    rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    match w.dtype {
        DType::Q4_0 => dispatch::<D, f::Q4_0>(w, acts, first, rows, y, ldy),
        DType::Q4_1 => dispatch::<D, f::Q4_1>(w, acts, first, rows, y, ldy),
        DType::Q5_0 => dispatch::<D, f::Q5_0>(w, acts, first, rows, y, ldy),
        DType::Q5_1 => dispatch::<D, f::Q5_1>(w, acts, first, rows, y, ldy),
        DType::Q8_0 => dispatch::<D, f::Q8_0>(w, acts, first, rows, y, ldy),
        DType::Q2K => dispatch::<D, f::Q2K>(w, acts, first, rows, y, ldy),
        DType::Q3K => dispatch::<D, f::Q3K>(w, acts, first, rows, y, ldy),
        DType::Q4K => dispatch::<D, f::Q4K>(w, acts, first, rows, y, ldy),
        DType::Q5K => dispatch::<D, f::Q5K>(w, acts, first, rows, y, ldy),
        DType::Q6K => dispatch::<D, f::Q6K>(w, acts, first, rows, y, ldy),
        other => unreachable!("{other} is not a block-quantized type"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2(
    w: &QuantMatrix<'_>,
    acts: &[QActs],
    first: usize,
    rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    by_type::<Avx2>(w, acts, first, rows, y, ldy)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run_vnni(
    w: &QuantMatrix<'_>,
    acts: &[QActs],
    first: usize,
    rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    by_type::<Vnni>(w, acts, first, rows, y, ldy)
}

/// True when `isa` has these kernels.
pub(crate) fn available(isa: Isa) -> bool {
    isa.avx2()
}

/// `y[c · ldy + i] = row(first + i) · x_c` for `i < rows` and every activation row `acts[c]`
/// (quantized for `w`'s type), with the VNNI kernels when `isa` allows them, else the AVX2 ones.
///
/// Panics unless [`available`], `w` is block-quantized, the rows lie inside `w` and the
/// activations are `w.k` long in the format `w`'s type takes.
pub(crate) fn dot_rows(
    isa: Isa,
    w: &QuantMatrix<'_>,
    acts: &[QActs],
    first: usize,
    rows: usize,
    y: &mut [f32],
    ldy: usize,
) {
    assert!(available(isa) && w.dtype.is_quantized());
    assert!((first + rows) * w.row_bytes() <= w.bytes.len());
    assert!(w.k.is_multiple_of(w.dtype.block_len()));
    for a in acts {
        assert!(a.qs.len() == w.k && a.format == super::act_format(w.dtype));
    }
    assert!(acts.is_empty() || (acts.len() - 1) * ldy + rows <= y.len());
    if isa.vnni() {
        // SAFETY: an `Isa` exists only for variants this CPU runs, and the VNNI one includes
        // AVX2, FMA, F16C and AVX-512 VNNI/VL/BW; the rows lie inside `w.bytes`, the activations
        // hold `w.k` values and `y` has room for every result (asserted), so every read and
        // write is in bounds.
        unsafe { run_vnni(w, acts, first, rows, y, ldy) }
    } else {
        // SAFETY: as above, with the AVX2 kernels (every available variant has AVX2/FMA/F16C).
        unsafe { run_avx2(w, acts, first, rows, y, ldy) }
    }
}
