//! Activation functions over whole f32 buffers with the vectorizable `exp` of [`super::math`]
//! (candle's CPU `silu` calls the scalar library `exp` per element).

use super::kernels::Isa;
use super::math::fast_exp;
use candle_core::{DType, Result, Tensor};

#[inline(always)]
fn silu_slice(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v / (1.0 + fast_exp(-v));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_avx2(x: &[f32], y: &mut [f32]) {
    silu_slice(x, y)
}

/// `x · sigmoid(x)` for an f32 CPU tensor; `None` for other tensors.
pub(crate) fn silu(isa: Isa, x: &Tensor) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let n = x.elem_count();
    let mut y = vec![0f32; n];
    {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            return Ok(None);
        };
        let src = &storage.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + n];
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: an `Isa` exists only for variants this CPU runs; from AVX2 up they
            // include AVX2 and FMA.
            unsafe { silu_avx2(src, &mut y) };
            return Ok(Some(Tensor::from_vec(y, x.dims(), x.device())?));
        }
        let _ = isa;
        silu_slice(src, &mut y);
    }
    Ok(Some(Tensor::from_vec(y, x.dims(), x.device())?))
}
