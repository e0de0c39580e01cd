//! Finding and loading `libnrt.so.1` at run time, and its entry points as function pointers.

use crate::types::*;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;

/// `nrt_init(framework, fw_version, fal_version)`.
pub type NrtInit = unsafe extern "C" fn(u32, *const c_char, *const c_char) -> NrtStatus;
/// `nrt_close()`.
pub type NrtClose = unsafe extern "C" fn();
/// `nrt_get_version(out, size)`.
pub type NrtGetVersion = unsafe extern "C" fn(*mut NrtVersion, usize) -> NrtStatus;
/// `nrt_get_total_vnc_count(out)` / `nrt_get_visible_vnc_count(out)`.
pub type NrtGetCount = unsafe extern "C" fn(*mut u32) -> NrtStatus;
/// `nrt_get_instance_info(out, len)`.
pub type NrtGetInstanceInfo = unsafe extern "C" fn(*mut NrtInstanceInfo, usize) -> NrtStatus;
/// `nrt_get_vnc_memory_stats(vnc, out, size_in, size_out)`.
pub type NrtGetVncMemoryStats =
    unsafe extern "C" fn(u32, *mut NrtVncMemoryStats, usize, *mut usize) -> NrtStatus;
/// `nrt_load(neff, size, vnc, vnc_count, out)`.
pub type NrtLoad =
    unsafe extern "C" fn(*const c_void, usize, i32, i32, *mut *mut NrtModel) -> NrtStatus;
/// `nrt_unload(model)`.
pub type NrtUnload = unsafe extern "C" fn(*mut NrtModel) -> NrtStatus;
/// `nrt_execute(model, inputs, outputs)`.
pub type NrtExecute =
    unsafe extern "C" fn(*mut NrtModel, *const NrtTensorSet, *mut NrtTensorSet) -> NrtStatus;
/// `nrt_get_model_tensor_info(model, out)`.
pub type NrtGetModelTensorInfo =
    unsafe extern "C" fn(*mut NrtModel, *mut *mut NrtTensorInfoArray) -> NrtStatus;
/// `nrt_free_model_tensor_info(info)`.
pub type NrtFreeModelTensorInfo = unsafe extern "C" fn(*mut NrtTensorInfoArray) -> NrtStatus;
/// `nrt_tensor_allocate(placement, vnc, size, name, out)`.
pub type NrtTensorAllocate =
    unsafe extern "C" fn(u32, i32, usize, *const c_char, *mut *mut NrtTensor) -> NrtStatus;
/// `nrt_tensor_free(tensor)`: frees and nulls the pointer.
pub type NrtTensorFree = unsafe extern "C" fn(*mut *mut NrtTensor);
/// `nrt_tensor_read(tensor, buf, offset, size)`.
pub type NrtTensorRead =
    unsafe extern "C" fn(*const NrtTensor, *mut c_void, usize, usize) -> NrtStatus;
/// `nrt_tensor_write(tensor, buf, offset, size)`.
pub type NrtTensorWrite =
    unsafe extern "C" fn(*mut NrtTensor, *const c_void, usize, usize) -> NrtStatus;
/// `nrt_tensor_copy(src, src_offset, dst, dst_offset, size)`.
pub type NrtTensorCopy =
    unsafe extern "C" fn(*const NrtTensor, usize, *mut NrtTensor, usize, usize) -> NrtStatus;
