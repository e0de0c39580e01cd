//! # switchyard-nrt-emulator
//!
//! An ABI-compatible stand-in for the AWS Neuron runtime (`libnrt.so.1`), built as a shared
//! library that exports the `nrt_*` entry points Switchyard's Neuron backend uses, with the same
//! signatures and semantics, so the whole Neuron path (graph → artifact → FFI → tensor sets by name
//! → state aliasing → outputs read back) runs on any machine:
//!
//! - tensors live in host memory; NeuronCores come from `NEURON_RT_VISIBLE_CORES` /
//!   `NEURON_RT_NUM_CORES` (default 2, like a trn1.2xlarge), each with a device-memory limit
//!   (`SWITCHYARD_NRT_EMU_MEM_LIMIT`, default 16 GiB) that yields RESOURCE when exceeded;
//! - calls before `nrt_init` or after `nrt_close`, unknown handles, missing names in tensor sets,
//!   size mismatches and loads needing more cores or memory than are free return the runtime's
//!   status codes;
//! - `nrt_load` accepts only Switchyard's emulation artifact (anything else, real NEFFs included,
//!   is INVALID) and `nrt_execute` runs its graph with Switchyard's reference interpreter;
//! - faults can be injected (`SWITCHYARD_NRT_FAULTS`, see [`faults`]), and live objects counted
//!   (`switchyard_emu_live_objects`), so tests can drive every error path and find leaks.
//!
//! Its version string says it is the Switchyard emulator; figures measured on it are emulated.

// These functions are C entry points: their callers are C code bound by libnrt's contracts (valid
// out-pointers, readable buffers), which a Rust `unsafe` marker would not convey to them. Every
// dereference is in a small `unsafe` block stating the contract it relies on.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod faults;
mod state;

use state::{lock, Emu, Model, Phase, Tensor};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use switchyard_neuron::artifact::EmulationArtifact;
use switchyard_neuron_sys::*;
use switchyard_runtime::{DType, ExecuteArgs, HostTensor, ParamKind};

/// The version detail every caller sees.
const DETAIL: &str = "Switchyard libnrt emulator (emulated NeuronCores, not hardware)";

/// Runs `f`, turning a panic into FAILURE so no unwinding crosses the C boundary.
fn guard(f: impl FnOnce() -> NrtStatus) -> NrtStatus {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(NrtStatus::FAILURE)
}

/// Runs `f` on the running emulator (after the phase check and fault injection for `call`).
/// Calls of each entry point since the library was loaded (`switchyard_emu_calls`).
static CALLS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

fn count_call(call: &str) {
    if let Ok(mut calls) = CALLS.lock() {
        *calls
            .get_or_insert_with(HashMap::new)
            .entry(call.to_string())
            .or_insert(0) += 1;
    }
}

fn with_running(call: &str, f: impl FnOnce(&mut Emu) -> Result<(), NrtStatus>) -> NrtStatus {
    count_call(call);
    guard(|| {
        let mut g = lock();
        let emu = g.as_mut().expect("lock() creates the state");
        match emu.running(call).and_then(|_| f(emu)) {
            Ok(()) => NrtStatus::SUCCESS,
            Err(s) => s,
        }
    })
}

/// Writes `value` through an out-pointer.
fn put<T>(out: *mut T, value: T) -> Result<(), NrtStatus> {
    if out.is_null() {
        return Err(NrtStatus::INVALID);
    }
    // SAFETY: the C API's contract: a non-null out-pointer refers to writable memory for one `T`.
    unsafe { out.write(value) };
    Ok(())
}

fn handle_of<T>(p: *const T) -> usize {
    p as usize
}

fn name_of(p: *const c_char) -> Result<String, NrtStatus> {
    if p.is_null() {
        return Err(NrtStatus::INVALID);
    }
    // SAFETY: the C API's contract: names are NUL-terminated strings valid for the call.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn nrt_dtype(d: DType) -> u32 {
    match d {
        DType::F32 => dtype::FLOAT32,
        DType::F16 => dtype::FLOAT16,
        DType::BF16 => dtype::BFLOAT16,
        DType::I32 => dtype::INT32,
        DType::U32 => dtype::UINT32,
        DType::I64 => dtype::INT64,
        _ => dtype::UINT8,
    }
}

