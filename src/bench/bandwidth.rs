//! A short memory-bandwidth probe for the CPU roofline: how fast the compute threads can stream
//! a buffer much larger than the caches.

use rayon::prelude::*;
use std::time::Instant;

/// Bytes read per pass (larger than any last-level cache here).
const PROBE_BYTES: usize = 512 << 20;

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
    let words = PROBE_BYTES / 8;
    pool.install(|| {
        // Distinct values so nothing is served from a shared zero page.
        let buf: Vec<u64> = (0..words as u64)
            .into_par_iter()
            .map(|i| i.wrapping_mul(0x9e37_79b9))
            .collect();
        let mut best = 0f64;
        let mut sink = 0u64;
        for _ in 0..4 {
            let start = Instant::now();
            let s: u64 = buf
                .par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                .reduce(|| 0, u64::wrapping_add);
            let secs = start.elapsed().as_secs_f64();
            sink = sink.wrapping_add(s);
            best = best.max(PROBE_BYTES as f64 / secs);
        }
        std::hint::black_box(sink);
        best
    })
}