/// `nrt_tensor_memset(tensor, offset, value, size)`.
pub type NrtTensorMemset = unsafe extern "C" fn(*mut NrtTensor, u64, i32, usize) -> NrtStatus;
/// `nrt_tensor_get_size(tensor)`.
pub type NrtTensorGetSize = unsafe extern "C" fn(*const NrtTensor) -> usize;
/// `nrt_tensor_allocate_slice(source, offset, size, name, out)`.
pub type NrtTensorAllocateSlice = unsafe extern "C" fn(
    *const NrtTensor,
    usize,
    usize,
    *const c_char,
    *mut *mut NrtTensor,
) -> NrtStatus;
/// `nrt_allocate_tensor_set(out)`.
pub type NrtAllocateTensorSet = unsafe extern "C" fn(*mut *mut NrtTensorSet) -> NrtStatus;
/// `nrt_destroy_tensor_set(set)`: destroys and nulls the pointer.
pub type NrtDestroyTensorSet = unsafe extern "C" fn(*mut *mut NrtTensorSet);
/// `nrt_add_tensor_to_tensor_set(set, name, tensor)`.
pub type NrtAddTensorToTensorSet =
    unsafe extern "C" fn(*mut NrtTensorSet, *const c_char, *mut NrtTensor) -> NrtStatus;
/// `nrt_get_tensor_from_tensor_set(set, name, out)`.
pub type NrtGetTensorFromTensorSet =
    unsafe extern "C" fn(*mut NrtTensorSet, *const c_char, *mut *mut NrtTensor) -> NrtStatus;
/// `nrt_get_status_as_str(status)`.
pub type NrtGetStatusAsStr = unsafe extern "C" fn(NrtStatus) -> *const c_char;
/// Switchyard emulator extension: live objects of a kind (0 tensors, 1 models, 2 tensor sets).
pub type EmuLiveObjects = unsafe extern "C" fn(u32) -> u64;
/// `switchyard_emu_transferred_bytes(direction)` (emulator only): 0 host to device, 1 back.
pub type EmuTransferredBytes = unsafe extern "C" fn(u32) -> u64;
/// Switchyard emulator extension: calls of a named entry point since the library was loaded.
pub type EmuCalls = unsafe extern "C" fn(*const c_char) -> u64;
/// Switchyard emulator extension: replace the fault-injection plan (the `SWITCHYARD_NRT_FAULTS`
/// syntax; an empty string clears it).
pub type EmuSetFaults = unsafe extern "C" fn(*const c_char) -> NrtStatus;

/// The entry points every libnrt must have.
#[derive(Clone, Copy)]
pub struct Required {
    /// `nrt_init`
    pub init: NrtInit,
    /// `nrt_close`
    pub close: NrtClose,
    /// `nrt_get_version`
    pub get_version: NrtGetVersion,
    /// `nrt_get_total_vnc_count` (or `nrt_get_total_nc_count`)
    pub get_total_vnc_count: NrtGetCount,
    /// `nrt_get_visible_vnc_count` (or `nrt_get_visible_nc_count`)
    pub get_visible_vnc_count: NrtGetCount,
    /// `nrt_load`
    pub load: NrtLoad,
    /// `nrt_unload`
    pub unload: NrtUnload,
    /// `nrt_execute`
    pub execute: NrtExecute,
    /// `nrt_get_model_tensor_info`
    pub get_model_tensor_info: NrtGetModelTensorInfo,
    /// `nrt_free_model_tensor_info`
    pub free_model_tensor_info: NrtFreeModelTensorInfo,
    /// `nrt_tensor_allocate`
    pub tensor_allocate: NrtTensorAllocate,
    /// `nrt_tensor_free`
    pub tensor_free: NrtTensorFree,
    /// `nrt_tensor_read`
    pub tensor_read: NrtTensorRead,
    /// `nrt_tensor_write`
    pub tensor_write: NrtTensorWrite,
    /// `nrt_tensor_copy`
    pub tensor_copy: NrtTensorCopy,
    /// `nrt_tensor_memset`
    pub tensor_memset: NrtTensorMemset,
    /// `nrt_tensor_get_size`
    pub tensor_get_size: NrtTensorGetSize,
    /// `nrt_allocate_tensor_set`
    pub allocate_tensor_set: NrtAllocateTensorSet,
    /// `nrt_destroy_tensor_set`
    pub destroy_tensor_set: NrtDestroyTensorSet,
    /// `nrt_add_tensor_to_tensor_set`
    pub add_tensor_to_tensor_set: NrtAddTensorToTensorSet,
    /// `nrt_get_tensor_from_tensor_set`
    pub get_tensor_from_tensor_set: NrtGetTensorFromTensorSet,
}