/// `nrt_init`: starts the runtime (state from the environment). A second call while running fails.
#[no_mangle]
pub extern "C" fn nrt_init(
    _framework: u32,
    _fw_version: *const c_char,
    _fal_version: *const c_char,
) -> NrtStatus {
    guard(|| {
        let mut g = lock();
        if g.as_ref().is_some_and(|e| e.phase == Phase::Running) {
            return NrtStatus::FAILURE;
        }
        state::start(&mut g);
        let emu = g.as_mut().expect("started");
        if let Err(s) = emu.faults.check("nrt_init") {
            emu.phase = Phase::Uninitialized;
            return s;
        }
        NrtStatus::SUCCESS
    })
}

/// `nrt_close`: ends the runtime; later calls return CLOSED. Objects still alive are kept (and
/// counted by `switchyard_emu_live_objects`) until the next `nrt_init`.
#[no_mangle]
pub extern "C" fn nrt_close() {
    let _ = guard(|| {
        let mut g = lock();
        if let Some(e) = g.as_mut() {
            if e.phase == Phase::Running {
                e.phase = Phase::Closed;
            }
        }
        NrtStatus::SUCCESS
    });
}

/// `nrt_get_version`: callable before `nrt_init`.
#[no_mangle]
pub extern "C" fn nrt_get_version(out: *mut NrtVersion, size: usize) -> NrtStatus {
    guard(|| {
        if size < std::mem::size_of::<NrtVersion>() {
            return NrtStatus::INVALID;
        }
        let mut v = NrtVersion {
            rt_major: 2,
            rt_minor: 0,
            rt_patch: 0,
            rt_maintenance: 0,
            rt_detail: [0; 128],
            git_hash: [0; 64],
        };
        for (d, s) in v.rt_detail.iter_mut().zip(DETAIL.bytes()) {
            *d = s as c_char;
        }
        match put(out, v) {
            Ok(()) => NrtStatus::SUCCESS,
            Err(s) => s,
        }
    })
}

/// `nrt_get_total_vnc_count`: callable before `nrt_init`.
#[no_mangle]
pub extern "C" fn nrt_get_total_vnc_count(out: *mut u32) -> NrtStatus {
    guard(|| match put(out, state::visible_cores().1) {
        Ok(()) => NrtStatus::SUCCESS,
        Err(s) => s,
    })
}

/// `nrt_get_visible_vnc_count`: callable before `nrt_init`; honours `NEURON_RT_VISIBLE_CORES`.
#[no_mangle]
pub extern "C" fn nrt_get_visible_vnc_count(out: *mut u32) -> NrtStatus {
    guard(|| match put(out, state::visible_cores().0.len() as u32) {
        Ok(()) => NrtStatus::SUCCESS,
        Err(s) => s,
    })
}

/// `nrt_get_instance_info`: reports a trn1 family with architecture name `emulated`.
#[no_mangle]
pub extern "C" fn nrt_get_instance_info(out: *mut NrtInstanceInfo, len: usize) -> NrtStatus {
    guard(|| {
        if out.is_null() {
            return NrtStatus::INVALID;
        }
        let mut info = NrtInstanceInfo {
            family: 2,
            size: 0,
            arch_name: [0; 16],
            device_revision: [0; 8],
        };
        for (d, s) in info.arch_name.iter_mut().zip(b"emulated") {
            *d = *s as c_char;
        }
        let n = len.min(std::mem::size_of::<NrtInstanceInfo>());
        // SAFETY: `out` is non-null and, by the API's contract, writable for `len` bytes; `n` is
        // at most `len` and at most the size of `info`.
        unsafe { std::ptr::copy_nonoverlapping(&info as *const _ as *const u8, out as *mut u8, n) };
        NrtStatus::SUCCESS
    })
}

/// `nrt_get_vnc_memory_stats`.
#[no_mangle]
pub extern "C" fn nrt_get_vnc_memory_stats(
    vnc: u32,
    out: *mut NrtVncMemoryStats,
    size_in: usize,
    size_out: *mut usize,
) -> NrtStatus {
    with_running("nrt_get_vnc_memory_stats", |emu| {
        let core = emu.core_index(vnc as i32).ok_or(NrtStatus::INVALID)?;
        if size_in < std::mem::size_of::<NrtVncMemoryStats>() {
            return Err(NrtStatus::INVALID);
        }
        put(
            out,
            NrtVncMemoryStats {
                bytes_used: emu.mem_used[core],
                bytes_limit: emu.mem_limit,
            },
        )?;
        if !size_out.is_null() {
            put(size_out, std::mem::size_of::<NrtVncMemoryStats>())?;
        }
        Ok(())
    })
}

