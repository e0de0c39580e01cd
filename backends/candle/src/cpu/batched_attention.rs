//! Attention of a batch of sequences over their own keys (an encoder's, every query seeing
//! every unmasked key): `softmax(q·kᵀ + mask) · v` per (sequence, head), with the scores of one
//! head (`Tq × Tk`, 64 KiB for 128 tokens) kept in cache between the two products and the
//! softmax, q, k and v read through their strides where they lie, and the context written
//! token-major (`[B, Tq, H, Dv]`, the layout the next layer's product reads).
//!
//! The arithmetic is that of the separate ops on the CPU (the same products, the mask added to
//! each score, the same softmax), so the fused result has the same bits.

use super::gemm::{gemm_rows, Rhs};
use super::kernels::Isa;
use super::out::Out;

/// A 4-D f32 tensor `[B, H, T, D]` in place: element `(b, h, t, d)` at
/// `data[offset + b·strides[0] + h·strides[1] + t·strides[2] + d]` (unit stride along `D`).
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    /// The storage.
    pub data: &'a [f32],
    /// Where element `(0, 0, 0, 0)` is.
    pub offset: usize,
    /// Strides of `B`, `H` and `T`.
    pub strides: [usize; 3],
    /// `[B, H, T, D]`.
    pub dims: [usize; 4],
}

impl<'a> View<'a> {
    /// Row `t` of head `h` of sequence `b` (its `D` values).
    fn row(&self, b: usize, h: usize, t: usize) -> &'a [f32] {
        let at = self.offset + b * self.strides[0] + h * self.strides[1] + t * self.strides[2];
        &self.data[at..at + self.dims[3]]
    }

    /// The storage from row 0 of head `h` of sequence `b` on (rows `strides[2]` apart).
    fn head_start(&self, b: usize, h: usize) -> &'a [f32] {
        &self.data[self.offset + b * self.strides[0] + h * self.strides[1]..]
    }

    /// True when every element lies inside the storage.
    fn fits(&self) -> bool {
        if self.dims.contains(&0) {
            return true;
        }
        let last = self.offset
            + (0..3)
                .map(|a| (self.dims[a] - 1) * self.strides[a])
                .sum::<usize>()
            + self.dims[3];
        last <= self.data.len()
    }
}

/// The mask added to every query's scores: `Tk` values per sequence, or one row for all.
#[derive(Clone, Copy)]
pub(crate) struct Mask<'a> {
    /// `[B or 1, Tk]`.
    pub values: &'a [f32],
    /// One row per sequence (else one row for all).
    pub per_sequence: bool,
}

