//! Safetensors checkpoints, single-file or sharded, memory-mapped: tensors are borrowed from the
//! map without copying until they are converted or uploaded.

use crate::error::{read_json, ModelError, Result};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchyard_runtime::{DType, HostTensor, PageRelease};

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range within the file.
    start: usize,
    len: usize,
}

/// A set of memory-mapped safetensors files and the tensors they hold.
pub struct Checkpoint {
    files: Vec<(PathBuf, Arc<Mmap>)>,
    tensors: HashMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Checkpoint({} tensors in {})",
            self.tensors.len(),
            self.files_list()
        )
    }
}

/// Memory-maps `path` read-only (the safetensors and GGUF loaders share it).
pub(crate) fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the map is read-only and this process never writes to the file. As with every
    // memory-mapped loader, another process truncating the file while it is mapped would fault.
    let map = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(map))
}

/// How a tensor borrowed from `map` lets its pages go once a device holds its own copy: the
/// whole pages inside the tensor's bytes leave this process's resident memory, so a repacked or
/// uploaded weight is not held twice (the f32 weights the CPU repacks: peak memory 2x the file).
pub(crate) fn page_release(map: &Arc<Mmap>) -> PageRelease {
    let map = map.clone();
    Arc::new(move |offset: usize, len: usize| {
        // Only pages wholly inside the range (a map starts on a page boundary): a neighbouring
        // tensor read in place keeps its own.
        const PAGE: usize = 4096;
        let start = offset.next_multiple_of(PAGE);
        let end = (offset + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: `map` is a read-only mapping of a file this process never writes (see
            // `map_file`), so after MADV_DONTNEED a read of these pages faults them in again
            // from the file with the same bytes: every borrow of the map keeps seeing what it
            // saw. The range lies inside the map (`offset + len` is a tensor's range, checked by
            // `HostTensor::from_shared`). Failure only means the pages stay resident.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    })
}

fn st_dtype(d: safetensors::Dtype) -> Option<DType> {
    Some(match d {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::I32 => DType::I32,
        safetensors::Dtype::I64 => DType::I64,
        safetensors::Dtype::U32 => DType::U32,
        safetensors::Dtype::U8 => DType::U8,
        _ => return None,
    })
}

impl Checkpoint {
    /// Opens the weights of a model directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        if index.is_file() {
            let json = read_json(&index)?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    ModelError::config(&index, "weight_map", "missing or not an object")
                })?;
            let mut shards: BTreeMap<String, ()> = BTreeMap::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    ModelError::config(
                        &index,
                        &format!("weight_map.{name}"),
                        "expected a file name",
                    )
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(ModelError::config(
                        &index,
                        &format!("weight_map.{name}"),
                        format!("'{file}' is not a file name in the model directory"),
                    ));
                }
                shards.insert(file.to_string(), ());
            }
            let paths: Vec<PathBuf> = shards.keys().map(|f| dir.join(f)).collect();
            let ckpt = Self::open_files(&paths)?;
            for (name, file) in map {
                let file = file.as_str().unwrap_or_default();
                match ckpt.tensors.get(name) {
                    Some(e)
                        if ckpt.files[e.file].0.file_name().and_then(|f| f.to_str())
                            == Some(file) => {}
                    _ => {
                        return Err(ModelError::Checkpoint {
                            file: index.clone(),
                            message: format!(
                                "lists tensor '{name}' in {file}, which does not hold it"
                            ),
                        })
                    }
                }
            }
            return Ok(ckpt);
        }
        Err(ModelError::Checkpoint {
            file: dir.to_path_buf(),
            message: "no model.safetensors or model.safetensors.index.json in this directory"
                .into(),
        })
    }

    /// Opens the given safetensors files together. A tensor name may appear only once.
    pub fn open_files(paths: &[PathBuf]) -> Result<Checkpoint> {
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (fi, path) in paths.iter().enumerate() {
            let map = map_file(path)?;
            let corrupt = |message: String| ModelError::Checkpoint {
                file: path.clone(),
                message,
            };
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map[..])
                .map_err(|e| corrupt(format!("not a valid safetensors file: {e}")))?;
            let data_start = 8 + header_len;
            for (name, info) in meta.tensors() {
                let dtype = st_dtype(info.dtype).ok_or_else(|| ModelError::TensorDType {
                    name: name.clone(),
                    file: path.clone(),
                    dtype: format!("{:?}", info.dtype),
                })?;
                let (begin, end) = info.data_offsets;
                let entry = Entry {
                    file: fi,
                    dtype,
                    shape: info.shape.clone(),
                    start: data_start + begin,
                    len: end - begin,
                };
                if tensors.insert(name.clone(), entry).is_some() {
                    return Err(corrupt(format!(
                        "tensor '{name}' appears in more than one file"
                    )));
                }
            }
            files.push((path.clone(), map));
        }
        Ok(Checkpoint { files, tensors })
    }

    fn files_list(&self) -> String {
        self.files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// True when the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The stored dtype and shape of `name`.
    pub fn info(&self, name: &str) -> Option<(DType, &[usize])> {
        self.tensors
            .get(name)
            .map(|e| (e.dtype, e.shape.as_slice()))
    }

    /// The file holding `name`.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.tensors
            .get(name)
            .map(|e| self.files[e.file].0.as_path())
    }

    /// The tensor `name`, borrowed from the memory map (no copy).
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: self.files_list(),
            })?;
        let (path, map) = &self.files[e.file];
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = map.clone();
        HostTensor::from_shared(e.dtype, &e.shape, owner, e.start, e.len)
            .map(|t| t.with_page_release(page_release(map)))
            .map_err(|err| ModelError::Checkpoint {
                file: path.clone(),
                message: format!("tensor '{name}': {err}"),
            })
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(|e| e.len).sum()
    }
}
