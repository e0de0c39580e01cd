//! Converting weights to GGUF storage types with candle's quantizers (llama.cpp's block formats).

use crate::candle::to_ggml_dtype;
use crate::models::{gguf::export_gguf, Model, ModelError};
use crate::{DType, HostTensor};
use std::path::Path;

/// The type a tensor of `cols` columns is stored in when `want` is asked for: k-quants need
/// rows of whole 256-element super-blocks, so narrower matrices fall back to the nearest
/// 32-element format, as llama.cpp's quantizer does.
pub fn storage_type(want: DType, cols: usize) -> DType {
    if want.block_len() <= 1 || cols.is_multiple_of(want.block_len()) {
        return want;
    }
    match want {
        DType::Q2K | DType::Q3K => DType::Q4_0,
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        other => other,
    }
}

/// Converts an f32 tensor to `dtype` (plain or GGUF block-quantized).
pub fn convert(t: &HostTensor, dtype: DType) -> crate::Result<HostTensor> {
    if !dtype.is_quantized() {
        return t.to_dtype(dtype);
    }
    let ggml = to_ggml_dtype(dtype).ok_or_else(|| crate::Error::Unsupported {
        device: "cpu".into(),
        what: format!("quantizing to {dtype}"),
    })?;
    let err =
        |e: candle_core::Error| crate::Error::backend("cpu", format!("quantize to {dtype}: {e}"));
    let values = t.to_f32_vec()?;
    let tensor =
        candle_core::Tensor::from_vec(values, t.dims(), &candle_core::Device::Cpu).map_err(err)?;
    let q = candle_core::quantized::QTensor::quantize(&tensor, ggml).map_err(err)?;
    let bytes = q.data().map_err(err)?.into_owned();
    HostTensor::new(dtype, t.dims(), bytes)
}

/// Writes `model` as a GGUF file whose matrices are stored as `to` (norms stay f32, as llama.cpp
/// keeps them).
pub fn quantize_to_gguf(model: &Model, to: DType, out: &Path) -> Result<(), ModelError> {
    if !(to.is_float() || to.is_quantized()) {
        return Err(ModelError::InvalidOption {
            option: "--to",
            message: format!("{to} is not a weight type (f32, f16, bf16, q4_0 ... q6_k)"),
        });
    }
    export_gguf(
        model,
        to,
        &|_name, t| {
            if t.dims().len() < 2 {
                return Ok(t);
            }
            let cols = *t.dims().last().expect("rank 2");
            Ok(convert(&t, storage_type(to, cols))?)
        },
        out,
    )
}