/// Entry points that some builds lack; their absence degrades a feature, not the backend.
#[derive(Clone, Copy, Default)]
pub struct Optional {
    /// `nrt_get_instance_info`
    pub get_instance_info: Option<NrtGetInstanceInfo>,
    /// `nrt_get_vnc_memory_stats`
    pub get_vnc_memory_stats: Option<NrtGetVncMemoryStats>,
    /// `nrt_tensor_allocate_slice`
    pub tensor_allocate_slice: Option<NrtTensorAllocateSlice>,
    /// `nrt_get_status_as_str`
    pub get_status_as_str: Option<NrtGetStatusAsStr>,
    /// Switchyard emulator: live object counts.
    pub emu_live_objects: Option<EmuLiveObjects>,
    /// Switchyard emulator: bytes copied across the host boundary.
    pub emu_transferred_bytes: Option<EmuTransferredBytes>,
    /// Switchyard emulator: fault injection.
    pub emu_set_faults: Option<EmuSetFaults>,
    /// Emulator only: `switchyard_emu_calls`.
    pub emu_calls: Option<EmuCalls>,
}

/// Why the library could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// No candidate path could be opened.
    #[error("the Neuron runtime library was not found (tried: {}); install aws-neuronx-runtime-lib or point SWITCHYARD_NRT_LIB at a libnrt.so.1", tried.join("; "))]
    NotFound {
        /// Each path tried with the loader's message.
        tried: Vec<String>,
    },
    /// The library lacks entry points the backend needs.
    #[error("{path} is not a usable libnrt: missing {}", missing.join(", "))]
    MissingSymbols {
        /// The library.
        path: String,
        /// The missing symbols.
        missing: Vec<&'static str>,
    },
}

/// An opened libnrt with its entry points.
pub struct NrtLibrary {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Entry points every libnrt has.
    pub api: Required,
    /// Entry points that may be absent.
    pub optional: Optional,
    // Keeps the library mapped while the function pointers above are in use; dropped last.
    _lib: libloading::Library,
}

/// The paths tried, in order: `SWITCHYARD_NRT_LIB`, `libnrt.so.1` through the system loader, then
/// `/opt/aws/neuron/lib/libnrt.so.1`.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("SWITCHYARD_NRT_LIB").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    v.push(PathBuf::from("libnrt.so.1"));
    v.push(PathBuf::from("/opt/aws/neuron/lib/libnrt.so.1"));
    v
}

/// The loader's message, prefixed with the path unless it already starts with it.
fn describe(path: &std::path::Path, e: &libloading::Error) -> String {
    let msg = e.to_string();
    let p = path.display().to_string();
    if msg.starts_with(&p) {
        msg
    } else {
        format!("{p}: {msg}")
    }
}

