//! Activations quantized for integer dot products with block-quantized weights: each 32-value
//! block as 32 signed bytes and an f32 scale (llama.cpp quantizes activations the same way), with
//! the sums the weight formats' offsets need.

/// One activation row, quantized.
pub(crate) struct QActs {
    /// `K` values, `round(x / d)` of their block.
    pub qs: Vec<i8>,
    /// Per 32-value block: the scale `max |x| / 127`.
    pub d: Vec<f32>,
    /// Per 32-value block: `d · Σ qs` (what a constant weight offset contributes).
    pub dsum: Vec<f32>,
    /// Per 16 values: `Σ qs` (for formats whose offsets change every 16 values).
    pub sum16: Vec<i32>,
}

/// Quantizes `x` (a multiple of 32 long).
pub(crate) fn quantize(x: &[f32]) -> QActs {
    debug_assert!(x.len().is_multiple_of(32));
    let blocks = x.len() / 32;
    let mut qs = vec![0i8; x.len()];
    let mut d = vec![0f32; blocks];
    let mut dsum = vec![0f32; blocks];
    let mut sum16 = vec![0i32; blocks * 2];
    for (b, (xb, qb)) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (v * inv).round() as i8;
        }
        let (lo, hi) = qb.split_at(16);
        let s0: i32 = lo.iter().map(|&q| q as i32).sum();
        let s1: i32 = hi.iter().map(|&q| q as i32).sum();
        d[b] = scale;
        dsum[b] = scale * (s0 + s1) as f32;
        sum16[2 * b] = s0;
        sum16[2 * b + 1] = s1;
    }
    QActs { qs, d, dsum, sum16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
            .collect();
        let a = quantize(&x);
        for (b, xb) in x.chunks(32).enumerate() {
            for (i, &v) in xb.iter().enumerate() {
                let back = a.qs[b * 32 + i] as f32 * a.d[b];
                assert!((back - v).abs() <= a.d[b] * 0.5 + 1e-6, "{v} vs {back}");
            }
            let s: i32 = a.qs[b * 32..b * 32 + 32].iter().map(|&q| q as i32).sum();
            assert_eq!(a.sum16[2 * b] + a.sum16[2 * b + 1], s);
            assert!((a.dsum[b] - a.d[b] * s as f32).abs() < 1e-4);
        }
        let zeros = quantize(&[0.0; 32]);
        assert_eq!(zeros.d[0], 0.0);
        assert!(zeros.qs.iter().all(|&q| q == 0));
    }
}
