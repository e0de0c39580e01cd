//! Converting weights to GGUF storage types with candle's quantizers (llama.cpp's block formats).

use crate::candle::to_ggml_dtype;
use crate::models::{gguf::export_gguf, weight_graph, Model, ModelError, WeightSource};
use crate::{DType, HostTensor};
use std::collections::HashMap;
use std::path::Path;
use switchyard_runtime::{ParamKind, WeightUse};

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

/// A model's weights quantized as the engine reads them (`--quantize`): every matrix the graphs
/// use only as a transposed matmul operand or an embedding table is stored as the requested
/// type (falling back as [`storage_type`] does for narrow rows); norms and biases stay as they
/// are. Nothing is quantized before the engine asks for the tensor.
pub struct QuantizedWeights {
    inner: Box<dyn WeightSource>,
    /// Weight name to its stored type.
    plan: HashMap<String, DType>,
}

impl QuantizedWeights {
    /// Wraps `model`'s weights so its matrices are quantized to `to` on load.
    pub fn wrap(model: Model, to: DType) -> Result<Model, ModelError> {
        if !to.is_quantized() {
            return Err(ModelError::InvalidOption {
                option: "--quantize",
                message: format!(
                    "{to} is not a block-quantized type (q8_0, q4_k, q6_k, q4_0, ...)"
                ),
            });
        }
        let graph = weight_graph(&model.config)?;
        let mut plan = HashMap::new();
        for p in graph.signature().params {
            if p.kind != ParamKind::Weight {
                continue;
            }
            let uses = graph.uses_of(graph.param(&p.name).expect("declared"));
            let dims = p
                .spec
                .shape
                .fixed_dims()
                .expect("weights have fixed shapes");
            let matrix = dims.len() == 2
                && uses.contains(&WeightUse::MatMulTransposed)
                && uses
                    .iter()
                    .all(|u| matches!(u, WeightUse::MatMulTransposed | WeightUse::Gather));
            if matrix {
                plan.insert(p.name, storage_type(to, dims[1]));
            }
        }
        Ok(Model {
            weights: Box::new(QuantizedWeights {
                inner: model.weights,
                plan,
            }),
            ..model
        })
    }
}

impl WeightSource for QuantizedWeights {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&self, name: &str) -> crate::models::Result<HostTensor> {
        let t = self.inner.tensor(name)?;
        match self.planned(name) {
            Some(&q) if t.dtype() != q => {
                let f = if t.dtype() == DType::F32 {
                    t
                } else {
                    t.to_dtype(DType::F32)?
                };
                Ok(convert(&f, q)?)
            }
            _ => Ok(t),
        }
    }

    fn origin(&self, name: &str) -> String {
        match self.planned(name) {
            Some(q) => format!("{} (quantized to {q} on load)", self.inner.origin(name)),
            None => self.inner.origin(name),
        }
    }

    fn stored_dtype(&self, name: &str) -> Option<DType> {
        self.planned(name)
            .copied()
            .or_else(|| self.inner.stored_dtype(name))
    }
}

impl QuantizedWeights {
    /// The planned type of the weight `name` (a graph name, or a GPT-2 checkpoint's
    /// `transformer.`-prefixed one).
    fn planned(&self, name: &str) -> Option<&DType> {
        self.plan.get(name).or_else(|| {
            name.strip_prefix("transformer.")
                .and_then(|n| self.plan.get(n))
        })
    }
}