fn symbol<T: Copy>(lib: &libloading::Library, names: &[&'static str]) -> Option<T> {
    names.iter().find_map(|n| {
        // SAFETY: `T` is the function-pointer type declared for this symbol from the libnrt
        // headers; the pointer is only used while `lib` stays loaded (NrtLibrary owns it).
        unsafe { lib.get::<T>(n.as_bytes()).ok().map(|s| *s) }
    })
}

impl NrtLibrary {
    /// Loads the first candidate of [`candidate_paths`] that opens.
    pub fn load() -> Result<NrtLibrary, LoadError> {
        let mut tried = Vec::new();
        for path in candidate_paths() {
            // SAFETY: loading a shared library runs its initializers; libnrt (or the emulator)
            // is a plain C library without unusual initialization.
            match unsafe { libloading::Library::new(&path) } {
                Ok(lib) => return Self::from_library(lib, path),
                Err(e) => tried.push(describe(&path, &e)),
            }
        }
        Err(LoadError::NotFound { tried })
    }

    /// Loads the library at `path` (no search).
    pub fn load_from(path: &std::path::Path) -> Result<NrtLibrary, LoadError> {
        // SAFETY: as in `load`.
        match unsafe { libloading::Library::new(path) } {
            Ok(lib) => Self::from_library(lib, path.to_path_buf()),
            Err(e) => Err(LoadError::NotFound {
                tried: vec![describe(path, &e)],
            }),
        }
    }

    fn from_library(lib: libloading::Library, path: PathBuf) -> Result<NrtLibrary, LoadError> {
        let mut missing = Vec::new();
        macro_rules! req {
            ($($name:literal),+) => {{
                let names: &[&'static str] = &[$($name),+];
                match symbol(&lib, names) {
                    Some(f) => Some(f),
                    None => {
                        missing.push(names[0]);
                        None
                    }
                }
            }};
        }
        let init = req!("nrt_init");
        let close = req!("nrt_close");
        let get_version = req!("nrt_get_version");
        let get_total = req!("nrt_get_total_vnc_count", "nrt_get_total_nc_count");
        let get_visible = req!("nrt_get_visible_vnc_count", "nrt_get_visible_nc_count");
        let load = req!("nrt_load");
        let unload = req!("nrt_unload");
        let execute = req!("nrt_execute");
        let get_info = req!("nrt_get_model_tensor_info");
        let free_info = req!("nrt_free_model_tensor_info");
        let alloc = req!("nrt_tensor_allocate");
        let free = req!("nrt_tensor_free");
        let read = req!("nrt_tensor_read");
        let write = req!("nrt_tensor_write");
        let copy = req!("nrt_tensor_copy");
        let memset = req!("nrt_tensor_memset");
        let get_size = req!("nrt_tensor_get_size");
        let alloc_set = req!("nrt_allocate_tensor_set");
        let destroy_set = req!("nrt_destroy_tensor_set");
        let add = req!("nrt_add_tensor_to_tensor_set");
        let get = req!("nrt_get_tensor_from_tensor_set");
        if !missing.is_empty() {
            return Err(LoadError::MissingSymbols {
                path: path.display().to_string(),
                missing,
            });
        }
        let api = Required {
            init: init.expect("checked"),
            close: close.expect("checked"),
            get_version: get_version.expect("checked"),
            get_total_vnc_count: get_total.expect("checked"),
            get_visible_vnc_count: get_visible.expect("checked"),
            load: load.expect("checked"),
            unload: unload.expect("checked"),
            execute: execute.expect("checked"),
            get_model_tensor_info: get_info.expect("checked"),
            free_model_tensor_info: free_info.expect("checked"),
            tensor_allocate: alloc.expect("checked"),
            tensor_free: free.expect("checked"),
            tensor_read: read.expect("checked"),
            tensor_write: write.expect("checked"),
            tensor_copy: copy.expect("checked"),
            tensor_memset: memset.expect("checked"),
            tensor_get_size: get_size.expect("checked"),
            allocate_tensor_set: alloc_set.expect("checked"),
            destroy_tensor_set: destroy_set.expect("checked"),
            add_tensor_to_tensor_set: add.expect("checked"),
            get_tensor_from_tensor_set: get.expect("checked"),
        };
        let optional = Optional {
            get_instance_info: symbol(&lib, &["nrt_get_instance_info"]),
            get_vnc_memory_stats: symbol(&lib, &["nrt_get_vnc_memory_stats"]),
            tensor_allocate_slice: symbol(&lib, &["nrt_tensor_allocate_slice"]),
            get_status_as_str: symbol(&lib, &["nrt_get_status_as_str"]),
            emu_live_objects: symbol(&lib, &["switchyard_emu_live_objects"]),
            emu_transferred_bytes: symbol(&lib, &["switchyard_emu_transferred_bytes"]),
            emu_set_faults: symbol(&lib, &["switchyard_emu_set_faults"]),
            emu_calls: symbol(&lib, &["switchyard_emu_calls"]),
        };
        Ok(NrtLibrary {
            path,
            api,
            optional,
            _lib: lib,
        })
    }
}