/// `nrt_load`: accepts only Switchyard emulation artifacts.
#[no_mangle]
pub extern "C" fn nrt_load(
    neff: *const c_void,
    size: usize,
    vnc: i32,
    vnc_count: i32,
    out: *mut *mut NrtModel,
) -> NrtStatus {
    with_running("nrt_load", |emu| {
        if neff.is_null() || out.is_null() {
            return Err(NrtStatus::INVALID);
        }
        // SAFETY: the API's contract: `neff` points to `size` readable bytes for the call.
        let bytes = unsafe { std::slice::from_raw_parts(neff as *const u8, size) };
        let artifact = EmulationArtifact::from_bytes(bytes).map_err(|_| NrtStatus::INVALID)?;
        let core = emu.core_index(vnc).ok_or(NrtStatus::LOAD_NOT_ENOUGH_NC)?;
        let cores = if vnc_count <= 0 {
            1
        } else {
            vnc_count as usize
        };
        if core + cores > emu.visible.len() {
            return Err(NrtStatus::LOAD_NOT_ENOUGH_NC);
        }
        emu.charge(core, size)?;
        let h = emu.handle();
        emu.models.insert(
            h,
            Model {
                artifact,
                core,
                bytes: size,
            },
        );
        put(out, h as *mut NrtModel)
    })
}

/// `nrt_unload`.
#[no_mangle]
pub extern "C" fn nrt_unload(model: *mut NrtModel) -> NrtStatus {
    with_running("nrt_unload", |emu| {
        let m = emu
            .models
            .remove(&handle_of(model))
            .ok_or(NrtStatus::INVALID_HANDLE)?;
        emu.release(m.core, m.bytes);
        Ok(())
    })
}

/// `nrt_get_model_tensor_info`: inputs then outputs, with names, byte sizes, dtypes, shapes.
#[no_mangle]
pub extern "C" fn nrt_get_model_tensor_info(
    model: *mut NrtModel,
    out: *mut *mut NrtTensorInfoArray,
) -> NrtStatus {
    with_running("nrt_get_model_tensor_info", |emu| {
        let m = emu
            .models
            .get(&handle_of(model))
            .ok_or(NrtStatus::INVALID_HANDLE)?;
        let entries: Vec<(String, u32, switchyard_runtime::TensorSpec)> = m
            .artifact
            .input_specs()
            .into_iter()
            .map(|(n, s)| (n, NRT_TENSOR_USAGE_INPUT, s))
            .chain(
                m.artifact
                    .output_specs()
                    .into_iter()
                    .map(|(n, s)| (n, NRT_TENSOR_USAGE_OUTPUT, s)),
            )
            .collect();
        let words = 1 + entries.len() * std::mem::size_of::<NrtTensorInfo>() / 8;
        let mut block = vec![0u64; words];
        block[0] = entries.len() as u64;
        let mut shapes: Vec<Vec<u32>> = Vec::new();
        for (i, (name, usage, spec)) in entries.iter().enumerate() {
            let dims = spec.shape.fixed_dims().unwrap_or_default();
            let mut shape: Vec<u32> = dims.iter().map(|&d| d as u32).collect();
            let mut info = NrtTensorInfo {
                name: [0; 256],
                usage: *usage,
                size: spec.max_bytes(),
                dtype: nrt_dtype(spec.dtype),
                shape: shape.as_mut_ptr(),
                ndim: shape.len() as u32,
            };
            for (d, s) in info.name.iter_mut().take(255).zip(name.bytes()) {
                *d = s as c_char;
            }
            shapes.push(shape);
            let at = 8 + i * std::mem::size_of::<NrtTensorInfo>();
            // SAFETY: `block` holds `words * 8` bytes, 8-aligned; entry `i` spans
            // `at..at + size_of::<NrtTensorInfo>()`, inside it, and `at` is a multiple of 8.
            unsafe {
                (block.as_mut_ptr() as *mut u8)
                    .add(at)
                    .cast::<NrtTensorInfo>()
                    .write(info)
            };
        }
        let ptr = block.as_mut_ptr() as *mut NrtTensorInfoArray;
        emu.infos.insert(ptr as usize, (block, shapes));
        put(out, ptr)
    })
}

