//! Tensor specifications and host tensors (owned, or borrowed from a memory map without copying).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant;
use crate::shape::Shape;
use half::{bf16, f16};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// The dtype and shape of a graph value or parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Element type.
    pub dtype: DType,
    /// Shape, possibly with symbolic dimensions.
    pub shape: Shape,
}

impl TensorSpec {
    /// A spec from a dtype and a shape.
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> Self {
        TensorSpec {
            dtype,
            shape: shape.into(),
        }
    }

    /// Bytes at the largest size of every symbolic dimension.
    pub fn max_bytes(&self) -> usize {
        self.dtype.storage_bytes(self.shape.max_numel())
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// Bytes shared between host tensors: an owned vector, or a range of a memory map (or any other
/// byte owner) that is never copied.
#[derive(Clone)]
pub struct HostBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    offset: usize,
    len: usize,
    borrowed: bool,
    release: Option<PageRelease>,
}

/// How a source of borrowed bytes lets the pages of `owner[offset..offset + len]` leave this
/// process's resident memory (a read-only memory map: `madvise(MADV_DONTNEED)`; the pages are read
/// from the file again if they are touched later, so nothing is lost). Called with the offset and
/// length of one tensor's bytes.
pub type PageRelease = Arc<dyn Fn(usize, usize) + Send + Sync>;

impl HostBytes {
    fn owned(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        HostBytes {
            owner: Arc::new(bytes),
            offset: 0,
            len,
            borrowed: false,
            release: None,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.offset..self.offset + self.len]
    }
}

/// A vector of plain values seen as its bytes (little-endian hosts only, as everywhere here).
struct PodBytes<T>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for PodBytes<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// A tensor in host memory: dtype, concrete dimensions and little-endian bytes.
///
/// Cloning is cheap (the bytes are shared). A tensor made with [`HostTensor::from_shared`]
/// borrows its bytes from their owner (for example a memory-mapped safetensors file) without
/// copying them.
///
/// ```
/// use switchyard_runtime::{DType, HostTensor};
/// let t = HostTensor::from_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(t.dtype(), DType::F32);
/// let h = t.to_dtype(DType::F16).unwrap();
/// assert_eq!(h.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
/// ```
#[derive(Clone)]
pub struct HostTensor {
    dtype: DType,
    dims: Vec<usize>,
    data: HostBytes,
}

impl fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostTensor({}{:?}, {} bytes{})",
            self.dtype,
            self.dims,
            self.data.len,
            if self.data.borrowed { ", borrowed" } else { "" }
        )
    }
}

impl PartialEq for HostTensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.dims == other.dims && self.as_bytes() == other.as_bytes()
    }
}

fn check_layout(dtype: DType, dims: &[usize], len: usize) -> Result<()> {
    // Checked: dimensions from a file may multiply past usize, and a wrapped product could
    // match a short buffer.
    let numel = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            Error::InvalidTensor(format!("{dtype} tensor {dims:?}: too many elements"))
        })?;
    if dtype.is_quantized() {
        let last = dims.last().copied().unwrap_or(1);
        if last % dtype.block_len() != 0 {
            return Err(Error::InvalidTensor(format!(
                "{dtype} tensor {dims:?}: the last dimension must be a multiple of the block length {}",
                dtype.block_len()
            )));
        }
    }
    let expected = (numel / dtype.block_len())
        .checked_mul(dtype.block_bytes())
        .ok_or_else(|| Error::InvalidTensor(format!("{dtype} tensor {dims:?}: too many bytes")))?;
    if expected != len {
        return Err(Error::InvalidTensor(format!(
            "{dtype} tensor {dims:?} needs {expected} bytes, got {len}"
        )));
    }
    Ok(())
}

macro_rules! le_values {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(std::mem::size_of::<$t>())
            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
    };
}

