//! Matrix products with block-quantized weights (llama.cpp's formats) on the CPU.
//!
//! Decoding (one activation row): the row is quantized to 8-bit blocks once, then every weight row
//! is dotted with it in integer arithmetic straight from its stored blocks ([`dot`]), rows split
//! over the compute threads. candle does the same but without AVX-512 VNNI, with one block at a
//! time through generic code, and (for q4_0 and q5_0) without SIMD at all.
//!
//! Prompts (many rows): each slice of weights is dequantized as it is packed for the f32 matrix
//! kernel ([`super::gemm`]), so the quantized product runs at the f32 kernel's speed.

pub(crate) mod act;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dot;

use super::kernels::Isa;
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

    /// Row `r`'s blocks covering columns `k0..k0 + len` (both multiples of the block length).
    pub fn row_range(&self, r: usize, k0: usize, len: usize) -> &[u8] {
        let (bl, bb) = (self.dtype.block_len(), self.dtype.block_bytes());
        let start = r * self.row_bytes() + k0 / bl * bb;
        &self.bytes[start..start + len / bl * bb]
    }
}

/// Types with integer dot kernels.
pub(crate) fn supported(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::Q4K | DType::Q6K
    )
}

/// True when [`gemv`] can run `dtype` with the kernels `isa` allows.
pub(crate) fn gemv_available(dtype: DType, isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        supported(dtype) && dot::available(isa)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, isa);
        false
    }
}

/// `y = W·x` for one activation row, rows of `W` split over candle's CPU worker threads.
/// Returns `false` (leaving `y` alone) when [`gemv_available`] is not.
pub(crate) fn gemv(isa: Isa, x: &[f32], w: &QuantMatrix<'_>, y: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !gemv_available(w.dtype, isa) {
            return false;
        }
        assert!(x.len() == w.k && y.len() == w.n && w.k.is_multiple_of(32));
        let a = act::quantize(x);
        let threads = super::worker_threads();
        // Small matrices are not worth waking the other threads for.
        if threads == 1 || w.bytes.len() < 32 * 1024 {
            dot::dot_rows(isa, w, &a, 0, y);
            return true;
        }
        let chunk = w.n.div_ceil(threads);
        super::par_chunks_mut(y, chunk, |i, out| dot::dot_rows(isa, w, &a, i * chunk, out));
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, x, w, y);
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

    /// The kernels compute `Σ_l w_l · x̂_l` exactly in integers per block, then scale: against
    /// that sum in f64 (the activations as quantized, `x̂`), the only error is f32 rounding of
    /// the per-block scale products and the running sum, a few 2⁻²⁴ per block on terms as large
    /// as `|x̂|·(|w| + max|w| of the block)` (offset formats subtract one such term). Every
    /// kernel variant this CPU runs, random blocks and checkpoint-like weights, activations
    /// with massive channels.
    #[test]
    fn integer_dots_match_the_dequantized_product() {
        let variants: Vec<Isa> = Isa::all_here()
            .into_iter()
            .filter(|i| gemv_available(DType::Q8_0, *i))
            .collect();
        for isa in variants {
            for dtype in [
                DType::Q8_0,
                DType::Q4_0,
                DType::Q5_0,
                DType::Q4K,
                DType::Q6K,
            ] {
                for (n, k, real) in [
                    (5, 256, false),
                    (70, 512, false),
                    (300, 1536, false),
                    (67, 1536, true),
                ] {
                    let per_row = k / dtype.block_len();
                    let bytes = if real {
                        switchyard_runtime::quant::quantize(dtype, &checkpoint_like(n, k, 3))
                            .unwrap()
                    } else {
                        random_blocks(dtype, n * per_row, (n * k) as u64)
                    };
                    let w = QuantMatrix {
                        dtype,
                        bytes: &bytes,
                        n,
                        k,
                    };
                    let x: Vec<f32> = (0..k)
                        .map(|i| {
                            let v = ((i * 37 % 101) as f32 - 50.0) / 25.0;
                            if i % 211 == 17 {
                                v * 150.0
                            } else {
                                v
                            }
                        })
                        .collect();
                    let a = act::quantize(&x);
                    let xq: Vec<f64> =
                        a.qs.iter()
                            .enumerate()
                            .map(|(i, &q)| q as f64 * a.d[i / 32] as f64)
                            .collect();
                    let dense = switchyard_runtime::quant::dequantize(dtype, &bytes).unwrap();
                    let mut y = vec![f32::NAN; n];
                    assert!(gemv(isa, &x, &w, &mut y));
                    let bl = dtype.block_len();
                    let gamma = 4.0 * (k as f64 / 32.0 + 8.0) * 2f64.powi(-24);
                    for r in 0..n {
                        let row = &dense[r * k..(r + 1) * k];
                        let want: f64 = row.iter().zip(&xq).map(|(a, b)| *a as f64 * b).sum();
                        let mag: f64 = row
                            .chunks(bl)
                            .zip(xq.chunks(bl))
                            .map(|(wb, xb)| {
                                let m = wb.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                                wb.iter()
                                    .zip(xb)
                                    .map(|(a, b)| (a.abs() as f64 + m) * b.abs())
                                    .sum::<f64>()
                            })
                            .sum();
                        let tol = gamma * mag;
                        assert!(
                            (y[r] as f64 - want).abs() <= tol,
                            "{isa} {dtype} {n}x{k} real={real} row {r}: {} vs {want} (tolerance {tol:.3e})",
                            y[r]
                        );
                    }
                }
            }
        }
    }
}
