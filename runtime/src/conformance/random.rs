//! Seeded random tensors for conformance cases (never zeros, reproducible from the case name).

use crate::dtype::DType;
use crate::quant;
use crate::tensor::HostTensor;
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A random source seeded from a case name (FNV-1a), so every run sees the same inputs.
pub struct CaseRng(ChaCha8Rng);

impl CaseRng {
    pub fn new(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        CaseRng(ChaCha8Rng::seed_from_u64(h))
    }

    /// Standard-normal values times `scale`.
    pub fn normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v: f32 = StandardNormal.sample(&mut self.0);
                v * scale
            })
            .collect()
    }

    /// Values distributed like trained weight matrices `[rows, cols]`: heavy-tailed entries
    /// (Student's t with 3 degrees of freedom), a few outlier rows (×8) and columns (×20), scaled
    /// so a typical entry is about `scale`.
    pub fn checkpoint_like(&mut self, rows: usize, cols: usize, scale: f32) -> Vec<f32> {
        let t = rand_distr::StudentT::new(3.0f32).expect("valid degrees of freedom");
        let out_rows: Vec<usize> = (0..rows.div_ceil(64))
            .map(|_| self.0.random_range(0..rows))
            .collect();
        let out_cols: Vec<usize> = (0..cols.div_ceil(128))
            .map(|_| self.0.random_range(0..cols))
            .collect();
        let mut v = vec![0f32; rows * cols];
        for (i, row) in v.chunks_exact_mut(cols).enumerate() {
            let rs = if out_rows.contains(&i) { 8.0 } else { 1.0 };
            for (j, x) in row.iter_mut().enumerate() {
                let cs = if out_cols.contains(&j) { 20.0 } else { 1.0 };
                *x = t.sample(&mut self.0) * scale * rs * cs;
            }
        }
        v
    }

    /// Activations like a transformer's hidden states: Gaussian, with a few "massive" channels
    /// two orders of magnitude larger (as trained LLMs have), the same channels in every row.
    pub fn activations_with_outliers(&mut self, rows: usize, cols: usize) -> Vec<f32> {
        let massive: Vec<usize> = (0..3).map(|_| self.0.random_range(0..cols)).collect();
        let mut v = self.normal(rows * cols, 1.0);
        for row in v.chunks_exact_mut(cols) {
            for &c in &massive {
                row[c] *= 150.0;
            }
        }
        v
    }

    /// Uniform values in `lo..hi`.
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.random_range(lo..hi)).collect()
    }

    /// Uniform integers in `lo..hi`.
    pub fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<i64> {
        (0..n).map(|_| self.0.random_range(lo..hi)).collect()
    }

    /// A float tensor of `dtype` with standard-normal values.
    pub fn float_tensor(&mut self, dtype: DType, dims: &[usize], scale: f32) -> HostTensor {
        let v = self.normal(dims.iter().product(), scale);
        HostTensor::from_f32_as(dtype, dims, &v).expect("valid dims")
    }

    /// A quantized weight `[rows, cols]` of random blocks whose scale fields are set so values
    /// land roughly in [-2·scale, 2·scale] (every other byte of a block may take any value).
    pub fn quantized(&mut self, dtype: DType, rows: usize, cols: usize, scale: f32) -> HostTensor {
        let (d, second) = match dtype {
            DType::Q4_0 => (0.15, None),
            DType::Q4_1 => (0.15, Some(-1.0)),
            DType::Q5_0 => (0.07, None),
            DType::Q5_1 => (0.07, Some(-1.0)),
            DType::Q8_0 => (0.01, None),
            DType::Q2K => (0.03, Some(0.01)),
            DType::Q3K => (0.01, None),
            DType::Q4K => (0.002, Some(0.01)),
            DType::Q5K => (0.001, Some(0.01)),
            DType::Q6K => (0.0003, None),
            other => panic!("{other} is not a quantized type"),
        };
        let nbytes = dtype.storage_bytes(rows * cols);
        let mut bytes: Vec<u8> = (0..nbytes).map(|_| self.0.random()).collect();
        let offsets = quant::scale_offsets(dtype);
        for block in bytes.chunks_exact_mut(dtype.block_bytes()) {
            for (k, &off) in offsets.iter().enumerate() {
                let base = if k == 0 {
                    d
                } else {
                    second.expect("second scale")
                };
                let v: f32 = scale * base * self.0.random_range(0.5f32..1.5);
                block[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        HostTensor::new(dtype, &[rows, cols], bytes).expect("whole blocks")
    }
}
