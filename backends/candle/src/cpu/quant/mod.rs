//! Matrix products with block-quantized weights (llama.cpp's formats) on the CPU.
//!
//! Decoding (one activation row) is computed the way llama.cpp computes it: the row is
//! quantized once per call in the format the weight type pairs with ([`act`]), and every weight
//! row is dotted with it in integer arithmetic straight from its stored blocks ([`dot`]), eight
//! rows at a time, split over the compute threads; a few rows (a small batched decode step,
//! [`skinny_rows`]) the same way, each weight block dotted with four rows while it is loaded.
//! From two rows, weight rows in a vector's lanes instead ([`weight_lanes`]): against q4_0, two
//! to four rows with AVX2; against q4_0 and q8_0, any number with AVX-512 VNNI.
//! More rows (prompts, larger batches) against the 32-value formats take integer kernels laid out
//! for many rows ([`prompt`]: one `vpdpbusd`, or `vpmaddubsw` with AVX2, multiplies four codes of
//! a weight row with a tile of 16 or 8 activation rows, the same products as decoding); for the
//! k-quants, and for q8_0 from 64 rows where there is no VNNI, each weight slice is dequantized
//! into the f32 matrix product ([`dequant`], [`super::gemm`]), which outruns the integer
//! products once every slice serves many rows and rounds the activations less.

pub(crate) mod act;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dequant;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod formats;
#[cfg(target_arch = "x86_64")]
pub(crate) mod prompt;
#[cfg(target_arch = "x86_64")]
pub(crate) mod weight_lanes;

use super::kernels::Isa;
use act::ActFormat;
use switchyard_runtime::DType;

/// A `[n, k]` block-quantized matrix as stored: `n` rows of `k / block_len` blocks.
#[derive(Clone, Copy)]
pub(crate) struct QuantMatrix<'a> {
    pub dtype: DType,
    pub bytes: &'a [u8],
    pub n: usize,
    pub k: usize,
}

impl QuantMatrix<'_> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.k / self.dtype.block_len() * self.dtype.block_bytes()
    }
}

/// The activation format a weight type's dot products take (llama.cpp's pairing).
pub(crate) fn act_format(dtype: DType) -> ActFormat {
    match dtype {
        DType::Q4_1 | DType::Q5_1 => ActFormat::Q8_1,
        DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K => ActFormat::Q8K,
        _ => ActFormat::Q8_0,
    }
}

/// True when [`matmul`] can run `dtype` with the kernels `isa` allows.
pub(crate) fn available(dtype: DType, isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        dtype.is_quantized() && dot::available(isa)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, isa);
        false
    }
}

/// `y = x·Wᵀ` for `m` activation rows `x` (`[m, k]`) and a block-quantized `W` `[n, k]`, `y`
/// `[m, n]`, weight rows split over candle's CPU worker threads. Returns `false` (leaving `y`
/// alone) when [`available`] is not.
pub(crate) fn matmul(isa: Isa, x: &[f32], m: usize, w: &QuantMatrix<'_>, y: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !available(w.dtype, isa) || !w.k.is_multiple_of(w.dtype.block_len()) {
            return false;
        }
        assert!(x.len() == m * w.k && y.len() == m * w.n);
        if weight_lanes::available(w.dtype, isa, m) && weight_lanes::matmul(isa, x, m, w, y) {
            return true;
        }
        if m > 1 && m <= skinny_rows(w.dtype, isa) {
            skinny(isa, x, m, w, y);
            return true;
        }
        if m > 1 && integer_prompt(w.dtype, isa, m) && prompt::matmul(isa, x, m, w, y) {
            return true;
        }
        if m > 1 {
            // Prompts without integer prompt kernels: weight slices dequantized into the f32
            // matrix product, which outruns row-by-row integer dot products once every slice
            // serves many rows.
            return super::gemm::gemm_nt(isa, x, m, w.k, super::gemm::Rhs::Quant(*w), w.n, y);
        }
        let acts = [act::quantize(isa, x, act_format(w.dtype))];
        let threads = super::worker_threads();
        // Small matrices are not worth waking the other threads for.
        if threads == 1 || w.bytes.len() < 32 * 1024 {
            dot::dot_rows(isa, w, &acts, 0, w.n, y, w.n);
            return true;
        }
        // Several parts per thread, whole groups of eight rows: a thread that finishes early
        // takes another part instead of waiting at the barrier.
        let chunk = w.n.div_ceil(threads * 4).next_multiple_of(8);
        super::par_chunks_mut(y, chunk, |i, out| {
            dot::dot_rows(isa, w, &acts, i * chunk, out.len(), out, 0)
        });
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, x, m, w, y);
        false
    }
}