impl HostTensor {
    /// A tensor owning `bytes` (little-endian, row-major). Fails when the length does not fit.
    pub fn new(dtype: DType, dims: &[usize], bytes: Vec<u8>) -> Result<Self> {
        check_layout(dtype, dims, bytes.len())?;
        Ok(HostTensor {
            dtype,
            dims: dims.to_vec(),
            data: HostBytes::owned(bytes),
        })
    }

    /// A tensor whose bytes are `owner[offset..offset + len]`, borrowed without copying.
    pub fn from_shared(
        dtype: DType,
        dims: &[usize],
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        let total = (*owner).as_ref().len();
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(Error::InvalidTensor(format!(
                "byte range {offset}..{} lies outside its {total}-byte source",
                offset.saturating_add(len)
            )));
        }
        check_layout(dtype, dims, len)?;
        Ok(HostTensor {
            dtype,
            dims: dims.to_vec(),
            data: HostBytes {
                owner,
                offset,
                len,
                borrowed: true,
                release: None,
            },
        })
    }

    /// An f32 tensor that takes ownership of `values` without copying them.
    pub fn from_f32_vec(dims: &[usize], values: Vec<f32>) -> Result<Self> {
        let owner = Arc::new(PodBytes(values));
        let len = (*owner).as_ref().len();
        check_layout(DType::F32, dims, len)?;
        Ok(HostTensor {
            dtype: DType::F32,
            dims: dims.to_vec(),
            data: HostBytes {
                owner,
                offset: 0,
                len,
                borrowed: false,
                release: None,
            },
        })
    }

    /// An f32 tensor.
    pub fn from_f32(dims: &[usize], values: &[f32]) -> Result<Self> {
        Self::new(
            DType::F32,
            dims,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// An i32 tensor.
    pub fn from_i32(dims: &[usize], values: &[i32]) -> Result<Self> {
        Self::new(
            DType::I32,
            dims,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// A u32 tensor.
    pub fn from_u32(dims: &[usize], values: &[u32]) -> Result<Self> {
        Self::new(
            DType::U32,
            dims,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// An i64 tensor.
    pub fn from_i64(dims: &[usize], values: &[i64]) -> Result<Self> {
        Self::new(
            DType::I64,
            dims,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// A u8 tensor.
    pub fn from_u8(dims: &[usize], values: &[u8]) -> Result<Self> {
        Self::new(DType::U8, dims, values.to_vec())
    }

    /// A tensor of `dtype` from f32 values: floats are rounded to nearest, integers truncated
    /// toward zero (saturating). Quantized dtypes are not accepted.
    pub fn from_f32_as(dtype: DType, dims: &[usize], values: &[f32]) -> Result<Self> {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            DType::BF16 => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
            DType::I32 => values
                .iter()
                .flat_map(|v| (*v as i32).to_le_bytes())
                .collect(),
            DType::I64 => values
                .iter()
                .flat_map(|v| (*v as i64).to_le_bytes())
                .collect(),
            DType::U32 => values
                .iter()
                .flat_map(|v| (*v as u32).to_le_bytes())
                .collect(),
            DType::U8 => values.iter().map(|v| *v as u8).collect(),
            q => {
                return Err(Error::InvalidTensor(format!(
                    "cannot build a {q} tensor from f32 values: quantize it instead"
                )))
            }
        };
        Self::new(dtype, dims, bytes)
    }

    /// A tensor of `dtype` from i64 values (cast like Rust's `as`). Quantized dtypes are not accepted.
    pub fn from_i64_as(dtype: DType, dims: &[usize], values: &[i64]) -> Result<Self> {
        match dtype {
            DType::I32 => {
                Self::from_i32(dims, &values.iter().map(|v| *v as i32).collect::<Vec<_>>())
            }
            DType::I64 => Self::from_i64(dims, values),
            DType::U32 => {
                Self::from_u32(dims, &values.iter().map(|v| *v as u32).collect::<Vec<_>>())
            }
            DType::U8 => Self::from_u8(dims, &values.iter().map(|v| *v as u8).collect::<Vec<_>>()),
            _ => Self::from_f32_as(
                dtype,
                dims,
                &values.iter().map(|v| *v as f32).collect::<Vec<_>>(),
            ),
        }
    }

    /// A zero-filled tensor (quantized zero blocks decode to zeros too).
    pub fn zeros(dtype: DType, dims: &[usize]) -> Result<Self> {
        let numel: usize = dims.iter().product();
        Self::new(dtype, dims, vec![0u8; dtype.storage_bytes(numel)])
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Concrete dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The spec (dtype and fixed shape) of this tensor.
    pub fn spec(&self) -> TensorSpec {
        TensorSpec::new(self.dtype, Shape::fixed(&self.dims))
    }

    /// The raw little-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// True when the bytes are borrowed from a shared owner (e.g. a memory map), not copied.
    pub fn is_borrowed(&self) -> bool {
        self.data.borrowed
    }

    /// This tensor with the way its (borrowed) bytes' source lets their pages go; see
    /// [`release_pages`](Self::release_pages).
    pub fn with_page_release(mut self, release: PageRelease) -> Self {
        self.data.release = Some(release);
        self
    }

    /// Says that this process will not read these bytes again soon: a device that keeps its own
    /// copy (a repacked or uploaded weight) calls it so that the file's pages do not stay
    /// resident beside the copy. Reading the bytes afterwards still gives them (from the file
    /// again). Does nothing for owned bytes or a source without a [`PageRelease`].
    pub fn release_pages(&self) {
        self.release_pages_of(0..self.data.len);
    }

    /// [`release_pages`](Self::release_pages) for the bytes `range` of this tensor (clamped to
    /// its length).
    pub fn release_pages_of(&self, range: std::ops::Range<usize>) {
        let (start, end) = (range.start.min(self.data.len), range.end.min(self.data.len));
        if let (Some(release), true) = (&self.data.release, end > start) {
            release(self.data.offset + start, end - start);
        }
    }

    /// The same bytes under new dimensions with the same element count.
    pub fn reshape(&self, dims: &[usize]) -> Result<Self> {
        check_layout(self.dtype, dims, self.data.len)?;
        Ok(HostTensor {
            dtype: self.dtype,
            dims: dims.to_vec(),
            data: self.data.clone(),
        })
    }

    /// Values as f32: floats widened, integers converted, quantized blocks dequantized.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let b = self.as_bytes();
        Ok(match self.dtype {
            DType::F32 => le_values!(b, f32).collect(),
            DType::F16 => le_values!(b, u16)
                .map(|v| f16::from_bits(v).to_f32())
                .collect(),
            DType::BF16 => le_values!(b, u16)
                .map(|v| bf16::from_bits(v).to_f32())
                .collect(),
            DType::I32 => le_values!(b, i32).map(|v| v as f32).collect(),
            DType::I64 => le_values!(b, i64).map(|v| v as f32).collect(),
            DType::U32 => le_values!(b, u32).map(|v| v as f32).collect(),
            DType::U8 => b.iter().map(|&v| v as f32).collect(),
            q => quant::dequantize(q, b)?,
        })
    }

    /// Values of an integer tensor as i64. Fails for float and quantized tensors.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let b = self.as_bytes();
        Ok(match self.dtype {
            DType::I32 => le_values!(b, i32).map(i64::from).collect(),
            DType::I64 => le_values!(b, i64).collect(),
            DType::U32 => le_values!(b, u32).map(i64::from).collect(),
            DType::U8 => b.iter().map(|&v| i64::from(v)).collect(),
            other => {
                return Err(Error::DTypeMismatch {
                    what: "integer view of a host tensor".into(),
                    expected: "i32, i64, u32 or u8".into(),
                    got: other.to_string(),
                })
            }
        })
    }

    /// Values of an integer tensor as u32 (token ids). Fails for other dtypes or negative values.
    pub fn to_u32_vec(&self) -> Result<Vec<u32>> {
        self.to_i64_vec()?
            .into_iter()
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| Error::InvalidTensor(format!("value {v} does not fit in u32")))
            })
            .collect()
    }

    /// Converts to another plain dtype (floats round to nearest; quantized targets are refused).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        if self.dtype.is_int() && dtype.is_int() {
            return Self::from_i64_as(dtype, &self.dims, &self.to_i64_vec()?);
        }
        Self::from_f32_as(dtype, &self.dims, &self.to_f32_vec()?)
    }
}

