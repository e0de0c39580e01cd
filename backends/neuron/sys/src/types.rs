//! The C types of `nrt.h` that Switchyard uses, laid out as the C compiler lays them out on
//! x86-64 and aarch64 Linux.

use std::ffi::c_char;

/// `NRT_STATUS`: a C enum, so a 32-bit value; unknown values are kept as they are.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NrtStatus(pub u32);

impl NrtStatus {
    /// Success.
    pub const SUCCESS: NrtStatus = NrtStatus(0);
    /// Unspecific failure.
    pub const FAILURE: NrtStatus = NrtStatus(1);
    /// Bad NEFF, input name or size mismatch.
    pub const INVALID: NrtStatus = NrtStatus(2);
    /// A handle that is not (or no longer) valid.
    pub const INVALID_HANDLE: NrtStatus = NrtStatus(3);
    /// Device memory allocation failed.
    pub const RESOURCE: NrtStatus = NrtStatus(4);
    /// Execution exceeded `NEURON_RT_EXEC_TIMEOUT`.
    pub const TIMEOUT: NrtStatus = NrtStatus(5);
    /// Hardware error.
    pub const HW_ERROR: NrtStatus = NrtStatus(6);
    /// Queue full.
    pub const QUEUE_FULL: NrtStatus = NrtStatus(7);
    /// Not enough NeuronCores to load the NEFF.
    pub const LOAD_NOT_ENOUGH_NC: NrtStatus = NrtStatus(9);
    /// Unsupported NEFF version.
    pub const UNSUPPORTED_NEFF_VERSION: NrtStatus = NrtStatus(10);
    /// Host memory allocation failed (legacy).
    pub const FAIL_HOST_MEM_ALLOC: NrtStatus = NrtStatus(11);
    /// Called before `nrt_init`.
    pub const UNINITIALIZED: NrtStatus = NrtStatus(13);
    /// Called after `nrt_close`.
    pub const CLOSED: NrtStatus = NrtStatus(14);
    /// Queue empty.
    pub const QUEUE_EMPTY: NrtStatus = NrtStatus(15);
    /// Execution unit unrecoverable; needs a reset.
    pub const EXEC_UNIT_UNRECOVERABLE: NrtStatus = NrtStatus(101);
    /// Bad input at execution.
    pub const EXEC_BAD_INPUT: NrtStatus = NrtStatus(1002);
    /// Execution produced NaN.
    pub const EXEC_COMPLETED_WITH_NUM_ERR: NrtStatus = NrtStatus(1003);
    /// Execution completed with an error.
    pub const EXEC_COMPLETED_WITH_ERR: NrtStatus = NrtStatus(1004);
    /// The core is locked by another model or process.
    pub const EXEC_NC_BUSY: NrtStatus = NrtStatus(1005);
    /// Out-of-bounds indirect copy.
    pub const EXEC_OOB: NrtStatus = NrtStatus(1006);
    /// Collective pending.
    pub const COLL_PENDING: NrtStatus = NrtStatus(1100);

    /// True for [`NrtStatus::SUCCESS`].
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// First of the hardware-error execution statuses (`NRT_EXEC_HW_ERR_*`).
    pub const EXEC_HW_ERR_FIRST: NrtStatus = NrtStatus(1200);
    /// Last of the hardware-error execution statuses.
    pub const EXEC_HW_ERR_LAST: NrtStatus = NrtStatus(1206);

    /// Whether the status is one of the hardware-error execution statuses.
    pub fn is_exec_hw_error(self) -> bool {
        (Self::EXEC_HW_ERR_FIRST.0..=Self::EXEC_HW_ERR_LAST.0).contains(&self.0)
    }

    /// Whether a NeuronCore cannot be trusted after this status until it is reset: a hardware
    /// error, or an execution unit in an unrecoverable state.
    pub fn is_fatal(self) -> bool {
        matches!(self, Self::HW_ERROR | Self::EXEC_UNIT_UNRECOVERABLE) || self.is_exec_hw_error()
    }

