//! RAII wrappers of libnrt's tensors, models and tensor sets: each frees its handle exactly once
//! and keeps the runtime alive while it exists; a tensor set keeps alive every tensor bound in it.

use crate::runtime::NrtRuntime;
use std::ffi::CString;
use std::sync::Arc;
use switchyard_neuron_sys::{
    c_array_to_string, NrtModel, NrtTensor, NrtTensorInfo, NrtTensorInfoArray, NrtTensorSet,
    NRT_TENSOR_PLACEMENT_DEVICE, NRT_TENSOR_USAGE_INPUT,
};
use switchyard_runtime::{Error, Result};

/// A device tensor.
pub struct NrtTensorHandle {
    rt: Arc<NrtRuntime>,
    ptr: *mut NrtTensor,
    size: usize,
    device: String,
}

// SAFETY: libnrt tensors are plain handles usable from any thread; this wrapper never hands out
// the raw pointer for mutation outside calls into the runtime.
unsafe impl Send for NrtTensorHandle {}
// SAFETY: see above; concurrent reads and writes of one tensor are the caller's ordering concern,
// as with any device buffer.
unsafe impl Sync for NrtTensorHandle {}

impl NrtTensorHandle {
    /// Allocates `size` bytes on NeuronCore `vnc`.
    pub fn allocate(
        rt: &Arc<NrtRuntime>,
        device: &str,
        vnc: i32,
        size: usize,
        name: &str,
    ) -> Result<NrtTensorHandle> {
        let cname = CString::new(name).unwrap_or_default();
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `cname` is a valid C string and `ptr` a writable out-pointer.
        let s = unsafe {
            (rt.lib().api.tensor_allocate)(
                NRT_TENSOR_PLACEMENT_DEVICE,
                vnc,
                size,
                cname.as_ptr(),
                &mut ptr,
            )
        };
        rt.check(device, "nrt_tensor_allocate", s)?;
        Ok(NrtTensorHandle {
            rt: rt.clone(),
            ptr,
            size,
            device: device.to_string(),
        })
    }

    /// Bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Copies `data` into the tensor at `offset`.
    pub fn write(&self, data: &[u8], offset: usize) -> Result<()> {
        // SAFETY: `self.ptr` is a live tensor of this runtime; `data` is readable for its length.
        let s = unsafe {
            (self.rt.lib().api.tensor_write)(self.ptr, data.as_ptr().cast(), offset, data.len())
        };
        self.rt.check(&self.device, "nrt_tensor_write", s)
    }

    /// Reads the whole tensor.
    pub fn read(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.size];
        // SAFETY: `self.ptr` is a live tensor; `out` is writable for `size` bytes.
        let s = unsafe {
            (self.rt.lib().api.tensor_read)(self.ptr, out.as_mut_ptr().cast(), 0, self.size)
        };
        self.rt.check(&self.device, "nrt_tensor_read", s)?;
        Ok(out)
    }

    /// Sets every byte to `value`.
    pub fn memset(&self, value: u8) -> Result<()> {
        // SAFETY: `self.ptr` is a live tensor and the range is its whole size.
        let s =
            unsafe { (self.rt.lib().api.tensor_memset)(self.ptr, 0, i32::from(value), self.size) };
        self.rt.check(&self.device, "nrt_tensor_memset", s)
    }

    pub(crate) fn raw(&self) -> *mut NrtTensor {
        self.ptr
    }
}

impl Drop for NrtTensorHandle {
    fn drop(&mut self) {
        // SAFETY: the tensor is live and freed once here; the call nulls our copy of the pointer.
        unsafe { (self.rt.lib().api.tensor_free)(&mut self.ptr) };
    }
}

/// One input or output of a loaded model, from its tensor info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name it is bound by.
    pub name: String,
    /// Bytes.
    pub size: usize,
    /// `nrt_dtype_t` (numbering varies between runtime versions; sizes are authoritative).
    pub dtype: u32,
    /// Dimensions.
    pub shape: Vec<u32>,
}

/// A model loaded on a NeuronCore.
pub struct NrtModelHandle {
    rt: Arc<NrtRuntime>,
    ptr: *mut NrtModel,
    device: String,
    /// Inputs in the order the model lists them.
    pub inputs: Vec<TensorInfo>,
    /// Outputs in the order the model lists them.
    pub outputs: Vec<TensorInfo>,
}

// SAFETY: a loaded model is a handle the runtime lets any thread execute.
unsafe impl Send for NrtModelHandle {}
// SAFETY: see above.
unsafe impl Sync for NrtModelHandle {}

