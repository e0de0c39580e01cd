//! The process-wide Neuron runtime: libnrt loaded once, `nrt_init` once, `nrt_close` when the
//! last tensor, model or device using it is gone.

use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex, Weak};
use switchyard_neuron_sys::{
    c_array_to_string, check, instance_family_name, NrtError, NrtInstanceInfo, NrtLibrary,
    NrtStatus, NrtVersion, NRT_FRAMEWORK_TYPE_NO_FW,
};
use switchyard_runtime::Error;

/// The version detail the project's emulator reports.
const EMULATOR_MARK: &str = "Switchyard libnrt emulator";

/// An initialized runtime. Everything that holds a libnrt handle holds an `Arc` of this, so the
/// runtime closes only after every model is unloaded and every tensor freed.
pub struct NrtRuntime {
    lib: NrtLibrary,
    /// `major.minor.patch` and the detail string.
    pub version: String,
    /// True when the library is Switchyard's emulator.
    pub emulated: bool,
    /// Instance family, when the library reports it.
    pub family: Option<String>,
    /// Visible NeuronCores.
    pub visible_cores: u32,
    /// All NeuronCores of the instance.
    pub total_cores: u32,
}

struct Registry {
    current: Weak<NrtRuntime>,
    /// An initialized runtime exists (possibly closing).
    alive: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    current: Weak::new(),
    alive: false,
});
static CLOSED: Condvar = Condvar::new();

/// A failed libnrt call as the runtime's typed error.
pub fn call_error(device: &str, e: NrtError) -> Error {
    Error::DeviceCall {
        device: device.to_string(),
        call: e.call.to_string(),
        code: i64::from(e.status.0),
        name: e.status.name().to_string(),
    }
}

impl NrtRuntime {
    /// The runtime, initializing it if no one holds it (from `library`, or the search order of
    /// [`switchyard_neuron_sys::candidate_paths`]). `device` names the requester in errors.
    pub fn acquire(
        device: &str,
        library: Option<&std::path::Path>,
    ) -> Result<Arc<NrtRuntime>, Error> {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(rt) = reg.current.upgrade() {
                return Ok(rt);
            }
            if !reg.alive {
                break;
            }
            // The last holder is closing the previous runtime: wait until it is closed.
            reg = CLOSED.wait(reg).unwrap_or_else(|e| e.into_inner());
        }
        let unavailable = |reason: String| Error::DeviceUnavailable {
            device: device.to_string(),
            reason,
        };
        let lib = match library {
            Some(path) => NrtLibrary::load_from(path),
            None => NrtLibrary::load(),
        }
        .map_err(|e| unavailable(e.to_string()))?;
        let api = lib.api;
        let mut v = NrtVersion {
            rt_major: 0,
            rt_minor: 0,
            rt_patch: 0,
            rt_maintenance: 0,
            rt_detail: [0; 128],
            git_hash: [0; 64],
        };
        // SAFETY: `v` is a writable NrtVersion and its size is passed; callable before init.
        let version = match unsafe { (api.get_version)(&mut v, std::mem::size_of::<NrtVersion>()) }
        {
            s if s.is_ok() => {
                let detail = c_array_to_string(&v.rt_detail);
                format!("{}.{}.{} ({detail})", v.rt_major, v.rt_minor, v.rt_patch)
            }
            s => format!("unknown (nrt_get_version returned {} {})", s.0, s.name()),
        };
        let emulated = version.contains(EMULATOR_MARK);
        let empty = CString::default();
        // SAFETY: two valid NUL-terminated strings; NO_FW is the framework value for a custom
        // runtime.
        let status =
            unsafe { (api.init)(NRT_FRAMEWORK_TYPE_NO_FW, empty.as_ptr(), empty.as_ptr()) };
        if !status.is_ok() {
            return Err(unavailable(format!(
                "no usable Neuron device: nrt_init returned status {} ({}) from {} (this happens on machines without Neuron devices or driver)",
                status.0,
                status.name(),
                lib.path.display()
            )));
        }
        let count = |f: switchyard_neuron_sys::NrtGetCount| {
            let mut n = 0u32;
            // SAFETY: `n` is a writable u32.
            let s = unsafe { f(&mut n) };
            if s.is_ok() {
                n
            } else {
                0
            }
        };
        let visible_cores = count(api.get_visible_vnc_count);
        let total_cores = count(api.get_total_vnc_count);
        let family = lib.optional.get_instance_info.and_then(|f| {
            let mut info = NrtInstanceInfo {
                family: 0,
                size: 0,
                arch_name: [0; 16],
                device_revision: [0; 8],
            };
            // SAFETY: `info` is writable and its size is passed.
            let s = unsafe { f(&mut info, std::mem::size_of::<NrtInstanceInfo>()) };
            s.is_ok()
                .then(|| instance_family_name(info.family).map(str::to_string))
                .flatten()
        });
        let rt = Arc::new(NrtRuntime {
            lib,
            version,
            emulated,
            family,
            visible_cores,
            total_cores,
        });
        reg.current = Arc::downgrade(&rt);
        reg.alive = true;
        Ok(rt)
    }

    /// The library's entry points.
    pub fn lib(&self) -> &NrtLibrary {
        &self.lib
    }

    /// `Ok` for success, else the typed error naming `call` and `device`.
    pub fn check(&self, device: &str, call: &'static str, status: NrtStatus) -> Result<(), Error> {
        check(call, status).map_err(|e| call_error(device, e))
    }

    /// Live objects counted by the emulator (0 tensors, 1 models, 2 sets, 3 info arrays), `None`
    /// on a real runtime.
    pub fn emulator_live_objects(&self, kind: u32) -> Option<u64> {
        // SAFETY: the emulator's extension takes a kind number and returns a count.
        self.lib
            .optional
            .emu_live_objects
            .map(|f| unsafe { f(kind) })
    }

    /// Bytes the emulator has copied from the host and back (`nrt_tensor_write`,
    /// `nrt_tensor_read`) since it was loaded; `None` on a real runtime.
    pub fn emulator_transferred_bytes(&self) -> Option<(u64, u64)> {
        let f = self.lib.optional.emu_transferred_bytes?;
        // SAFETY: the emulator's extension takes a direction number and returns a count.
        Some(unsafe { (f(0), f(1)) })
    }

    /// Calls of the libnrt entry point `name` the emulator has seen since it was loaded; `None` on
    /// a real runtime.
    pub fn emulator_calls(&self, name: &str) -> Option<u64> {
        let f = self.lib.optional.emu_calls?;
        let c = std::ffi::CString::new(name).ok()?;
        // SAFETY: the emulator's extension reads a NUL-terminated name for the call's duration.
        Some(unsafe { f(c.as_ptr()) })
    }

    /// Replaces the emulator's fault-injection plan; `Unsupported` on a real runtime.
    pub fn emulator_set_faults(&self, plan: &str) -> Result<(), Error> {
        let f = self
            .lib
            .optional
            .emu_set_faults
            .ok_or_else(|| Error::Unsupported {
                device: "neuron".into(),
                what: "fault injection (a real Neuron runtime)".into(),
            })?;
        let c = CString::new(plan)
            .map_err(|_| Error::exec("faults", "the plan contains a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string for the call.
        let s = unsafe { f(c.as_ptr()) };
        self.check("neuron", "switchyard_emu_set_faults", s)
    }
}

impl Drop for NrtRuntime {
    fn drop(&mut self) {
        // SAFETY: every handle of this runtime held an Arc of it, so none is left.
        unsafe { (self.lib.api.close)() };
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.alive = false;
        CLOSED.notify_all();
    }
}