    /// The status's name from `nrt_status.h` (`UNKNOWN` for values this build does not know).
    pub fn name(self) -> &'static str {
        match self {
            Self::SUCCESS => "SUCCESS",
            Self::FAILURE => "FAILURE",
            Self::INVALID => "INVALID",
            Self::INVALID_HANDLE => "INVALID_HANDLE",
            Self::RESOURCE => "RESOURCE",
            Self::TIMEOUT => "TIMEOUT",
            Self::HW_ERROR => "HW_ERROR",
            Self::QUEUE_FULL => "QUEUE_FULL",
            Self::LOAD_NOT_ENOUGH_NC => "LOAD_NOT_ENOUGH_NC",
            Self::UNSUPPORTED_NEFF_VERSION => "UNSUPPORTED_NEFF_VERSION",
            Self::FAIL_HOST_MEM_ALLOC => "FAIL_HOST_MEM_ALLOC",
            Self::UNINITIALIZED => "UNINITIALIZED",
            Self::CLOSED => "CLOSED",
            Self::QUEUE_EMPTY => "QUEUE_EMPTY",
            Self::EXEC_UNIT_UNRECOVERABLE => "EXEC_UNIT_UNRECOVERABLE",
            Self::EXEC_BAD_INPUT => "EXEC_BAD_INPUT",
            Self::EXEC_COMPLETED_WITH_NUM_ERR => "EXEC_COMPLETED_WITH_NUM_ERR",
            Self::EXEC_COMPLETED_WITH_ERR => "EXEC_COMPLETED_WITH_ERR",
            Self::EXEC_NC_BUSY => "EXEC_NC_BUSY",
            Self::EXEC_OOB => "EXEC_OOB",
            Self::COLL_PENDING => "COLL_PENDING",
            s if s.is_exec_hw_error() => "EXEC_HW_ERR",
            _ => "UNKNOWN",
        }
    }
}

/// `nrt_framework_type_t`: what a custom runtime passes to `nrt_init`.
pub const NRT_FRAMEWORK_TYPE_NO_FW: u32 = 1;

/// `nrt_tensor_placement_t`: device memory.
pub const NRT_TENSOR_PLACEMENT_DEVICE: u32 = 0;
/// `nrt_tensor_placement_t`: DMA-able host memory (legacy, under 4 MB).
pub const NRT_TENSOR_PLACEMENT_HOST: u32 = 1;
/// `nrt_tensor_placement_t`: host memory.
pub const NRT_TENSOR_PLACEMENT_VIRTUAL: u32 = 2;

/// `nrt_tensor_usage_t`: a model input.
pub const NRT_TENSOR_USAGE_INPUT: u32 = 0;
/// `nrt_tensor_usage_t`: a model output.
pub const NRT_TENSOR_USAGE_OUTPUT: u32 = 1;

/// `nrt_dtype_t` in the current (hardware-code) numbering. Older headers numbered the same types
/// sequentially; trust byte sizes over this field.
pub mod dtype {
    /// `NRT_DTYPE_UINT64`
    pub const UINT64: u32 = 0x1;
    /// `NRT_DTYPE_INT8`
    pub const INT8: u32 = 0x2;
    /// `NRT_DTYPE_UINT8`
    pub const UINT8: u32 = 0x3;
    /// `NRT_DTYPE_INT16`
    pub const INT16: u32 = 0x4;
    /// `NRT_DTYPE_UINT16`
    pub const UINT16: u32 = 0x5;
    /// `NRT_DTYPE_BFLOAT16`
    pub const BFLOAT16: u32 = 0x6;
    /// `NRT_DTYPE_FLOAT16`
    pub const FLOAT16: u32 = 0x7;
    /// `NRT_DTYPE_INT32`
    pub const INT32: u32 = 0x8;
    /// `NRT_DTYPE_UINT32`
    pub const UINT32: u32 = 0x9;
    /// `NRT_DTYPE_FLOAT32`
    pub const FLOAT32: u32 = 0xA;
    /// `NRT_DTYPE_INT64`
    pub const INT64: u32 = 0xC;
}

/// `nrt_model_t` (opaque).
#[repr(C)]
pub struct NrtModel {
    _opaque: [u8; 0],
}

