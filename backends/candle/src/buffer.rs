//! Device buffers of the candle backend: candle tensors, or quantized weights.

use crate::cpu::packed::PackedMatrix;
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType as CDType, Device as CDevice, Tensor};
use std::borrow::Cow;
use std::sync::Arc;
use switchyard_runtime::{DType, DeviceBuffer, Error, HostTensor, Result};

/// A tensor on a candle device, or a quantized weight ready for candle's quantized matmul.
#[derive(Clone, Debug)]
pub enum CandleBuffer {
    /// A plain tensor.
    Tensor(Tensor),
    /// A GGUF block-quantized weight `[rows, cols]`.
    Quantized {
        /// The weight as candle's quantized matmul operand.
        weight: Arc<QMatMul>,
        /// The same weight as a quantized tensor (for embedding lookups and downloads).
        tensor: Arc<QTensor>,
        /// Switchyard's dtype for it.
        dtype: DType,
        /// `[rows, cols]`.
        dims: Vec<usize>,
    },
    /// An f32 weight laid out for the CPU matmul kernels (see [`PackedMatrix`]).
    Packed(Arc<PackedMatrix>),
    /// A GGUF block-quantized weight `[rows, cols]` read in place by the CPU kernels: the host
    /// tensor itself, which for a GGUF file borrows the memory map (no copy is made).
    Blocks(HostTensor),
    /// A small integer tensor from the host (token ids, positions) whose values are kept on the
    /// host too, so the ops that need them there (gather bounds, the KV-write offset) never read
    /// a GPU back mid-graph.
    Indices {
        /// The tensor on the device.
        tensor: Tensor,
        /// Its values, row-major.
        values: Arc<[i64]>,
    },
}

/// Integer tensors up to this many elements are uploaded as [`CandleBuffer::Indices`].
pub(crate) const MAX_INDICES: usize = 4096;

impl CandleBuffer {
    /// The plain tensor, or an error naming `what` for quantized weights.
    pub fn tensor(&self, what: &str) -> Result<&Tensor> {
        match self {
            CandleBuffer::Tensor(t) | CandleBuffer::Indices { tensor: t, .. } => Ok(t),
            CandleBuffer::Quantized { dtype, .. } => Err(Error::Unsupported {
                device: "candle".into(),
                what: format!("a {dtype} tensor as {what} (quantized tensors are matmul and gather weights only)"),
            }),
            CandleBuffer::Packed(_) => Err(Error::Unsupported {
                device: "candle".into(),
                what: format!("a packed weight as {what} (it was uploaded for transposed matmul and gather only)"),
            }),
            CandleBuffer::Blocks(h) => Err(Error::Unsupported {
                device: "candle".into(),
                what: format!("a {} tensor as {what} (quantized tensors are matmul and gather weights only)", h.dtype()),
            }),
        }
    }
}

impl DeviceBuffer for CandleBuffer {
    fn dtype(&self) -> DType {
        match self {
            CandleBuffer::Tensor(t) | CandleBuffer::Indices { tensor: t, .. } => {
                from_candle_dtype(t.dtype()).unwrap_or(DType::F32)
            }
            CandleBuffer::Quantized { dtype, .. } => *dtype,
            CandleBuffer::Packed(_) => DType::F32,
            CandleBuffer::Blocks(h) => h.dtype(),
        }
    }

    fn dims(&self) -> &[usize] {
        match self {
            CandleBuffer::Tensor(t) | CandleBuffer::Indices { tensor: t, .. } => t.dims(),
            CandleBuffer::Quantized { dims, .. } => dims,
            CandleBuffer::Packed(p) => p.dims(),
            CandleBuffer::Blocks(h) => h.dims(),
        }
    }
}

/// candle's dtype for a plain Switchyard dtype.
pub fn to_candle_dtype(d: DType) -> Option<CDType> {
    Some(match d {
        DType::F32 => CDType::F32,
        DType::F16 => CDType::F16,
        DType::BF16 => CDType::BF16,
        DType::I32 => CDType::I32,
        DType::I64 => CDType::I64,
        DType::U32 => CDType::U32,
        DType::U8 => CDType::U8,
        _ => return None,
    })
}

/// Switchyard's dtype for a candle dtype.
pub fn from_candle_dtype(d: CDType) -> Option<DType> {
    Some(match d {
        CDType::F32 => DType::F32,
        CDType::F16 => DType::F16,
        CDType::BF16 => DType::BF16,
        CDType::I32 => DType::I32,
        CDType::I64 => DType::I64,
        CDType::U32 => DType::U32,
        CDType::U8 => DType::U8,
        _ => return None,
    })
}

