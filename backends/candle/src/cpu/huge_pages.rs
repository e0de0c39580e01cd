//! Weight storage on transparent huge pages.
//!
//! Decoding against f32 weights streams every packed matrix once per token; with 4 KiB pages
//! that walk misses the TLB every 4 KiB, and on the machine measured the f32 decode step ran
//! about a fifth slower than from 2 MiB pages (SmolLM2-135M f32, tg64: 37 against 44 t/s).
//! The heap is not the place to ask for them: an allocator that advises huge pages on all its
//! memory (as mimalloc's arenas do by default) rounds small, scattered allocations up to
//! resident 2 MiB pages, and the process holds tens of MiB it never uses (real SmolLM2 Q4_1,
//! whose weights stay in the file's mapping: 155 against 129 MiB peak). So the binary's
//! allocator is built without that advice, and the weights, which are large, long-lived and
//! read in full, ask for huge pages themselves, here.
//!
//! Buffers are cut one after another from shared chunks of address space (anonymous mappings
//! of [`CHUNK`] bytes, or one sized to a larger buffer, starting on a 2 MiB boundary) advised
//! `MADV_HUGEPAGE`; packed back to back, a layer's small matrices share huge pages rather than
//! each rounding up to its own. Address space past the last buffer of a chunk is never touched,
//! so never resident, beyond the huge page the last buffer ends in. A chunk is unmapped when the
//! last buffer cut from it is dropped (the chunk being cut from included). Where the kernel offers no huge pages the advice fails and
//! the buffers work as ordinary memory.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use memmap2::{Advice, MmapMut};

/// Bytes in one transparent huge page on x86-64 (and aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Address space reserved per shared chunk.
const CHUNK: usize = 64 << 20;

/// Start alignment of each buffer: a cache line, the widest vector load's natural alignment.
const ALIGN: usize = 64;

/// The chunk buffers are cut from now, and the bytes of it already handed out. Held weakly: a
/// chunk whose buffers have all been dropped is unmapped at once, not kept for later cuts (whose
/// fresh offsets would touch new pages while the freed ones stayed resident).
static CURRENT: Mutex<Option<(Weak<Chunk>, usize)>> = Mutex::new(None);

/// One anonymous mapping; `start..start + capacity` is its 2 MiB-aligned usable part.
struct Chunk {
    _map: MmapMut,
    start: NonNull<u8>,
    capacity: usize,
}

// SAFETY: `start` points into `_map`, which the chunk owns and never moves; the chunk itself
// gives no access through it (each buffer reads and writes only its own range, see below).
unsafe impl Send for Chunk {}
// SAFETY: as for `Send`: the chunk's only shared state is the immutable pointer and length.
unsafe impl Sync for Chunk {}

impl Chunk {
    /// A fresh chunk with at least `bytes` usable, or `None` when no mapping can be made.
    fn map(bytes: usize) -> Option<Chunk> {
        let capacity = bytes.next_multiple_of(HUGE_PAGE);
        let mut map = MmapMut::map_anon(capacity + HUGE_PAGE).ok()?;
        let offset = map.as_ptr().align_offset(HUGE_PAGE);
        // Advice only: without huge pages the memory is still correct, just slower to walk.
        let _ = map.advise_range(Advice::HugePage, offset, capacity);
        let start = NonNull::new(map[offset..].as_mut_ptr())?;
        Some(Chunk {
            _map: map,
            start,
            capacity,
        })
    }
}

/// A zero-initialised `[f32]` of fixed length, cut from a huge-page chunk (or, if no mapping can
/// be made, on the heap).
pub struct HugePageVec {
    storage: Storage,
}

enum Storage {
    Heap(Vec<f32>),
    /// `len` values at `ptr`, inside `chunk`, which no other buffer overlaps.
    Chunk {
        _chunk: Arc<Chunk>,
        ptr: NonNull<f32>,
        len: usize,
    },
}

// SAFETY: a chunk-backed buffer is the only holder of its range (cut once, under `CURRENT`'s
// lock, from a chunk its `Arc` keeps mapped), so it can move between threads like a `Vec`.
unsafe impl Send for HugePageVec {}
// SAFETY: shared references only read the range; writing needs `&mut self`.
unsafe impl Sync for HugePageVec {}

