//! Elementary functions written so the compiler can vectorize them.

/// `e^x` to about 2e-7 relative error for `x <= 88`, written so the compiler vectorizes it:
/// `x = n·ln2 + r` with `n` rounded by the 1.5·2²³ trick, `e^r` by its degree-6 Taylor
/// polynomial (`|r| <= ln2/2`), `2^n` assembled in the exponent bits.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `n` as an integer straight from the bits of `shifted` (`1.5·2²³ + n`: `n` sits in the low
    // mantissa bits), integer arithmetic the compiler vectorizes (`n as i32` is a saturating
    // conversion it does one lane at a time).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * scale
}

/// `Σ f(v)` over `xs` in eight interleaved running sums (then the tail): a loop the compiler
/// vectorizes, where one running sum would fix the order of every addition.
#[inline(always)]
pub(crate) fn sum_in_lanes(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The maximum of `xs` in eight running lanes (a loop the compiler vectorizes; one running
/// maximum would be a chain of dependent comparisons).
#[inline(always)]
pub(crate) fn max_in_lanes(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    lanes.iter().copied().fold(max, f32::max)
}

/// Softmax of `row` in place: the maximum and the sum in eight running lanes, the exponentials
/// in a pass of their own, so every loop vectorizes (one running sum kept each exponential
/// scalar: 2.2 ns per value on an encoder's attention scores).
#[inline(always)]
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = max_in_lanes(row);
    row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
    let inv = 1.0 / sum_in_lanes(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        // The exponent assembled from the bits is the rounded `n` itself, over the whole
        // range the clamp leaves (a wrong exponent is off by a factor of two or more).
        for n in -125..=126 {
            let x = n as f32 * std::f32::consts::LN_2;
            let (got, want) = (fast_exp(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 5e-7, "2^{n}: {got:e}");
        }
        assert_eq!(fast_exp(-1e30), fast_exp(-87.0));
    }
}
