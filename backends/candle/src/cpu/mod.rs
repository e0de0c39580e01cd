//! CPU kernels the profile showed candle lacks: where candle's general routines are slow for the
//! shapes of inference, these take over (each falls back to candle outside its preconditions).

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod batched_attention;
pub(crate) mod epilogue;
pub(crate) mod gemm;
pub(crate) mod gemv;
pub(crate) mod huge_pages;
pub mod kernels;
pub(crate) mod math;
pub(crate) mod out;
pub mod packed;
pub(crate) mod prefetch;
pub(crate) mod quant;
pub(crate) mod rowwise;
pub(crate) mod slot_attention;

/// Threads of candle's CPU worker pool, the calling thread included.
pub(crate) fn worker_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Runs `f(part)` for every part on candle's CPU worker threads (each takes parts until none is
/// left) and returns when all are done; inline when there is one part or one thread.
pub(crate) fn par_parts<T: Send>(parts: Vec<T>, f: impl Fn(T) + Sync) {
    if parts.len() <= 1 || worker_threads() == 1 {
        parts.into_iter().for_each(f);
        return;
    }
    let queue = std::sync::Mutex::new(parts);
    candle_core::utils::barrier_pool().execute(|_| loop {
        let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
        let Some(part) = next else { break };
        f(part);
    });
}

/// Runs `f(i, part)` for every part `i` of `out.chunks_mut(chunk)` on candle's CPU worker
/// threads ([`par_parts`]) and returns when all are done.
pub(crate) fn par_chunks_mut<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let parts: Vec<_> = out.chunks_mut(chunk.max(1)).enumerate().collect();
    par_parts(parts, |(i, part)| f(i, part));
}
