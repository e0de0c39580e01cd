//! The emulated runtime: NeuronCores, device memory, tensors, tensor sets and loaded models, all
//! in host memory, behind one lock.

use crate::faults::Faults;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use switchyard_neuron::artifact::EmulationArtifact;
use switchyard_neuron_sys::NrtStatus;

/// Where the runtime is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before `nrt_init`.
    Uninitialized,
    /// Between `nrt_init` and `nrt_close`.
    Running,
    /// After `nrt_close`.
    Closed,
}

/// A tensor: a range of a shared byte buffer (slices share their source's buffer).
pub struct Tensor {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub offset: usize,
    pub len: usize,
    /// The visible core whose memory this allocation is charged to (not for slices or host).
    pub charged_core: Option<usize>,
    /// The core the tensor lives on (for copies), `None` for host memory.
    pub core: Option<usize>,
}

/// A loaded model.
pub struct Model {
    pub artifact: EmulationArtifact,
    pub core: usize,
    pub bytes: usize,
}

/// A tensor set: names bound to tensor handles (not owned).
pub type TensorSet = HashMap<String, usize>;

/// The whole emulated runtime.
pub struct Emu {
    pub phase: Phase,
    /// Global indices of the visible NeuronCores.
    pub visible: Vec<u32>,
    /// Device memory per visible core.
    pub mem_limit: usize,
    pub mem_used: Vec<usize>,
    next_handle: usize,
    pub tensors: HashMap<usize, Tensor>,
    pub models: HashMap<usize, Model>,
    pub sets: HashMap<usize, TensorSet>,
    /// Tensor-info arrays handed out, by address (freed by `nrt_free_model_tensor_info`).
    pub infos: HashMap<usize, (Vec<u64>, Vec<Vec<u32>>)>,
    pub faults: Faults,
}

static EMU: Mutex<Option<Emu>> = Mutex::new(None);

/// Default NeuronCores when the environment does not say (a trn1.2xlarge has 2).
const DEFAULT_CORES: u32 = 2;
/// Default device memory per core.
const DEFAULT_MEM_LIMIT: usize = 16 << 30;

/// Parses `NEURON_RT_VISIBLE_CORES` (`0`, `2-3`, `0,1`), else `NEURON_RT_NUM_CORES`, else 2 cores.
pub fn visible_cores() -> (Vec<u32>, u32) {
    let parse = |s: &str| -> Option<Vec<u32>> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                    if b < a {
                        return None;
                    }
                    v.extend(a..=b);
                }
                None => v.push(part.parse().ok()?),
            }
        }
        (!v.is_empty()).then_some(v)
    };
    let visible = std::env::var("NEURON_RT_VISIBLE_CORES")
        .ok()
        .and_then(|s| parse(&s))
        .or_else(|| {
            std::env::var("NEURON_RT_NUM_CORES")
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|&n| n > 0)
                .map(|n| (0..n).collect())
        })
        .unwrap_or_else(|| (0..DEFAULT_CORES).collect());
    let total = visible
        .iter()
        .max()
        .map_or(DEFAULT_CORES, |m| (m + 1).max(DEFAULT_CORES));
    (visible, total)
}

/// `SWITCHYARD_NRT_EMU_MEM_LIMIT`: bytes per core, with an optional `K`/`M`/`G` (binary) suffix.
pub fn mem_limit() -> usize {
    let Ok(s) = std::env::var("SWITCHYARD_NRT_EMU_MEM_LIMIT") else {
        return DEFAULT_MEM_LIMIT;
    };
    let s = s.trim().trim_end_matches(['B', 'b', 'i']);
    let (num, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n << shift)
        .unwrap_or(DEFAULT_MEM_LIMIT)
}

impl Emu {
    fn fresh(phase: Phase) -> Emu {
        let (visible, _) = visible_cores();
        Emu {
            phase,
            mem_used: vec![0; visible.len()],
            visible,
            mem_limit: mem_limit(),
            next_handle: 0x1000,
            tensors: HashMap::new(),
            models: HashMap::new(),
            sets: HashMap::new(),
            infos: HashMap::new(),
            faults: Faults::from_env(),
        }
    }

    /// A new opaque handle value (never null, never reused).
    pub fn handle(&mut self) -> usize {
        self.next_handle += 16;
        self.next_handle
    }

    /// The state for a call that needs a running runtime, after fault injection for `call`.
    pub fn running(&mut self, call: &str) -> Result<(), NrtStatus> {
        match self.phase {
            Phase::Uninitialized => Err(NrtStatus::UNINITIALIZED),
            Phase::Closed => Err(NrtStatus::CLOSED),
            Phase::Running => self.faults.check(call),
        }
    }

    /// Charges `bytes` to visible core `core`, or RESOURCE when it does not fit.
    pub fn charge(&mut self, core: usize, bytes: usize) -> Result<(), NrtStatus> {
        if self.mem_used[core].saturating_add(bytes) > self.mem_limit {
            return Err(NrtStatus::RESOURCE);
        }
        self.mem_used[core] += bytes;
        Ok(())
    }

    /// Gives `bytes` back to `core`.
    pub fn release(&mut self, core: usize, bytes: usize) {
        self.mem_used[core] = self.mem_used[core].saturating_sub(bytes);
    }

    /// Resolves a core argument (`-1`: the first visible core) to a visible-core index.
    pub fn core_index(&self, vnc: i32) -> Option<usize> {
        match vnc {
            -1 => Some(0),
            v if v >= 0 && (v as usize) < self.visible.len() => Some(v as usize),
            _ => None,
        }
    }
}

/// Locks the emulator state, creating it (uninitialized) on first use.
pub fn lock() -> MutexGuard<'static, Option<Emu>> {
    let mut g = EMU.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        *g = Some(Emu::fresh(Phase::Uninitialized));
    }
    g
}

/// Starts a new runtime (state from the environment), replacing whatever was there.
pub fn start(g: &mut Option<Emu>) {
    *g = Some(Emu::fresh(Phase::Running));
}
