//! What a matrix product does to each finished value while its tile is still in L1: the bias
//! of a linear layer, a residual connection, an activation. Each of these as an op of its own
//! reads and writes the whole result again (an encoder's bias adds and GELUs were 14% of its
//! time); applied here they cost a pass over a tile in registers' reach.
//!
//! The arithmetic is the separate ops', in the graph's order (`(v + bias) + residual`, then the
//! activation), with the same functions, so a fused product gives the same bits as the ops it
//! replaces.

/// The activation applied last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x · Φ(x)` with the exact `erf` ([`super::activation`]'s approximation of it).
    GeluErf,
}

/// The work done on a product's result `C` `[m, n]` as each of its tiles is finished.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// Added to column `j`: `bias[j]`.
    pub bias: Option<&'a [f32]>,
    /// Added to element `(i, j)`: `residual[i * ld + j]`, as `(values, ld)`.
    pub residual: Option<(&'a [f32], usize)>,
    /// Applied to each value after the additions.
    pub activation: Option<Activation>,
}

impl<'a> Epilogue<'a> {
    /// True when there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && self.activation.is_none()
    }

    /// The same work for the columns from `j` on (a thread's share of the result).
    pub(crate) fn columns_from(self, j: usize) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.map(|b| &b[j.min(b.len())..]),
            residual: self.residual.map(|(r, ld)| (&r[j.min(r.len())..], ld)),
            activation: self.activation,
        }
    }

    /// Applies the work to `row`, which holds columns `j..j + row.len()` of result row `i`.
    #[inline(always)]
    pub(crate) fn apply(&self, i: usize, j: usize, row: &mut [f32]) {
        let cols = row.len();
        if let Some(b) = self.bias {
            row.iter_mut()
                .zip(&b[j..j + cols])
                .for_each(|(v, b)| *v += b);
        }
        if let Some((r, ld)) = self.residual {
            row.iter_mut()
                .zip(&r[i * ld + j..i * ld + j + cols])
                .for_each(|(v, r)| *v += r);
        }
        match self.activation {
            Some(Activation::GeluErf) => super::activation::gelu_erf_in_place(row),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part in the graph's order, and only the columns asked for.
    #[test]
    fn applies_bias_then_residual_then_activation() {
        let bias = [1.0f32, 2.0, 3.0, 4.0];
        let residual = [10.0f32, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0];
        let e = Epilogue {
            bias: Some(&bias),
            residual: Some((&residual, 4)),
            activation: None,
        }
        .columns_from(1);
        let mut row = [0.5f32, -0.5];
        e.apply(1, 1, &mut row);
        // Row 1, global columns 2 and 3: 0.5 + 3 + 70, -0.5 + 4 + 80.
        assert_eq!(row, [73.5, 83.5]);

        let gelu = Epilogue {
            bias: Some(&bias),
            residual: None,
            activation: Some(Activation::GeluErf),
        };
        let mut row = [-1.0f32, 0.0];
        gelu.apply(0, 0, &mut row);
        let mut want = [0.0f32, 2.0];
        super::super::activation::gelu_erf_in_place(&mut want);
        assert_eq!(row, want);
        // GELU(2) = 2 Φ(2) = 1.954500; the erf approximation is within 7.1e-7 (activation.rs),
        // times x/2 = 1, plus a few roundings of values near 2.
        assert!((row[1] - 1.9545).abs() < 1.5e-6, "{row:?}");
        assert!(Epilogue::default().is_empty() && !gelu.is_empty());
    }
}