/// candle's GGUF block type for a quantized Switchyard dtype.
pub fn to_ggml_dtype(d: DType) -> Option<GgmlDType> {
    Some(match d {
        DType::Q4_0 => GgmlDType::Q4_0,
        DType::Q4_1 => GgmlDType::Q4_1,
        DType::Q5_0 => GgmlDType::Q5_0,
        DType::Q5_1 => GgmlDType::Q5_1,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q2K => GgmlDType::Q2K,
        DType::Q3K => GgmlDType::Q3K,
        DType::Q4K => GgmlDType::Q4K,
        DType::Q5K => GgmlDType::Q5K,
        DType::Q6K => GgmlDType::Q6K,
        _ => return None,
    })
}

pub(crate) fn backend_err(device: &str, what: &str, e: candle_core::Error) -> Error {
    Error::backend(device, format!("{what}: {e}"))
}

/// Copies a host tensor to `device`.
pub(crate) fn upload(device: &CDevice, name: &str, host: &HostTensor) -> Result<CandleBuffer> {
    let err = |e| backend_err(name, "upload", e);
    if let Some(d) = to_candle_dtype(host.dtype()) {
        let t = Tensor::from_raw_buffer(host.as_bytes(), d, host.dims(), device).map_err(err)?;
        if host.dtype().is_int() && host.numel() <= MAX_INDICES {
            return Ok(CandleBuffer::Indices {
                tensor: t,
                values: host.to_i64_vec()?.into(),
            });
        }
        return Ok(CandleBuffer::Tensor(t));
    }
    let g = to_ggml_dtype(host.dtype()).expect("every dtype is plain or quantized");
    // candle views the bytes as blocks and requires them aligned for their f16 fields; bytes
    // borrowed from a memory map may sit at any offset, so copy those into aligned words.
    let bytes = host.as_bytes();
    let words: Vec<u32>;
    let aligned: &[u8] = if (bytes.as_ptr() as usize).is_multiple_of(4) {
        bytes
    } else {
        let mut w = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut w)[..bytes.len()].copy_from_slice(bytes);
        words = w;
        &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()]
    };
    let storage = QStorage::from_data(Cow::Borrowed(aligned), device, g).map_err(err)?;
    let tensor = Arc::new(QTensor::new(storage, host.dims()).map_err(err)?);
    let weight = Arc::new(QMatMul::from_arc(tensor.clone()).map_err(err)?);
    Ok(CandleBuffer::Quantized {
        weight,
        tensor,
        dtype: host.dtype(),
        dims: host.dims().to_vec(),
    })
}

/// Copies a buffer back to the host.
pub(crate) fn download(name: &str, buffer: &CandleBuffer) -> Result<HostTensor> {
    let err = |e| backend_err(name, "download", e);
    match buffer {
        CandleBuffer::Tensor(t) | CandleBuffer::Indices { tensor: t, .. } => {
            let dtype = from_candle_dtype(t.dtype()).ok_or_else(|| {
                Error::backend(name, format!("unsupported dtype {:?}", t.dtype()))
            })?;
            let flat = t.flatten_all().map_err(err)?;
            let bytes: Vec<u8> = match dtype {
                DType::F32 => bytes_of(flat.to_vec1::<f32>().map_err(err)?),
                DType::F16 => bytes_of(flat.to_vec1::<half::f16>().map_err(err)?),
                DType::BF16 => bytes_of(flat.to_vec1::<half::bf16>().map_err(err)?),
                DType::I32 => bytes_of(flat.to_vec1::<i32>().map_err(err)?),
                DType::I64 => bytes_of(flat.to_vec1::<i64>().map_err(err)?),
                DType::U32 => bytes_of(flat.to_vec1::<u32>().map_err(err)?),
                DType::U8 => flat.to_vec1::<u8>().map_err(err)?,
                _ => unreachable!("from_candle_dtype returns plain dtypes"),
            };
            HostTensor::new(dtype, t.dims(), bytes)
        }
        CandleBuffer::Quantized {
            tensor,
            dtype,
            dims,
            ..
        } => {
            let data = tensor.data().map_err(err)?;
            HostTensor::new(*dtype, dims, data.into_owned())
        }
        CandleBuffer::Packed(p) => HostTensor::from_f32_vec(p.dims(), p.unpack()),
        CandleBuffer::Blocks(h) => Ok(h.clone()),
    }
}

fn bytes_of<T: bytemuck::Pod>(v: Vec<T>) -> Vec<u8> {
    bytemuck::cast_slice(&v).to_vec()
}