impl NrtModelHandle {
    /// Loads a NEFF (or, on the emulator, an emulation artifact) on NeuronCore `vnc`.
    pub fn load(
        rt: &Arc<NrtRuntime>,
        device: &str,
        vnc: i32,
        bytes: &[u8],
    ) -> Result<NrtModelHandle> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `bytes` is readable for its length; `ptr` a writable out-pointer.
        let s =
            unsafe { (rt.lib().api.load)(bytes.as_ptr().cast(), bytes.len(), vnc, -1, &mut ptr) };
        rt.check(device, "nrt_load", s)?;
        let mut model = NrtModelHandle {
            rt: rt.clone(),
            ptr,
            device: device.to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        model.read_tensor_info()?;
        Ok(model)
    }

    fn read_tensor_info(&mut self) -> Result<()> {
        let api = self.rt.lib().api;
        let mut info: *mut NrtTensorInfoArray = std::ptr::null_mut();
        // SAFETY: the model is live; `info` a writable out-pointer.
        let s = unsafe { (api.get_model_tensor_info)(self.ptr, &mut info) };
        self.rt
            .check(&self.device, "nrt_get_model_tensor_info", s)?;
        if info.is_null() {
            return Err(Error::backend(
                &self.device,
                "nrt_get_model_tensor_info returned no array",
            ));
        }
        // SAFETY: the runtime returned a valid array: a count followed by that many entries, each
        // with `ndim` dimensions behind `shape`; it stays valid until freed below.
        let entries: Vec<(u32, TensorInfo)> = unsafe {
            let count = (*info).tensor_count as usize;
            let first = std::ptr::addr_of!((*info).tensor_array) as *const NrtTensorInfo;
            (0..count)
                .map(|i| {
                    let e = &*first.add(i);
                    let shape = if e.shape.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(e.shape, e.ndim as usize).to_vec()
                    };
                    (
                        e.usage,
                        TensorInfo {
                            name: c_array_to_string(&e.name),
                            size: e.size,
                            dtype: e.dtype,
                            shape,
                        },
                    )
                })
                .collect()
        };
        // SAFETY: `info` came from nrt_get_model_tensor_info and is freed once.
        let s = unsafe { (api.free_model_tensor_info)(info) };
        self.rt
            .check(&self.device, "nrt_free_model_tensor_info", s)?;
        for (usage, e) in entries {
            if usage == NRT_TENSOR_USAGE_INPUT {
                self.inputs.push(e);
            } else {
                self.outputs.push(e);
            }
        }
        Ok(())
    }

    /// Runs the model with the tensors bound in `inputs` and `outputs`.
    pub fn execute(&self, inputs: &TensorSet, outputs: &TensorSet) -> Result<()> {
        // SAFETY: model and sets are live; every tensor bound in the sets is kept alive by them.
        let s = unsafe { (self.rt.lib().api.execute)(self.ptr, inputs.ptr, outputs.ptr) };
        self.rt.check(&self.device, "nrt_execute", s)
    }
}

impl Drop for NrtModelHandle {
    fn drop(&mut self) {
        // SAFETY: the model is live and unloaded once here.
        unsafe { (self.rt.lib().api.unload)(self.ptr) };
    }
}

/// A set of named tensors for executions. It holds an `Arc` of every tensor bound in it, so it
/// never outlives them; binding a name again replaces (and releases) the earlier tensor.
pub struct TensorSet {
    rt: Arc<NrtRuntime>,
    ptr: *mut NrtTensorSet,
    device: String,
    bound: std::collections::HashMap<String, Arc<NrtTensorHandle>>,
}

impl TensorSet {
    /// An empty set.
    pub fn new(rt: &Arc<NrtRuntime>, device: &str) -> Result<TensorSet> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `ptr` is a writable out-pointer.
        let s = unsafe { (rt.lib().api.allocate_tensor_set)(&mut ptr) };
        rt.check(device, "nrt_allocate_tensor_set", s)?;
        Ok(TensorSet {
            rt: rt.clone(),
            ptr,
            device: device.to_string(),
            bound: Default::default(),
        })
    }

    /// Binds `tensor` under `name` (replacing an earlier binding of the name).
    pub fn add(&mut self, name: &str, tensor: &Arc<NrtTensorHandle>) -> Result<()> {
        let c = CString::new(name)
            .map_err(|_| Error::exec("tensor set", format!("name {name:?} contains NUL")))?;
        // SAFETY: set and tensor are live; `c` is a valid C string for the call.
        let s = unsafe {
            (self.rt.lib().api.add_tensor_to_tensor_set)(self.ptr, c.as_ptr(), tensor.raw())
        };
        self.rt
            .check(&self.device, "nrt_add_tensor_to_tensor_set", s)?;
        self.bound.insert(name.to_string(), tensor.clone());
        Ok(())
    }
}

// SAFETY: a tensor set is plain data in libnrt, usable from any thread; Switchyard uses each one
// from one thread at a time (an executable keeps its sets behind a mutex).
unsafe impl Send for TensorSet {}

impl Drop for TensorSet {
    fn drop(&mut self) {
        // SAFETY: the set is live and destroyed once; its tensors are released after (field drop).
        unsafe { (self.rt.lib().api.destroy_tensor_set)(&mut self.ptr) };
    }
}