/// `out [B, Tq, H, Dv] = softmax(q·kᵀ + mask) · v` for `q [B, H, Tq, D]`, `k [B, H, Tk, D]`,
/// `v [B, H, Tk, Dv]`, the (sequence, head) pairs split over candle's CPU worker threads.
/// Returns `false` (leaving `out` untouched) when `isa` has no matrix kernel or the operands do
/// not agree.
pub(crate) fn attention(
    isa: Isa,
    q: View<'_>,
    k: View<'_>,
    v: View<'_>,
    mask: Option<Mask<'_>>,
    out: &mut [f32],
) -> bool {
    let [b, h, tq, d] = q.dims;
    let (tk, dv) = (k.dims[2], v.dims[3]);
    let agree = k.dims == [b, h, tk, d]
        && v.dims == [b, h, tk, dv]
        && q.fits()
        && k.fits()
        && v.fits()
        && out.len() == b * tq * h * dv
        && mask.is_none_or(|m| m.values.len() == if m.per_sequence { b * tk } else { tk });
    if !super::gemm::available(isa) || !agree {
        return false;
    }
    if out.is_empty() {
        return true;
    }
    let result = Out::of(out, h * dv);
    let pairs: Vec<(usize, usize)> = (0..b).flat_map(|s| (0..h).map(move |hh| (s, hh))).collect();
    super::par_parts(pairs, |(s, hh)| {
        let rows: Vec<&[f32]> = (0..tq).map(|t| q.row(s, hh, t)).collect();
        let mut scores = vec![0f32; tq * tk];
        let keys = Rhs::Transposed {
            w: k.head_start(s, hh),
            ld: k.strides[2],
        };
        gemm_rows(isa, &rows, d, keys, tk, &mut scores, tk);
        let m = mask.map(|m| {
            let at = if m.per_sequence { s * tk } else { 0 };
            &m.values[at..at + tk]
        });
        for row in scores.chunks_exact_mut(tk) {
            super::activation::masked_softmax_in_place(isa, row, m);
        }
        let probs: Vec<&[f32]> = scores.chunks_exact(tk).collect();
        let values = Rhs::Plain {
            b: v.head_start(s, hh),
            ld: v.strides[2],
        };
        let mut ctx = vec![0f32; tq * dv];
        gemm_rows(isa, &probs, tk, values, dv, &mut ctx, dv);
        for (t, row) in ctx.chunks_exact(dv).enumerate() {
            // SAFETY: `out` stays borrowed mutably until every part is done, and pair (s, hh)
            // alone writes columns `hh·dv..(hh+1)·dv` of rows `s·tq..(s+1)·tq`.
            unsafe { result.write(s * tq + t, hh * dv, row) };
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + seed) * 37 % 101) as f32 - 50.0) / 40.0)
            .collect()
    }

    /// Token-major q, k, v (`[B, T, H, D]` storage viewed head-major, as an encoder's head
    /// transposes give them), a mask hiding each sequence's padding, against a plain f64 loop.
    #[test]
    fn matches_a_plain_loop() {
        let (b, h, tq, tk, d, dv) = (3, 2, 5, 7, 4, 6);
        for isa in Isa::all_here()
            .into_iter()
            .filter(|i| super::super::gemm::available(*i))
        {
            let (qs, ks, vs) = (
                values(b * tq * h * d, 1),
                values(b * tk * h * d, 2),
                values(b * tk * h * dv, 3),
            );
            fn view(data: &[f32], (b, h, t, w): (usize, usize, usize, usize)) -> View<'_> {
                View {
                    data,
                    offset: 0,
                    strides: [t * h * w, w, h * w],
                    dims: [b, h, t, w],
                }
            }
            let lengths = [7usize, 3, 1];
            let mask: Vec<f32> = (0..b * tk)
                .map(|i| {
                    if i % tk < lengths[i / tk] {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let mut out = vec![f32::NAN; b * tq * h * dv];
            let m = Mask {
                values: &mask,
                per_sequence: true,
            };
            let (q, k, v) = (
                view(&qs, (b, h, tq, d)),
                view(&ks, (b, h, tk, d)),
                view(&vs, (b, h, tk, dv)),
            );
            assert!(attention(isa, q, k, v, Some(m), &mut out));
            for s in 0..b {
                for hh in 0..h {
                    for t in 0..tq {
                        let sc: Vec<f64> = (0..lengths[s])
                            .map(|j| {
                                (0..d)
                                    .map(|e| q.row(s, hh, t)[e] as f64 * k.row(s, hh, j)[e] as f64)
                                    .sum()
                            })
                            .collect();
                        let max = sc.iter().copied().fold(f64::MIN, f64::max);
                        let w: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                        let z: f64 = w.iter().sum();
                        for e in 0..dv {
                            let want: f64 = (0..lengths[s])
                                .map(|j| w[j] / z * v.row(s, hh, j)[e] as f64)
                                .sum();
                            let got = out[((s * tq + t) * h + hh) * dv + e] as f64;
                            // Inputs within ±1.25, sums of 4 products: f32 rounding of the
                            // scores (~1e-6 relative) and fast_exp's 2e-7 keep every weight
                            // within 1e-5 of the exact one; values of at most 1.25.
                            assert!(
                                (got - want).abs() < 2e-5,
                                "{isa}: ({s},{hh},{t},{e}) {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