/// Fewest rows for which a q8_0 product without VNNI runs faster dequantized into the f32
/// matrix product than on the AVX2 integer prompt kernels. Without `vpdpbusd` each block of 32
/// codes costs `vpmaddubsw`, `vpmaddwd`, sign moves and a scale, while q8_0 dequantizes with a
/// widening load and one multiply. Measured with AVX2 forced (Sapphire Rapids, 2 threads,
/// alternating runs), integer / dequantized t/s: built-in SmolLM2 q8_0 pp16 565 / 416, pp32
/// 610 / 518, pp64 630 / 641, pp128 638 / 679, pp512 560 / 645; TinyLlama q8_0 pp128 86 / 86.
/// (For q4_0 the integer kernels stay ahead: SmolLM2 pp512 717 / 669, TinyLlama pp128 117 / 90.)
const Q8_0_DEQUANT_ROWS: usize = 64;

/// Whether `m` rows against `dtype` take the integer prompt kernels (where they run) rather
/// than the dequantized f32 matrix product.
fn integer_prompt(dtype: DType, isa: Isa, m: usize) -> bool {
    !(dtype == DType::Q8_0 && !isa.vnni() && m >= Q8_0_DEQUANT_ROWS)
}

/// Most activation rows that take the row-by-row integer dot products for `dtype` with `isa` (a
/// batched decode step: every weight row read once for all of them). More rows take the integer
/// prompt kernels where they run for `dtype`, whose tiles of 4 or 8 (AVX2) or 16 (VNNI) rows
/// outran the dot products from 4 rows with AVX2 and 6 with VNNI (built-in SmolLM2 q4_0 and q8_0,
/// `switchyard bench --batch`, 2 threads); elsewhere more than [`SKINNY_ROWS`] take the
/// dequantized GEMM, whose cost per row falls as the rows grow. `SWITCHYARD_SKINNY_ROWS`
/// overrides it (for measuring the crossover).
pub(crate) fn skinny_rows(dtype: DType, isa: Isa) -> usize {
    static ROWS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *ROWS.get_or_init(|| {
        std::env::var("SWITCHYARD_SKINNY_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    #[cfg(target_arch = "x86_64")]
    let prompt_kernels = prompt::available(dtype, isa);
    #[cfg(not(target_arch = "x86_64"))]
    let prompt_kernels = {
        let _ = (dtype, isa);
        false
    };
    match (forced, prompt_kernels) {
        (Some(rows), _) => rows,
        (None, true) if isa.vnni() => 5,
        (None, true) => 3,
        (None, false) => SKINNY_ROWS,
    }
}

/// The most rows [`skinny_rows`] gives any type.
pub(crate) const SKINNY_ROWS: usize = 16;

/// [`matmul`] for a few activation rows: each is quantized once, and each thread takes whole
/// groups of weight rows and dots every activation row with them while they are in cache.
#[cfg(target_arch = "x86_64")]
fn skinny(isa: Isa, x: &[f32], m: usize, w: &QuantMatrix<'_>, y: &mut [f32]) {
    let f = act_format(w.dtype);
    let acts: Vec<act::QActs> = x.chunks(w.k).map(|r| act::quantize(isa, r, f)).collect();
    let threads = super::worker_threads();
    // The products land transposed (`[n, m]`, one contiguous part per group of weight rows),
    // then turn into `[m, n]`.
    let mut yt = vec![0f32; w.n * m];
    let part = |first: usize, out: &mut [f32]| {
        let rows = out.len() / m;
        let mut local = vec![0f32; rows * m];
        dot::dot_rows(isa, w, &acts, first, rows, &mut local, rows);
        for c in 0..m {
            for i in 0..rows {
                out[i * m + c] = local[c * rows + i];
            }
        }
    };
    if threads == 1 || w.bytes.len() < 32 * 1024 {
        part(0, &mut yt);
    } else {
        let chunk = w.n.div_ceil(threads * 4).next_multiple_of(8);
        super::par_chunks_mut(&mut yt, chunk * m, |i, out| part(i * chunk, out));
    }
    for i in 0..w.n {
        for c in 0..m {
            y[c * w.n + i] = yt[i * m + c];
        }
    }
}

/// `ys[i] = x·W_iᵀ` for one activation row `x` and several block-quantized weights that read
/// it (a layer's q, k and v projections, its gate and up projections): the row is quantized
/// once per format and all the weights' rows go to the worker threads in one dispatch, instead
/// of one per matrix. Returns `false` (leaving `ys` alone) when a weight is not [`available`].
pub(crate) fn matvec_many(
    isa: Isa,
    x: &[f32],
    ws: &[QuantMatrix<'_>],
    ys: &mut [&mut [f32]],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if ws.iter().any(|w| {
            !available(w.dtype, isa) || w.k != x.len() || !w.k.is_multiple_of(w.dtype.block_len())
        }) {
            return false;
        }
        let mut acts: Vec<(ActFormat, act::QActs)> = Vec::new();
        for w in ws {
            let f = act_format(w.dtype);
            if !acts.iter().any(|(g, _)| *g == f) {
                acts.push((f, act::quantize(isa, x, f)));
            }
        }
        let threads = super::worker_threads();
        let total: usize = ws.iter().map(|w| w.n).sum();
        let chunk = total.div_ceil(threads * 4).next_multiple_of(8);
        let mut parts: Vec<(usize, usize, &mut [f32])> = Vec::new();
        for (i, y) in ys.iter_mut().enumerate() {
            for (j, out) in y.chunks_mut(chunk).enumerate() {
                parts.push((i, j * chunk, out));
            }
        }
        let run = |(i, first, out): (usize, usize, &mut [f32])| {
            let w = &ws[i];
            let f = act_format(w.dtype);
            let a = &acts
                .iter()
                .find(|(g, _)| *g == f)
                .expect("quantized above")
                .1;
            dot::dot_rows(isa, w, std::slice::from_ref(a), first, out.len(), out, 0);
        };
        super::par_parts(parts, run);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, x, ws, ys);
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `blocks` random blocks of `dtype` with sane scales (f16 fields drawn from ±[0.01, 0.1]).
    pub(crate) fn random_blocks(dtype: DType, blocks: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let bb = dtype.block_bytes();
        let mut out: Vec<u8> = (0..blocks * bb).map(|_| next() as u8).collect();
        for b in 0..blocks {
            for &off in switchyard_runtime::quant::scale_offsets(dtype) {
                let v = 0.01 + (next() % 1000) as f32 / 1000.0 * 0.09;
                let v = if next() % 2 == 0 { v } else { -v };
                let bits = half::f16::from_f32(v).to_bits().to_le_bytes();
                out[b * bb + off..b * bb + off + 2].copy_from_slice(&bits);
            }
        }
        out
    }

    /// The shared dequantization (interpreter and prompt path) agrees with candle's, an
    /// independent implementation of the same block layouts, for every GGUF type.
    #[test]
    fn dequantization_agrees_with_candle_for_every_type() {
        use candle_core::quantized::{QStorage, QTensor};
        for dtype in switchyard_runtime::ALL_DTYPES
            .into_iter()
            .filter(|d| d.is_quantized())
        {
            let blocks = 4;
            let bytes = random_blocks(dtype, blocks, 11);
            let ours = switchyard_runtime::quant::dequantize(dtype, &bytes).unwrap();
            let g = crate::buffer::to_ggml_dtype(dtype).unwrap();
            let storage = QStorage::from_data(
                std::borrow::Cow::Borrowed(&bytes),
                &candle_core::Device::Cpu,
                g,
            )
            .unwrap();
            let theirs = QTensor::new(storage, (blocks * dtype.block_len(),))
                .unwrap()
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(ours, theirs, "{dtype}");
        }
    }

    /// Weights like a trained checkpoint's: heavy-tailed (a Student-t-like ratio of a value to
    /// a random magnitude), with outlier rows and columns.
    fn checkpoint_like(n: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut unit = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32
        };
        (0..n * k)
            .map(|i| {
                let (r, c) = (i / k, i % k);
                let v = (unit() - 0.5) / (0.05 + unit());
                let rs = if r % 13 == 5 { 8.0 } else { 1.0 };
                let cs = if c % 97 == 11 { 20.0 } else { 1.0 };
                0.02 * v * rs * cs
            })
            .collect()
    }

    /// The kernels compute llama.cpp's arithmetic: `Σ_l w_l · x̂_l` with the activations as
    /// quantized (`x̂`), except that a q4_1/q5_1 block's minimum multiplies the activations'
    /// stored f16 sum `s` instead of `d · Σq`. Against that in f64 the only error is f32 rounding
    /// of the per-group scale products and the running sum, a few 2⁻²⁴ per group on terms as
    /// large as `|x̂|·(|w| + max|w| of the block)` (offset formats subtract one such term). Up to
    /// [`SKINNY_ROWS`] activation rows (a batched decode step) are held to the same products, and so
    /// are more (prompts) where the integer prompt kernels run; elsewhere prompts take the
    /// dequantized f32 path and are held to f32 accumulation. Every kernel variant this CPU runs, every GGUF type, random blocks and
    /// checkpoint-like weights, activations with massive channels.
    #[test]
    fn integer_dots_compute_llamacpps_products() {
        let variants: Vec<Isa> = Isa::all_here()
            .into_iter()
            .filter(|i| available(DType::Q8_0, *i))
            .collect();
        let types = switchyard_runtime::ALL_DTYPES
            .into_iter()
            .filter(|d| d.is_quantized());
        for dtype in types {
            for (n, k, m, real) in [
                (5, 256, 1, false),
                (70, 512, 1, false),
                (67, 1536, 1, true),
                (13, 512, 5, false),
                (19, 768, 3, true),
                // A batched decode step: tiles of four activation rows, and the remainders.
                (21, 256, 16, true),
                (9, 256, 6, false),
                // Four: with AVX2, the integer prompt kernels' tiles of four rows; two to
                // four against q4_0: the weight-lanes kernel, a whole group of eight weight
                // rows and a remainder.
                (7, 512, 4, true),
                (5, 256, 4, false),
                (10, 256, 2, true),
                // More rows than a skinny batch: a prompt (the integer prompt kernels'
                // tiles of 16 activation rows, in pairs and alone, and weight rows in fours
                // and the remainder; or the dequantized GEMM).
                (11, 512, SKINNY_ROWS + 4, false),
                (9, 256, 40, true),
            ] {
                let per_row = k / dtype.block_len();
                let bytes = if real {
                    switchyard_runtime::quant::quantize(dtype, &checkpoint_like(n, k, 3)).unwrap()
                } else {
                    random_blocks(dtype, n * per_row, (n * k) as u64)
                };
                let w = QuantMatrix {
                    dtype,
                    bytes: &bytes,
                    n,
                    k,
                };
                let x: Vec<f32> = (0..m * k)
                    .map(|i| {
                        let v = ((i * 37 % 101) as f32 - 50.0) / 25.0;
                        if i % 211 == 17 {
                            v * 150.0
                        } else {
                            v
                        }
                    })
                    .collect();
                let format = act_format(dtype);
                let acts: Vec<act::QActs> = x
                    .chunks(k)
                    .map(|r| act::quantize(Isa::PORTABLE, r, format))
                    .collect();
                let dense = switchyard_runtime::quant::dequantize(dtype, &bytes).unwrap();
                let bl = dtype.block_len();
                let gamma = 4.0 * (k as f64 / 32.0 + 8.0) * 2f64.powi(-24);
                // What `matmul` chooses, and every kernel that it could have chosen instead:
                // the skinny-batch dot products for every batch they could take, the
                // weight-lanes kernel and the integer prompt kernels where they run.
                #[derive(Clone, Copy, Debug, PartialEq)]
                enum Path {
                    Chosen,
                    Skinny,
                    WeightLanes,
                    Prompt,
                }
                let paths = variants.iter().flat_map(|&isa| {
                    [Path::Chosen, Path::Skinny, Path::WeightLanes, Path::Prompt]
                        .into_iter()
                        .filter(move |&p| match p {
                            Path::Chosen => true,
                            Path::Skinny => m > 1 && m <= SKINNY_ROWS,
                            Path::WeightLanes => weight_lanes::available(dtype, isa, m),
                            Path::Prompt => m > 1 && prompt::available(dtype, isa),
                        })
                        .map(move |p| (isa, p))
                });
                for (isa, path) in paths {
                    let mut y = vec![f32::NAN; m * n];
                    match path {
                        Path::Chosen => assert!(matmul(isa, &x, m, &w, &mut y)),
                        Path::Skinny => skinny(isa, &x, m, &w, &mut y),
                        Path::WeightLanes => {
                            assert!(weight_lanes::matmul(isa, &x, m, &w, &mut y))
                        }
                        Path::Prompt => assert!(prompt::matmul(isa, &x, m, &w, &mut y)),
                    }
                    let dequantized = path == Path::Chosen
                        && m > skinny_rows(dtype, isa)
                        && !weight_lanes::available(dtype, isa, m)
                        && !prompt::available(dtype, isa);
                    if dequantized {
                        // Prompts without integer kernels: the dequantized weights times the
                        // f32 activations, within f32 accumulation over k terms (k·2⁻²³ of
                        // Σ|w·x|).
                        for c in 0..m {
                            for r in 0..n {
                                let (row, xs) =
                                    (&dense[r * k..(r + 1) * k], &x[c * k..(c + 1) * k]);
                                let want: f64 =
                                    row.iter().zip(xs).map(|(a, b)| *a as f64 * *b as f64).sum();
                                let mag: f64 = row
                                    .iter()
                                    .zip(xs)
                                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                                    .sum();
                                let tol = k as f64 * 2f64.powi(-23) * mag + 1e-30;
                                let got = y[c * n + r] as f64;
                                assert!(
                                    (got - want).abs() <= tol,
                                    "{isa} {dtype} dequantized prompt row {r} col {c}: {got} vs {want}"
                                );
                            }
                        }
                        continue;
                    }
                    for (c, a) in acts.iter().enumerate() {
                        let xq: Vec<f64> =
                            a.qs.iter()
                                .enumerate()
                                .map(|(i, &q)| q as f64 * a.d[i / format.block()] as f64)
                                .collect();
                        for r in 0..n {
                            let row = &dense[r * k..(r + 1) * k];
                            let mut want: f64 =
                                row.iter().zip(&xq).map(|(a, b)| *a as f64 * b).sum();
                            if format == ActFormat::Q8_1 {
                                for b in 0..per_row {
                                    let blk = &bytes[(r * per_row + b) * dtype.block_bytes()..];
                                    let mn =
                                        half::f16::from_le_bytes([blk[2], blk[3]]).to_f32() as f64;
                                    let sum: f64 = xq[b * 32..b * 32 + 32].iter().sum();
                                    want += mn * (a.s[b] as f64 - sum);
                                }
                            }
                            let mag: f64 = row
                                .chunks(bl)
                                .zip(xq.chunks(bl))
                                .map(|(wb, xb)| {
                                    let mx = wb.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                                    wb.iter()
                                        .zip(xb)
                                        .map(|(a, b)| (a.abs() as f64 + mx) * b.abs())
                                        .sum::<f64>()
                                })
                                .sum();
                            let tol = gamma * mag + 1e-30;
                            let got = y[c * n + r] as f64;
                            assert!(
                                (got - want).abs() <= tol,
                                "{isa} {dtype} {n}x{k} m={m} real={real} {path:?} row {r} col {c}: {got} vs {want} (tolerance {tol:.3e})"
                            );
                        }
                    }
                }
            }
        }
    }
}