impl HugePageVec {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> HugePageVec {
        let bytes = len * std::mem::size_of::<f32>();
        match cut(bytes.max(1)) {
            Some((chunk, offset)) => {
                debug_assert!(offset + bytes <= chunk.capacity);
                // SAFETY: `offset + bytes <= capacity`, so the result stays inside the chunk's
                // usable part; `offset` is a multiple of ALIGN, hence of f32's alignment.
                let ptr = unsafe { chunk.start.add(offset) }.cast::<f32>();
                HugePageVec {
                    storage: Storage::Chunk {
                        _chunk: chunk,
                        ptr,
                        len,
                    },
                }
            }
            None => HugePageVec {
                storage: Storage::Heap(vec![0f32; len]),
            },
        }
    }

    /// Whether the buffer lies in a chunk advised for huge pages (rather than on the heap).
    pub fn in_chunk(&self) -> bool {
        matches!(self.storage, Storage::Chunk { .. })
    }
}

/// A range of `bytes` in a chunk: the current one if it has room, else a new one (which becomes
/// current unless the buffer alone outgrows a chunk, so the current one's room is not wasted).
fn cut(bytes: usize) -> Option<(Arc<Chunk>, usize)> {
    let mut current = CURRENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((weak, used)) = current.as_mut() {
        if let Some(chunk) = weak.upgrade() {
            let offset = used.next_multiple_of(ALIGN);
            if offset + bytes <= chunk.capacity {
                *used = offset + bytes;
                return Some((chunk, offset));
            }
        }
    }
    let chunk = Arc::new(Chunk::map(bytes.max(CHUNK))?);
    if bytes < CHUNK {
        *current = Some((Arc::downgrade(&chunk), bytes));
    }
    Some((chunk, 0))
}

impl std::ops::Deref for HugePageVec {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.storage {
            Storage::Heap(v) => v,
            // SAFETY: `len` values at `ptr` lie inside the chunk, which `chunk` keeps mapped;
            // they are initialised (the mapping starts zeroed) and no `&mut` to them exists
            // while `self` is borrowed.
            Storage::Chunk { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
        }
    }
}

impl std::ops::DerefMut for HugePageVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            // SAFETY: as for `deref`; `&mut self` is the only access to this buffer's range,
            // which no other buffer overlaps.
            Storage::Chunk { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
        }
    }
}

impl Clone for HugePageVec {
    fn clone(&self) -> HugePageVec {
        let mut copy = HugePageVec::zeroed(self.len());
        copy.copy_from_slice(self);
        copy
    }
}

impl PartialEq for HugePageVec {
    fn eq(&self, other: &HugePageVec) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for HugePageVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugePageVec")
            .field("len", &self.len())
            .field("in_chunk", &self.in_chunk())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers are zeroed, aligned, disjoint (writes to one never show in another, including
    /// one larger than a chunk), and their clones are equal copies.
    #[test]
    fn buffers_are_zeroed_aligned_disjoint_and_clone() {
        let lens = [1000, 17, HUGE_PAGE / 4 + 77, CHUNK / 4 + 5, 3, 0, 250_000];
        let mut bufs: Vec<HugePageVec> = lens.iter().map(|&n| HugePageVec::zeroed(n)).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            assert!(b.in_chunk());
            assert_eq!(b.len(), lens[i]);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.iter().all(|&v| v == 0.0));
            b.iter_mut().for_each(|v| *v = i as f32 + 1.0);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(
                b.iter().all(|&v| v == i as f32 + 1.0),
                "buffer {i} was overwritten"
            );
            let copy = b.clone();
            assert_eq!(&copy, b);
            assert_ne!(copy.as_ptr(), b.as_ptr());
        }
        // A buffer larger than a chunk starts its own, on a huge-page boundary.
        assert_eq!(bufs[3].as_ptr() as usize % HUGE_PAGE, 0);
    }

    /// Buffers move to and are read from other threads.
    #[test]
    fn buffers_cross_threads() {
        let mut b = HugePageVec::zeroed(4096);
        b[4095] = 2.0;
        let sum = std::thread::spawn(move || b.iter().sum::<f32>())
            .join()
            .unwrap();
        assert_eq!(sum, 2.0);
    }
}
