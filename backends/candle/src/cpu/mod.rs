//! CPU kernels the profile showed candle lacks: where candle's general routines are slow for the
//! shapes of inference, these take over (each falls back to candle outside its preconditions).

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod gemm;
pub(crate) mod gemv;
pub(crate) mod math;
pub mod packed;
pub(crate) mod quant;