/// `nrt_free_model_tensor_info`.
#[no_mangle]
pub extern "C" fn nrt_free_model_tensor_info(info: *mut NrtTensorInfoArray) -> NrtStatus {
    guard(|| {
        let mut g = lock();
        let emu = g.as_mut().expect("state exists");
        match emu.infos.remove(&(info as usize)) {
            Some(_) => NrtStatus::SUCCESS,
            None => NrtStatus::INVALID_HANDLE,
        }
    })
}

/// `nrt_tensor_allocate`: zero-filled; device tensors are charged to their core.
#[no_mangle]
pub extern "C" fn nrt_tensor_allocate(
    placement: u32,
    vnc: i32,
    size: usize,
    _name: *const c_char,
    out: *mut *mut NrtTensor,
) -> NrtStatus {
    with_running("nrt_tensor_allocate", |emu| {
        let (charged, core) = match placement {
            NRT_TENSOR_PLACEMENT_DEVICE => {
                let core = emu.core_index(vnc).ok_or(NrtStatus::INVALID)?;
                emu.charge(core, size)?;
                (Some(core), Some(core))
            }
            NRT_TENSOR_PLACEMENT_HOST | NRT_TENSOR_PLACEMENT_VIRTUAL => (None, None),
            _ => return Err(NrtStatus::INVALID),
        };
        let h = emu.handle();
        emu.tensors.insert(
            h,
            Tensor {
                bytes: Arc::new(Mutex::new(vec![0u8; size])),
                offset: 0,
                len: size,
                charged_core: charged,
                core,
            },
        );
        put(out, h as *mut NrtTensor)
    })
}

/// `nrt_tensor_free`: frees and nulls the pointer; unknown or null handles are ignored.
#[no_mangle]
pub extern "C" fn nrt_tensor_free(tensor: *mut *mut NrtTensor) {
    let _ = guard(|| {
        if tensor.is_null() {
            return NrtStatus::SUCCESS;
        }
        // SAFETY: the API's contract: `tensor` points to a (possibly null) tensor pointer.
        let h = unsafe { *tensor } as usize;
        let mut g = lock();
        let emu = g.as_mut().expect("state exists");
        if let Some(t) = emu.tensors.remove(&h) {
            if let Some(core) = t.charged_core {
                emu.release(core, t.len);
            }
        }
        // SAFETY: as above; nulling the caller's pointer is part of the contract.
        unsafe { *tensor = std::ptr::null_mut() };
        NrtStatus::SUCCESS
    });
}

fn tensor(emu: &Emu, t: *const NrtTensor) -> Result<&Tensor, NrtStatus> {
    emu.tensors
        .get(&handle_of(t))
        .ok_or(NrtStatus::INVALID_HANDLE)
}

fn in_bounds(t: &Tensor, offset: usize, size: usize) -> Result<(), NrtStatus> {
    match offset.checked_add(size) {
        Some(end) if end <= t.len => Ok(()),
        _ => Err(NrtStatus::INVALID),
    }
}

/// Bytes copied from the host by `nrt_tensor_write` since the library was loaded.
static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);
/// Bytes copied to the host by `nrt_tensor_read` since the library was loaded.
static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// `nrt_tensor_read`.
#[no_mangle]
pub extern "C" fn nrt_tensor_read(
    t: *const NrtTensor,
    buf: *mut c_void,
    offset: usize,
    size: usize,
) -> NrtStatus {
    with_running("nrt_tensor_read", |emu| {
        let t = tensor(emu, t)?;
        in_bounds(t, offset, size)?;
        if buf.is_null() && size > 0 {
            return Err(NrtStatus::INVALID);
        }
        let bytes = t.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let src = &bytes[t.offset + offset..t.offset + offset + size];
        // SAFETY: the API's contract: `buf` is writable for `size` bytes; `src` has `size` bytes
        // of emulator-owned memory, which cannot overlap the caller's buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf as *mut u8, size) };
        BYTES_READ.fetch_add(size as u64, Ordering::Relaxed);
        Ok(())
    })
}

