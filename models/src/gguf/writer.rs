//! Writing GGUF files.

use super::{ggml_type, DEFAULT_ALIGNMENT, MAGIC, VERSION};
use crate::error::{ModelError, Result};
use std::io::Write;
use std::path::Path;
use switchyard_runtime::HostTensor;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `UINT8`
    U8(u8),
    /// `INT8`
    I8(i8),
    /// `UINT16`
    U16(u16),
    /// `INT16`
    I16(i16),
    /// `UINT32`
    U32(u32),
    /// `INT32`
    I32(i32),
    /// `FLOAT32`
    F32(f32),
    /// `UINT64`
    U64(u64),
    /// `INT64`
    I64(i64),
    /// `FLOAT64`
    F64(f64),
    /// `BOOL`
    Bool(bool),
    /// `STRING`
    Str(String),
    /// `ARRAY` of `STRING`
    StrArray(Vec<String>),
    /// `ARRAY` of `FLOAT32`
    F32Array(Vec<f32>),
    /// `ARRAY` of `INT32`
    I32Array(Vec<i32>),
    /// `ARRAY` of any other element type (read only).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The GGUF type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "uint8",
            GgufValue::I8(_) => "int8",
            GgufValue::U16(_) => "uint16",
            GgufValue::I16(_) => "int16",
            GgufValue::U32(_) => "uint32",
            GgufValue::I32(_) => "int32",
            GgufValue::F32(_) => "float32",
            GgufValue::U64(_) => "uint64",
            GgufValue::I64(_) => "int64",
            GgufValue::F64(_) => "float64",
            GgufValue::Bool(_) => "bool",
            GgufValue::Str(_) => "string",
            GgufValue::StrArray(_) => "array of string",
            GgufValue::F32Array(_) => "array of float32",
            GgufValue::I32Array(_) => "array of int32",
            GgufValue::Array(_) => "array",
        }
    }
}

/// Collects metadata and tensors, then writes a GGUF file in one pass (to a temporary file renamed
/// into place, so a failed write leaves nothing behind).
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, HostTensor)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The GGUF value type id of a scalar or string value; arrays are `ARRAY` (9).
fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::Str(_) => 8,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
        GgufValue::StrArray(_)
        | GgufValue::F32Array(_)
        | GgufValue::I32Array(_)
        | GgufValue::Array(_) => 9,
    }
}

/// A value's payload without its type tag (an array: element type, count, elements).
fn put_payload(out: &mut Vec<u8>, v: &GgufValue) {
    let ty = |out: &mut Vec<u8>, t: u32| out.extend_from_slice(&t.to_le_bytes());
    let len = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u64).to_le_bytes());
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::Str(s) => put_str(out, s),
        GgufValue::StrArray(items) => {
            ty(out, 8);
            len(out, items.len());
            for s in items {
                put_str(out, s);
            }
        }
        GgufValue::F32Array(items) => {
            ty(out, 6);
            len(out, items.len());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        GgufValue::I32Array(items) => {
            ty(out, 5);
            len(out, items.len());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        GgufValue::Array(items) => {
            // Elements of one array share a type; an empty array is written as uint8.
            ty(out, items.first().map_or(0, type_id));
            len(out, items.len());
            for x in items {
                put_payload(out, x);
            }
        }
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    out.extend_from_slice(&type_id(v).to_le_bytes());
    put_payload(out, v);
}

fn pad(n: usize) -> usize {
    n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata key.
    pub fn meta(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor (row-major; GGUF stores the dimensions innermost first).
    pub fn tensor(&mut self, name: &str, t: HostTensor) -> Result<&mut Self> {
        if ggml_type(t.dtype()).is_none() {
            return Err(ModelError::InvalidOption {
                option: "--to",
                message: format!("GGUF cannot store {} tensors ({name})", t.dtype()),
            });
        }
        self.tensors.push((name.to_string(), t));
        Ok(self)
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut head, k);
            put_value(&mut head, v);
        }
        let mut offset = 0usize;
        for (name, t) in &self.tensors {
            put_str(&mut head, name);
            head.extend_from_slice(&(t.dims().len() as u32).to_le_bytes());
            for d in t.dims().iter().rev() {
                head.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            head.extend_from_slice(
                &ggml_type(t.dtype())
                    .expect("checked in tensor()")
                    .to_le_bytes(),
            );
            head.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = pad(offset + t.as_bytes().len());
        }
        head.resize(pad(head.len()), 0);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            w.write_all(&head).map_err(io)?;
            for (_, t) in &self.tensors {
                let b = t.as_bytes();
                w.write_all(b).map_err(io)?;
                w.write_all(&vec![0u8; pad(b.len()) - b.len()])
                    .map_err(io)?;
            }
            w.flush().map_err(io)?;
        }
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}
