//! CPU kernels the profile showed candle lacks: where candle's general routines are slow for the
//! shapes of inference, these take over (each falls back to candle outside its preconditions).

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod gemm;
pub(crate) mod gemv;
pub mod kernels;
pub(crate) mod math;
pub(crate) mod out;
pub mod packed;
pub(crate) mod quant;
pub(crate) mod rowwise;
pub(crate) mod slot_attention;

/// Threads of candle's CPU worker pool, the calling thread included.
pub(crate) fn worker_threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Runs `f(i, part)` for every part `i` of `out.chunks_mut(chunk)` on candle's CPU worker
/// threads (each takes parts until none is left) and returns when all are done.
pub(crate) fn par_chunks_mut(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let parts = std::sync::Mutex::new(out.chunks_mut(chunk.max(1)).enumerate().collect::<Vec<_>>());
    candle_core::utils::barrier_pool().execute(|_| loop {
        let next = parts.lock().map(|mut p| p.pop()).unwrap_or(None);
        let Some((i, part)) = next else { break };
        f(i, part);
    });
}