/// `nrt_tensor_write`.
#[no_mangle]
pub extern "C" fn nrt_tensor_write(
    t: *mut NrtTensor,
    buf: *const c_void,
    offset: usize,
    size: usize,
) -> NrtStatus {
    with_running("nrt_tensor_write", |emu| {
        let t = tensor(emu, t)?;
        in_bounds(t, offset, size)?;
        if buf.is_null() && size > 0 {
            return Err(NrtStatus::INVALID);
        }
        // SAFETY: the API's contract: `buf` is readable for `size` bytes during the call.
        let src = unsafe { std::slice::from_raw_parts(buf as *const u8, size) };
        let mut bytes = t.bytes.lock().unwrap_or_else(|e| e.into_inner());
        bytes[t.offset + offset..t.offset + offset + size].copy_from_slice(src);
        BYTES_WRITTEN.fetch_add(size as u64, Ordering::Relaxed);
        Ok(())
    })
}

/// `nrt_tensor_copy`: device to device on the same core.
#[no_mangle]
pub extern "C" fn nrt_tensor_copy(
    src: *const NrtTensor,
    src_offset: usize,
    dst: *mut NrtTensor,
    dst_offset: usize,
    size: usize,
) -> NrtStatus {
    with_running("nrt_tensor_copy", |emu| {
        let (s, d) = (tensor(emu, src)?, tensor(emu, dst)?);
        in_bounds(s, src_offset, size)?;
        in_bounds(d, dst_offset, size)?;
        if s.core != d.core {
            return Err(NrtStatus::INVALID);
        }
        let data = s.bytes.lock().unwrap_or_else(|e| e.into_inner())
            [s.offset + src_offset..s.offset + src_offset + size]
            .to_vec();
        d.bytes.lock().unwrap_or_else(|e| e.into_inner())
            [d.offset + dst_offset..d.offset + dst_offset + size]
            .copy_from_slice(&data);
        Ok(())
    })
}

/// `nrt_tensor_memset`.
#[no_mangle]
pub extern "C" fn nrt_tensor_memset(
    t: *mut NrtTensor,
    offset: u64,
    value: i32,
    size: usize,
) -> NrtStatus {
    with_running("nrt_tensor_memset", |emu| {
        let t = tensor(emu, t)?;
        let offset = usize::try_from(offset).map_err(|_| NrtStatus::INVALID)?;
        in_bounds(t, offset, size)?;
        t.bytes.lock().unwrap_or_else(|e| e.into_inner())
            [t.offset + offset..t.offset + offset + size]
            .fill(value as u8);
        Ok(())
    })
}

/// `nrt_tensor_get_size` (0 for an unknown handle).
#[no_mangle]
pub extern "C" fn nrt_tensor_get_size(t: *const NrtTensor) -> usize {
    std::panic::catch_unwind(|| {
        let g = lock();
        g.as_ref()
            .and_then(|e| e.tensors.get(&handle_of(t)))
            .map_or(0, |t| t.len)
    })
    .unwrap_or(0)
}

/// `nrt_tensor_allocate_slice`: a view sharing the source's memory.
#[no_mangle]
pub extern "C" fn nrt_tensor_allocate_slice(
    source: *const NrtTensor,
    offset: usize,
    size: usize,
    _name: *const c_char,
    out: *mut *mut NrtTensor,
) -> NrtStatus {
    with_running("nrt_tensor_allocate_slice", |emu| {
        let s = tensor(emu, source)?;
        in_bounds(s, offset, size)?;
        let view = Tensor {
            bytes: s.bytes.clone(),
            offset: s.offset + offset,
            len: size,
            charged_core: None,
            core: s.core,
        };
        let h = emu.handle();
        emu.tensors.insert(h, view);
        put(out, h as *mut NrtTensor)
    })
}

/// `nrt_allocate_tensor_set`.
#[no_mangle]
pub extern "C" fn nrt_allocate_tensor_set(out: *mut *mut NrtTensorSet) -> NrtStatus {
    with_running("nrt_allocate_tensor_set", |emu| {
        let h = emu.handle();
        emu.sets.insert(h, Default::default());
        put(out, h as *mut NrtTensorSet)
    })
}

/// `nrt_destroy_tensor_set`: destroys and nulls the pointer.
#[no_mangle]
pub extern "C" fn nrt_destroy_tensor_set(set: *mut *mut NrtTensorSet) {
    let _ = guard(|| {
        if set.is_null() {
            return NrtStatus::SUCCESS;
        }
        // SAFETY: the API's contract: `set` points to a (possibly null) set pointer.
        let h = unsafe { *set } as usize;
        lock().as_mut().expect("state exists").sets.remove(&h);
        // SAFETY: as above.
        unsafe { *set = std::ptr::null_mut() };
        NrtStatus::SUCCESS
    });
}