#[derive(Serialize, Deserialize)]
struct HostTensorRepr {
    dtype: DType,
    dims: Vec<usize>,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

impl Serialize for HostTensor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HostTensorRepr {
            dtype: self.dtype,
            dims: self.dims.clone(),
            bytes: self.as_bytes().to_vec(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for HostTensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = HostTensorRepr::deserialize(d)?;
        HostTensor::new(r.dtype, &r.dims, r.bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/run.sh (emulation_artifact): dimensions whose product overflows usize made
    /// the layout check overflow (and, wrapped in a release build, could match a short buffer).
    #[test]
    fn dimensions_whose_product_overflows_are_refused() {
        let huge = 1usize << 62;
        for dims in [[huge, 4], [huge, 5]] {
            let e = HostTensor::new(DType::F32, &dims, vec![0; 16]).unwrap_err();
            assert!(e.to_string().contains("too many"), "{e}");
        }
        // 2^62 elements of f32 are 2^64 bytes: the byte count overflows too.
        let e = HostTensor::new(DType::F32, &[huge], vec![]).unwrap_err();
        assert!(e.to_string().contains("too many"), "{e}");
    }

    #[test]
    fn conversions() {
        let t = HostTensor::from_f32(&[3], &[1.5, -2.25, 3.0]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.5, -2.25, 3.0]);
        let b = t.to_dtype(DType::BF16).unwrap();
        assert_eq!(b.as_bytes().len(), 6);
        assert_eq!(b.to_f32_vec().unwrap(), vec![1.5, -2.25, 3.0]);
        let i = t.to_dtype(DType::I32).unwrap();
        assert_eq!(i.to_i64_vec().unwrap(), vec![1, -2, 3]);
        assert!(t.to_i64_vec().is_err());
        assert!(HostTensor::from_f32(&[2], &[1.0]).is_err());
        assert!(HostTensor::from_i64(&[1], &[-1])
            .unwrap()
            .to_u32_vec()
            .is_err());
    }

    #[test]
    fn shared_bytes_are_not_copied() {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new((0u8..16).collect::<Vec<u8>>());
        let t = HostTensor::from_shared(DType::U8, &[2, 4], owner.clone(), 4, 8).unwrap();
        assert!(t.is_borrowed());
        assert_eq!(t.as_bytes().as_ptr(), unsafe_free_ptr(&owner, 4));
        assert_eq!(t.to_i64_vec().unwrap(), (4..12).collect::<Vec<i64>>());
        assert!(HostTensor::from_shared(DType::U8, &[9], owner.clone(), 8, 9).is_err());
        assert!(HostTensor::from_shared(DType::U8, &[1], owner, usize::MAX, 1).is_err());
    }

    fn unsafe_free_ptr(owner: &Arc<dyn AsRef<[u8]> + Send + Sync>, off: usize) -> *const u8 {
        (**owner).as_ref()[off..].as_ptr()
    }

    #[test]
    fn quantized_layout_is_checked() {
        assert!(HostTensor::zeros(DType::Q4_0, &[2, 32]).is_ok());
        let err = HostTensor::zeros(DType::Q4_0, &[2, 33])
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple of the block length 32"), "{err}");
    }

    #[test]
    fn serde_round_trip() {
        let t = HostTensor::from_i32(&[2], &[7, -9]).unwrap();
        let bytes = postcard::to_stdvec(&t).unwrap();
        let back: HostTensor = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, t);
    }
}
