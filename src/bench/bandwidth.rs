//! A short memory-bandwidth probe for the CPU roofline: how fast the compute threads can stream
//! a buffer much larger than the caches.

use rayon::prelude::*;
use std::time::Instant;

/// Bytes read per pass (larger than any last-level cache here).
const PROBE_BYTES: usize = 512 << 20;

/// Streams read side by side by one thread, as a matrix-vector kernel reads several rows at
/// once: one stream per thread leaves the memory system idle between prefetches.
const STREAMS: usize = 4;

/// Sums `words` as [`STREAMS`] streams read side by side, eight independent lanes each, so that
/// the loop is bound by the memory rather than by one chain of additions or one prefetch stream.
fn sum_lanes(words: &[u64]) -> u64 {
    let part = words.len() / STREAMS / 8 * 8;
    let (streams, tail) = words.split_at(part * STREAMS);
    let mut acc = [0u64; 8];
    for i in (0..part).step_by(8) {
        for s in 0..STREAMS {
            let block = &streams[s * part + i..s * part + i + 8];
            for (a, w) in acc.iter_mut().zip(block) {
                *a = a.wrapping_add(*w);
            }
        }
    }
    acc.iter().chain(tail).fold(0u64, |s, &w| s.wrapping_add(w))
}

/// Measures read bandwidth in bytes per second with `threads` threads: the best of a few passes
/// summing a 512 MiB buffer (about half a second in all).
pub fn probe_read_bandwidth(threads: usize) -> f64 {
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(p) => p,
        Err(_) => return f64::NAN,
    };
    // Mapped apart from the allocator, so its pages go back to the system when it is dropped
    // (an allocator may keep a freed block resident, and the report reads the peak memory).
    let Ok(mut map) = memmap2::MmapMut::map_anon(PROBE_BYTES) else {
        return f64::NAN;
    };
    // Large pages where the kernel offers them (transparent huge pages in `madvise` mode): with
    // 4 KiB pages the probe measures the TLB as much as the memory, and reads well below what
    // the decode kernels reach on the same machine.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    let best = pool.install(|| {
        // Distinct values so nothing is served from a shared zero page.
        let buf: &mut [u64] = bytemuck::cast_slice_mut(&mut map[..]);
        buf.par_chunks_mut(1 << 16)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (i, w) in chunk.iter_mut().enumerate() {
                    *w = ((c << 16) + i) as u64 * 0x9e37_79b9;
                }
            });
        let buf: &[u64] = buf;
        let mut best = 0f64;
        let mut sink = 0u64;
        for _ in 0..4 {
            let start = Instant::now();
            let s: u64 = buf
                .par_chunks(1 << 16)
                .map(sum_lanes)
                .reduce(|| 0, u64::wrapping_add);
            let secs = start.elapsed().as_secs_f64();
            sink = sink.wrapping_add(s);
            best = best.max(PROBE_BYTES as f64 / secs);
        }
        std::hint::black_box(sink);
        best
    });
    drop(map);
    // The probe's buffer is not the model's memory: reset the peak resident size the report
    // reads (Linux: writing 5 to clear_refs resets VmHWM to the current size).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    best
}