/// `nrt_add_tensor_to_tensor_set`: adds or replaces a name; the set does not own the tensor.
#[no_mangle]
pub extern "C" fn nrt_add_tensor_to_tensor_set(
    set: *mut NrtTensorSet,
    name: *const c_char,
    t: *mut NrtTensor,
) -> NrtStatus {
    with_running("nrt_add_tensor_to_tensor_set", |emu| {
        let name = name_of(name)?;
        tensor(emu, t)?;
        let s = emu
            .sets
            .get_mut(&handle_of(set))
            .ok_or(NrtStatus::INVALID_HANDLE)?;
        s.insert(name, handle_of(t));
        Ok(())
    })
}

/// `nrt_get_tensor_from_tensor_set`: FAILURE when the name is absent.
#[no_mangle]
pub extern "C" fn nrt_get_tensor_from_tensor_set(
    set: *mut NrtTensorSet,
    name: *const c_char,
    out: *mut *mut NrtTensor,
) -> NrtStatus {
    with_running("nrt_get_tensor_from_tensor_set", |emu| {
        let name = name_of(name)?;
        let s = emu
            .sets
            .get(&handle_of(set))
            .ok_or(NrtStatus::INVALID_HANDLE)?;
        let h = *s.get(&name).ok_or(NrtStatus::FAILURE)?;
        put(out, h as *mut NrtTensor)
    })
}

/// The tensor bound to `name` in `set`, checked to exist and to be `size` bytes.
fn bound(emu: &Emu, set: usize, name: &str, size: usize) -> Result<usize, NrtStatus> {
    let s = emu.sets.get(&set).ok_or(NrtStatus::INVALID_HANDLE)?;
    let h = *s.get(name).ok_or(NrtStatus::INVALID)?;
    let t = emu.tensors.get(&h).ok_or(NrtStatus::INVALID_HANDLE)?;
    if t.len != size {
        return Err(NrtStatus::INVALID);
    }
    Ok(h)
}

fn read_all(t: &Tensor) -> Vec<u8> {
    t.bytes.lock().unwrap_or_else(|e| e.into_inner())[t.offset..t.offset + t.len].to_vec()
}

fn write_all(t: &Tensor, data: &[u8]) {
    t.bytes.lock().unwrap_or_else(|e| e.into_inner())[t.offset..t.offset + t.len]
        .copy_from_slice(data);
}

/// `nrt_execute`: binds every input and output by name (INVALID when one is missing or has the
/// wrong size), runs the graph with the reference interpreter, writes the outputs; state written
/// through an aliased output lands in the tensor bound under both names. An execution error is
/// EXEC_BAD_INPUT; NaN in a float output is EXEC_COMPLETED_WITH_NUM_ERR (outputs still written).
#[no_mangle]
pub extern "C" fn nrt_execute(
    model: *mut NrtModel,
    inputs: *const NrtTensorSet,
    outputs: *mut NrtTensorSet,
) -> NrtStatus {
    with_running("nrt_execute", |emu| {
        let m = emu
            .models
            .get(&handle_of(model))
            .ok_or(NrtStatus::INVALID_HANDLE)?;
        let a = &m.artifact;
        let sig = a.graph.signature();
        let in_specs = a.input_specs();
        let mut hosts: Vec<HostTensor> = Vec::with_capacity(in_specs.len());
        for ((name, spec), p) in in_specs.iter().zip(&sig.params) {
            let h = bound(emu, handle_of(inputs), name, spec.max_bytes())?;
            let dims = spec.shape.fixed_dims().ok_or(NrtStatus::INVALID)?;
            let host = HostTensor::new(p.spec.dtype, &dims, read_all(&emu.tensors[&h]))
                .map_err(|_| NrtStatus::INVALID)?;
            hosts.push(host);
        }
        let out_specs = a.output_specs();
        let out_handles: Vec<usize> = out_specs
            .iter()
            .map(|(n, s)| bound(emu, handle_of(outputs), n, s.max_bytes()))
            .collect::<Result<_, _>>()?;
        let (mut states, plain): (Vec<_>, Vec<_>) = sig
            .params
            .iter()
            .zip(hosts)
            .partition(|(p, _)| p.kind == ParamKind::State);
        let args = ExecuteArgs::new()
            .inputs_from(plain.iter().map(|(p, t)| (p.name.as_str(), t)))
            .states_from(states.iter_mut().map(|(p, t)| (p.name.as_str(), t)));
        let results =
            switchyard_runtime::interpret(&a.graph, args).map_err(|_| NrtStatus::EXEC_BAD_INPUT)?;
        let mut nan = false;
        let n_out = results.len();
        for (i, h) in out_handles.iter().enumerate() {
            let value: &HostTensor = if i < n_out {
                &results[i]
            } else {
                let state = &a.names.outputs[i].0;
                &states
                    .iter()
                    .find(|(p, _)| &p.name == state)
                    .expect("state outputs name states")
                    .1
            };
            if value.dtype().is_float() {
                nan |= value
                    .to_f32_vec()
                    .map_err(|_| NrtStatus::FAILURE)?
                    .iter()
                    .any(|v| v.is_nan());
            }
            write_all(&emu.tensors[h], value.as_bytes());
        }
        if nan {
            return Err(NrtStatus::EXEC_COMPLETED_WITH_NUM_ERR);
        }
        Ok(())
    })
}

