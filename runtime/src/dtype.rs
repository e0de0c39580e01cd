//! Element types: plain numeric types and the GGUF block-quantized weight types.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor.
///
/// Plain types store one element per `size_in_bytes` bytes. Quantized types (the GGUF/ggml block
/// formats) store elements in fixed-size blocks along the last dimension; they are only used for
/// weights (the right-hand side of [`crate::Op::MatMul`] and the table of [`crate::Op::Gather`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer (positions).
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 32-bit integer (token ids).
    U32,
    /// Unsigned 8-bit integer (booleans and masks: 0 or 1).
    U8,
    /// ggml Q4_0: blocks of 32, one f16 scale, 4-bit values offset by 8.
    Q4_0,
    /// ggml Q4_1: blocks of 32, f16 scale and minimum, 4-bit values.
    Q4_1,
    /// ggml Q5_0: blocks of 32, f16 scale, 5-bit values offset by 16.
    Q5_0,
    /// ggml Q5_1: blocks of 32, f16 scale and minimum, 5-bit values.
    Q5_1,
    /// ggml Q8_0: blocks of 32, one f16 scale, 8-bit signed values.
    Q8_0,
    /// ggml Q2_K: super-blocks of 256 with 4-bit sub-block scales and minimums.
    Q2K,
    /// ggml Q3_K: super-blocks of 256 with 6-bit sub-block scales.
    Q3K,
    /// ggml Q4_K: super-blocks of 256 with 6-bit sub-block scales and minimums.
    Q4K,
    /// ggml Q5_K: super-blocks of 256 with 6-bit sub-block scales and minimums.
    Q5K,
    /// ggml Q6_K: super-blocks of 256 with 8-bit sub-block scales.
    Q6K,
}

/// Every dtype, in declaration order.
pub const ALL_DTYPES: [DType; 17] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::I64,
    DType::U32,
    DType::U8,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

impl DType {
    /// The lower-case name used in flags, file names and messages (`f32`, `q4_k`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U32 => "u32",
            DType::U8 => "u8",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q2K => "q2_k",
            DType::Q3K => "q3_k",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
        }
    }

    /// True for f32, f16 and bf16.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// True for the integer types (including u8).
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64 | DType::U32 | DType::U8)
    }

    /// True for the GGUF block-quantized types.
    pub fn is_quantized(self) -> bool {
        !self.is_float() && !self.is_int()
    }

    /// Number of elements in one storage block (1 for plain types).
    pub fn block_len(self) -> usize {
        match self {
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K => 256,
            _ => 1,
        }
    }

    /// Bytes in one storage block (the element size for plain types).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q2K => 84,
            DType::Q3K => 110,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
        }
    }

    /// Bytes needed to store `numel` elements (for quantized types, `numel` must be a multiple of
    /// [`DType::block_len`]; shapes guarantee it by requiring the last dimension to be one).
    pub fn storage_bytes(self, numel: usize) -> usize {
        numel / self.block_len() * self.block_bytes()
    }

    /// Average bits per element (for reporting weight sizes).
    pub fn bits_per_element(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_len() as f64
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when a string names no dtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype '{given}': expected one of {}", ALL_DTYPES.iter().map(|d| d.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownDType {
    /// The string that was given.
    pub given: String,
}

impl FromStr for DType {
    type Err = UnknownDType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let lower = match lower.as_str() {
            "float32" => "f32",
            "float16" | "half" => "f16",
            "bfloat16" => "bf16",
            "q2k" => "q2_k",
            "q3k" => "q3_k",
            "q4k" => "q4_k",
            "q5k" => "q5_k",
            "q6k" => "q6_k",
            other => other,
        };
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.name() == lower)
            .ok_or_else(|| UnknownDType {
                given: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert_eq!("BFloat16".parse::<DType>().unwrap(), DType::BF16);
        let err = "q9_9".parse::<DType>().unwrap_err().to_string();
        assert!(err.contains("q9_9") && err.contains("q4_k"), "{err}");
    }

    #[test]
    fn block_sizes_match_ggml() {
        // Bytes per block as defined by the GGUF format.
        assert_eq!(DType::Q4_0.storage_bytes(64), 36);
        assert_eq!(DType::Q8_0.storage_bytes(32), 34);
        assert_eq!(DType::Q4K.storage_bytes(512), 288);
        assert_eq!(DType::Q6K.storage_bytes(256), 210);
        assert!((DType::Q4K.bits_per_element() - 4.5).abs() < 1e-9);
        assert_eq!(DType::F16.storage_bytes(3), 6);
    }
}
