//! Reading GGUF files: the header, metadata and tensor infos parsed with every length and offset
//! checked against the file, tensor data borrowed from a memory map.

use super::{dtype_of_ggml, GgufValue, MAGIC};
use crate::error::{ModelError, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchyard_runtime::{DType, HostTensor};

/// Longest string accepted (keys, tensor names, vocabulary entries).
const MAX_STRING: u64 = 1 << 24;
/// Most dimensions a tensor may have.
const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays.
const MAX_DEPTH: usize = 2;

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Its dtype.
    pub dtype: DType,
    /// Row-major dimensions (GGUF stores them innermost first; these are reversed).
    pub dims: Vec<usize>,
    /// Byte offset of its data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub len: usize,
}

/// A parsed GGUF file, its tensor data memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    version: u32,
    metadata: HashMap<String, GgufValue>,
    /// Tensor names in file order.
    names: Vec<String>,
    tensors: HashMap<String, GgufTensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GgufFile({}, v{}, {} keys, {} tensors)",
            self.path.display(),
            self.version,
            self.metadata.len(),
            self.names.len()
        )
    }
}

/// A cursor over the file's bytes whose reads fail, with the position, past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> std::result::Result<&'a [u8], String> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, but the file ends {left} bytes later",
                self.pos
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(format!("{what}: a string of {n} bytes is implausibly long"));
        }
        let raw = self.take(n, what)?;
        // Writers sometimes include a trailing NUL.
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what}: not valid UTF-8"))
    }

    /// Minimum bytes one element of value type `t` occupies, or None for an unknown type.
    fn min_size(t: u32) -> Option<u64> {
        Some(match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            _ => return None,
        })
    }

    fn value(
        &mut self,
        t: u32,
        what: &str,
        depth: usize,
    ) -> std::result::Result<GgufValue, String> {
        Ok(match t {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{what}: boolean byte {b} is neither 0 nor 1")),
            },
            8 => GgufValue::Str(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("{what}: arrays nested deeper than {MAX_DEPTH}"));
                }
                let elem = self.u32(what)?;
                let n = self.u64(what)?;
                let min = Self::min_size(elem)
                    .ok_or_else(|| format!("{what}: unknown array element type {elem}"))?;
                let left = (self.bytes.len() - self.pos) as u64;
                if n.saturating_mul(min) > left {
                    return Err(format!(
                        "truncated: {what} declares {n} elements, more than the {left} bytes left can hold"
                    ));
                }
                let n = n as usize;
                match elem {
                    8 => GgufValue::StrArray(
                        (0..n)
                            .map(|_| self.string(what))
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    6 => GgufValue::F32Array(
                        (0..n)
                            .map(|_| self.array(what).map(f32::from_le_bytes))
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    5 => GgufValue::I32Array(
                        (0..n)
                            .map(|_| self.array(what).map(i32::from_le_bytes))
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                    _ => GgufValue::Array(
                        (0..n)
                            .map(|_| self.value(elem, what, depth + 1))
                            .collect::<std::result::Result<_, _>>()?,
                    ),
                }
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("{what}: unknown value type {other}")),
        })
    }
}