/// `nrt_get_status_as_str`.
#[no_mangle]
pub extern "C" fn nrt_get_status_as_str(status: NrtStatus) -> *const c_char {
    match status {
        NrtStatus::SUCCESS => c"SUCCESS".as_ptr(),
        NrtStatus::FAILURE => c"FAILURE".as_ptr(),
        NrtStatus::INVALID => c"INVALID".as_ptr(),
        NrtStatus::INVALID_HANDLE => c"INVALID_HANDLE".as_ptr(),
        NrtStatus::RESOURCE => c"RESOURCE".as_ptr(),
        NrtStatus::LOAD_NOT_ENOUGH_NC => c"LOAD_NOT_ENOUGH_NC".as_ptr(),
        NrtStatus::UNINITIALIZED => c"UNINITIALIZED".as_ptr(),
        NrtStatus::CLOSED => c"CLOSED".as_ptr(),
        NrtStatus::EXEC_BAD_INPUT => c"EXEC_BAD_INPUT".as_ptr(),
        NrtStatus::EXEC_COMPLETED_WITH_NUM_ERR => c"EXEC_COMPLETED_WITH_NUM_ERR".as_ptr(),
        _ => c"UNKNOWN".as_ptr(),
    }
}

/// Switchyard extension: live objects of a kind (0 tensors, 1 models, 2 tensor sets, 3 tensor-info
/// arrays), for leak checks.
#[no_mangle]
pub extern "C" fn switchyard_emu_live_objects(kind: u32) -> u64 {
    std::panic::catch_unwind(|| {
        let g = lock();
        let Some(e) = g.as_ref() else { return 0 };
        (match kind {
            0 => e.tensors.len(),
            1 => e.models.len(),
            2 => e.sets.len(),
            3 => e.infos.len(),
            _ => 0,
        }) as u64
    })
    .unwrap_or(0)
}

/// Switchyard extension: bytes that crossed the host boundary since the library was loaded,
/// `direction` 0 for host to device (`nrt_tensor_write`), 1 for device to host (`nrt_tensor_read`).
#[no_mangle]
pub extern "C" fn switchyard_emu_transferred_bytes(direction: u32) -> u64 {
    match direction {
        0 => BYTES_WRITTEN.load(Ordering::Relaxed),
        1 => BYTES_READ.load(Ordering::Relaxed),
        _ => 0,
    }
}

/// Switchyard extension: how many times the entry point `name` (e.g. `nrt_tensor_allocate`) has
/// been called since the library was loaded, so tests can show what a step costs.
#[no_mangle]
pub extern "C" fn switchyard_emu_calls(name: *const c_char) -> u64 {
    let Ok(name) = name_of(name) else { return 0 };
    CALLS
        .lock()
        .ok()
        .and_then(|c| c.as_ref().and_then(|m| m.get(&name).copied()))
        .unwrap_or(0)
}

/// Switchyard extension: replaces the fault plan (syntax of [`faults`]); INVALID if unparsable.
#[no_mangle]
pub extern "C" fn switchyard_emu_set_faults(spec: *const c_char) -> NrtStatus {
    guard(|| {
        let Ok(spec) = name_of(spec) else {
            return NrtStatus::INVALID;
        };
        match faults::Faults::parse(&spec) {
            Ok(f) => {
                lock().as_mut().expect("state exists").faults = f;
                NrtStatus::SUCCESS
            }
            Err(_) => NrtStatus::INVALID,
        }
    })
}
