//! Writing GGUF files.

use super::{ggml_type, DEFAULT_ALIGNMENT, MAGIC, VERSION};
use crate::error::{ModelError, Result};
use std::io::Write;
use std::path::Path;
use switchyard_runtime::HostTensor;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `UINT32`
    U32(u32),
    /// `INT32`
    I32(i32),
    /// `FLOAT32`
    F32(f32),
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

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    let ty = |out: &mut Vec<u8>, t: u32| out.extend_from_slice(&t.to_le_bytes());
    match v {
        GgufValue::U32(x) => {
            ty(out, 4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        GgufValue::I32(x) => {
            ty(out, 5);
            out.extend_from_slice(&x.to_le_bytes());
        }
        GgufValue::F32(x) => {
            ty(out, 6);
            out.extend_from_slice(&x.to_le_bytes());
        }
        GgufValue::Bool(x) => {
            ty(out, 7);
            out.push(u8::from(*x));
        }
        GgufValue::Str(s) => {
            ty(out, 8);
            put_str(out, s);
        }
        GgufValue::StrArray(items) => {
            ty(out, 9);
            ty(out, 8);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(out, s);
            }
        }
        GgufValue::F32Array(items) => {
            ty(out, 9);
            ty(out, 6);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        GgufValue::I32Array(items) => {
            ty(out, 9);
            ty(out, 5);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
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