impl GgufFile {
    /// Opens and parses `path`, memory-mapping it.
    pub fn open(path: &Path) -> Result<GgufFile> {
        Self::parse(path, crate::checkpoint::map_file(path)?)
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<GgufFile> {
        let err = |message: String| ModelError::Checkpoint {
            file: path.to_path_buf(),
            message,
        };
        let mut c = Cursor {
            bytes: &map[..],
            pos: 0,
        };
        let magic = c.take(4, "the magic").map_err(err)?;
        if magic != MAGIC {
            return Err(err(format!(
                "not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = c.u32("the version").map_err(err)?;
        if !(2..=3).contains(&version) {
            return Err(err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = c.u64("the tensor count").map_err(err)?;
        let n_kv = c.u64("the metadata count").map_err(err)?;
        let left = (map.len() - c.pos) as u64;
        // Each key/value takes at least 13 bytes and each tensor info at least 24.
        if n_kv
            .saturating_mul(13)
            .saturating_add(n_tensors.saturating_mul(24))
            > left
        {
            return Err(err(format!(
                "truncated: the header declares {n_kv} metadata entries and {n_tensors} tensors, more than the {left} bytes left can hold"
            )));
        }
        let mut metadata = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}")).map_err(err)?;
            let t = c.u32(&format!("the type of '{key}'")).map_err(err)?;
            let v = c.value(t, &format!("metadata '{key}'"), 0).map_err(err)?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(err(format!("metadata key '{key}' appears twice")));
            }
        }
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor name {i}")).map_err(err)?;
            let what = format!("tensor '{name}'");
            let nd = c.u32(&what).map_err(err)?;
            if nd == 0 || nd > MAX_DIMS {
                return Err(err(format!(
                    "{what} has {nd} dimensions (1 to {MAX_DIMS} are allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                let d = c.u64(&what).map_err(err)?;
                if d == 0 || d > (1 << 40) {
                    return Err(err(format!("{what} has a dimension of {d}")));
                }
                dims.push(d as usize);
            }
            dims.reverse();
            let ty = c.u32(&what).map_err(err)?;
            let dtype = dtype_of_ggml(ty).ok_or_else(|| {
                err(format!(
                    "{what} has ggml type {ty}, which Switchyard does not read (it reads f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k to q6_k)"
                ))
            })?;
            let offset = c.u64(&what).map_err(err)?;
            infos.push((name, dtype, dims, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => super::DEFAULT_ALIGNMENT as u64,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 16 => a,
                _ => {
                    return Err(err(format!(
                        "metadata 'general.alignment' is {v:?}, expected a power of two"
                    )))
                }
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        let mut names = Vec::with_capacity(infos.len());
        let mut tensors = HashMap::with_capacity(infos.len());
        let mut ranges = Vec::with_capacity(infos.len());
        for (name, dtype, dims, offset) in infos {
            let numel = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .filter(|&n| n < 1 << 44)
                .ok_or_else(|| err(format!("tensor '{name}' has an absurd size {dims:?}")))?;
            let (block_elems, block_bytes) = (dtype.block_len() as u64, dtype.block_bytes() as u64);
            let row = *dims.last().expect("at least one dimension") as u64;
            if !row.is_multiple_of(block_elems) {
                return Err(err(format!(
                    "tensor '{name}' ({dtype}, {dims:?}): rows of {row} are not whole {block_elems}-element blocks"
                )));
            }
            let len = numel / block_elems * block_bytes;
            if offset % alignment != 0 {
                return Err(err(format!(
                    "tensor '{name}' starts at data offset {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_start
                .checked_add(offset)
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= file_len));
            let Some(start) = start else {
                return Err(err(format!(
                    "truncated: tensor '{name}' ({dtype}, {dims:?}) needs bytes {}..{} but the file has {file_len}",
                    data_start.saturating_add(offset),
                    data_start.saturating_add(offset).saturating_add(len)
                )));
            };
            ranges.push((start, start + len, name.clone()));
            let info = GgufTensorInfo {
                dtype,
                dims,
                offset: start as usize,
                len: len as usize,
            };
            if tensors.insert(name.clone(), info).is_some() {
                return Err(err(format!("tensor '{name}' appears twice")));
            }
            names.push(name);
        }
        ranges.sort();
        if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
            return Err(err(format!(
                "tensors '{}' and '{}' overlap in the file",
                w[0].2, w[1].2
            )));
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version,
            metadata,
            names,
            tensors,
        })
    }

    /// Forgets the vocabulary arrays (`tokenizer.ggml.tokens`, `merges`, `scores`,
    /// `token_type`) once a tokenizer has been built from them.
    pub fn drop_vocabulary(&mut self) {
        for k in ["tokens", "merges", "scores", "token_type"] {
            self.metadata.remove(&format!("tokenizer.ggml.{k}"));
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Every metadata key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.keys().map(String::as_str)
    }

    /// Tensor names in file order.
    pub fn tensor_names(&self) -> &[String] {
        &self.names
    }

    /// A tensor's info.
    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.get(name)
    }

    /// A tensor, its bytes borrowed from the memory map.
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: self.path.display().to_string(),
            })?;
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = self.map.clone();
        Ok(
            HostTensor::from_shared(info.dtype, &info.dims, owner, info.offset, info.len)?
                .with_page_release(crate::checkpoint::page_release(&self.map)),
        )
    }

    /// A required metadata key, as an unsigned integer.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            self.key_error(
                key,
                format!("expected an unsigned integer, found {}", v.type_name()),
            )
        })
    }

    /// A required metadata key, as a float.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| {
            self.key_error(key, format!("expected a number, found {}", v.type_name()))
        })
    }

    /// A required metadata key, as a string.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| {
            self.key_error(key, format!("expected a string, found {}", v.type_name()))
        })
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.key_error(key, "missing".into()))
    }

    /// An error about metadata `key`.
    pub fn key_error(&self, key: &str, message: String) -> ModelError {
        ModelError::Config {
            file: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    fn written(w: &GgufWriter) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.gguf");
        w.write(&p).unwrap();
        (d, p)
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", GgufValue::Str("llama".into()))
            .meta("a.u8", GgufValue::U8(7))
            .meta("a.f64", GgufValue::F64(0.5))
            .meta(
                "a.list",
                GgufValue::Array(vec![GgufValue::U64(1), GgufValue::U64(2)]),
            )
            .meta("a.strs", GgufValue::StrArray(vec!["x".into(), "yz".into()]));
        let t = HostTensor::from_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        w.tensor("t.weight", t.clone()).unwrap();
        // One q8_0 block: an f16 scale of 1.0, then 32 signed bytes.
        let mut block = vec![0x00, 0x3c];
        block.extend((0..32).map(|i| i as u8));
        let q = HostTensor::new(DType::Q8_0, &[1, 32], block).unwrap();
        w.tensor("q.weight", q.clone()).unwrap();
        let (_d, p) = written(&w);
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.require_u64("a.u8").unwrap(), 7);
        assert_eq!(f.require_f64("a.f64").unwrap(), 0.5);
        assert_eq!(
            f.get("a.list"),
            Some(&GgufValue::Array(vec![
                GgufValue::U64(1),
                GgufValue::U64(2)
            ]))
        );
        assert_eq!(f.tensor_names(), ["t.weight", "q.weight"]);
        let back = f.tensor("t.weight").unwrap();
        assert!(back.is_borrowed());
        assert_eq!(back, t);
        assert_eq!(f.tensor("q.weight").unwrap(), q);
        assert!(matches!(
            f.require_u64("general.architecture"),
            Err(ModelError::Config { .. })
        ));
    }

    /// Resident KiB of this process's mappings of `path` (Linux's `/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn resident_kib(path: &std::path::Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if line.contains('-') && line.split_whitespace().count() >= 5 {
                inside = line.ends_with(path.to_str().unwrap());
            } else if inside && line.starts_with("Rss:") {
                kib += line
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        kib
    }

    /// A tensor's pages leave resident memory when released (a device keeping its own copy
    /// calls it), and reading the tensor afterwards still gives its bytes, from the file.
    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_memory_and_read_back_the_same() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", GgufValue::Str("llama".into()));
        let values: Vec<f32> = (0..512 * 512).map(|i| i as f32).collect();
        let big = HostTensor::from_f32(&[512, 512], &values).unwrap();
        w.tensor("big.weight", big.clone()).unwrap();
        let (_d, p) = written(&w);
        let f = GgufFile::open(&p).unwrap();
        let t = f.tensor("big.weight").unwrap();
        assert_eq!(t, big, "read in full: every page resident");
        let before = resident_kib(&p);
        assert!(before >= 1024, "{before} KiB resident after reading 1 MiB");
        t.release_pages();
        let after = resident_kib(&p);
        // All but the two pages the tensor may share with its neighbours go.
        assert!(
            after + 1024 - 8 <= before,
            "{before} KiB before, {after} KiB after"
        );
        assert_eq!(t, big, "read again from the file");
        assert_eq!(f.tensor("big.weight").unwrap(), big);
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", GgufValue::Str("llama".into()));
        w.tensor(
            "t.weight",
            HostTensor::from_f32(&[4, 8], &[1.0; 32]).unwrap(),
        )
        .unwrap();
        let (d, p) = written(&w);
        let bytes = std::fs::read(&p).unwrap();
        let check = |name: &str, data: &[u8], want: &str| {
            let q = d.path().join(name);
            std::fs::write(&q, data).unwrap();
            let e = GgufFile::open(&q).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        };
        check(
            "cut.gguf",
            &bytes[..bytes.len() - 10],
            "truncated: tensor 't.weight'",
        );
        check("head.gguf", &bytes[..30], "truncated");
        check("magic.gguf", b"GGUX\x03\0\0\0", "not a GGUF file");
        let mut v = bytes.clone();
        v[4] = 9;
        check("version.gguf", &v, "GGUF version 9");
        // The tensor's ggml type (f32 = 0) sits 12 bytes before the end of its info.
        let at = bytes.windows(8).position(|w| w == b"t.weight").unwrap() + 8 + 4 + 16;
        let mut v = bytes.clone();
        v[at] = 99;
        check("type.gguf", &v, "ggml type 99");
        let mut v = bytes.clone();
        v[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        check("count.gguf", &v, "declares");
    }
}