/// `nrt_tensor_t` (opaque).
#[repr(C)]
pub struct NrtTensor {
    _opaque: [u8; 0],
}

/// `nrt_tensor_set_t` (opaque).
#[repr(C)]
pub struct NrtTensorSet {
    _opaque: [u8; 0],
}

/// `nrt_version_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NrtVersion {
    /// Major version.
    pub rt_major: u64,
    /// Minor version.
    pub rt_minor: u64,
    /// Patch version.
    pub rt_patch: u64,
    /// Maintenance version.
    pub rt_maintenance: u64,
    /// NUL-terminated description.
    pub rt_detail: [c_char; 128],
    /// NUL-terminated git hash.
    pub git_hash: [c_char; 64],
}

/// `nrt_instance_info_t` (the struct grew over time: pass its size).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NrtInstanceInfo {
    /// Instance family (see [`instance_family_name`]).
    pub family: u32,
    /// Instance size.
    pub size: u32,
    /// NUL-terminated architecture name.
    pub arch_name: [c_char; 16],
    /// NUL-terminated device revision.
    pub device_revision: [c_char; 8],
}

/// The name of an instance family number of [`NrtInstanceInfo`].
pub fn instance_family_name(family: u32) -> Option<&'static str> {
    Some(match family {
        1 => "inf1",
        2 => "trn1",
        3 => "trn1n",
        4 => "inf2",
        5 => "trn2",
        _ => return None,
    })
}

/// The memory statistics of one NeuronCore.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct NrtVncMemoryStats {
    /// Bytes in use.
    pub bytes_used: usize,
    /// Bytes available in all.
    pub bytes_limit: usize,
}

/// `nrt_tensor_info_t`: 296 bytes on 64-bit Linux.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NrtTensorInfo {
    /// NUL-terminated tensor name.
    pub name: [c_char; 256],
    /// Input or output.
    pub usage: u32,
    /// Size in bytes.
    pub size: usize,
    /// `nrt_dtype_t`.
    pub dtype: u32,
    /// `ndim` dimensions.
    pub shape: *mut u32,
    /// Number of dimensions.
    pub ndim: u32,
}

/// `nrt_tensor_info_array_t`: a count followed by that many [`NrtTensorInfo`].
#[repr(C)]
pub struct NrtTensorInfoArray {
    /// Number of entries.
    pub tensor_count: u64,
    /// The entries (a C flexible array member).
    pub tensor_array: [NrtTensorInfo; 0],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layouts_match_the_c_headers() {
        assert_eq!(size_of::<NrtTensorInfo>(), 296);
        assert_eq!(offset_of!(NrtTensorInfo, usage), 256);
        assert_eq!(offset_of!(NrtTensorInfo, size), 264);
        assert_eq!(offset_of!(NrtTensorInfo, dtype), 272);
        assert_eq!(offset_of!(NrtTensorInfo, shape), 280);
        assert_eq!(offset_of!(NrtTensorInfo, ndim), 288);
        assert_eq!(size_of::<NrtTensorInfoArray>(), 8);
        assert_eq!(offset_of!(NrtTensorInfoArray, tensor_array), 8);
        assert_eq!(size_of::<NrtVersion>(), 4 * 8 + 128 + 64);
        assert_eq!(offset_of!(NrtVersion, rt_detail), 32);
        assert_eq!(offset_of!(NrtVersion, git_hash), 160);
        assert_eq!(size_of::<NrtInstanceInfo>(), 32);
        assert_eq!(offset_of!(NrtInstanceInfo, arch_name), 8);
        assert_eq!(size_of::<NrtVncMemoryStats>(), 16);
        assert_eq!(size_of::<NrtStatus>(), 4);
        assert_eq!(align_of::<NrtTensorInfo>(), 8);
    }

    #[test]
    fn status_names() {
        assert_eq!(NrtStatus(1002).name(), "EXEC_BAD_INPUT");
        assert_eq!(NrtStatus(1203).name(), "EXEC_HW_ERR");
        assert_eq!(NrtStatus(77).name(), "UNKNOWN");
        assert!(NrtStatus::SUCCESS.is_ok());
    }
}
