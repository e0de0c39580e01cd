//! Shapes with fixed and symbolic dimensions, and the bindings that make them concrete.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One dimension of a shape: a fixed size, or a named symbol with a declared maximum.
///
/// Symbolic dimensions let one graph serve every sequence length on a dynamic-shape device; a
/// static-shape device binds them to bucket sizes before compiling (see [`crate::Graph::bind`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dim {
    /// A size known when the graph is built.
    Fixed(usize),
    /// A size known only when the graph runs, at most `max`.
    Sym {
        /// The symbol's name; equal names denote equal sizes.
        name: String,
        /// The largest size the symbol may take.
        max: usize,
    },
}

impl Dim {
    /// A symbolic dimension.
    pub fn sym(name: impl Into<String>, max: usize) -> Self {
        Dim::Sym {
            name: name.into(),
            max,
        }
    }

    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym { .. } => None,
        }
    }

    /// The largest size this dimension can take.
    pub fn max(&self) -> usize {
        match self {
            Dim::Fixed(n) => *n,
            Dim::Sym { max, .. } => *max,
        }
    }

    /// The concrete size under `bindings`.
    pub fn resolve(&self, bindings: &SymbolBindings) -> Result<usize> {
        match self {
            Dim::Fixed(n) => Ok(*n),
            Dim::Sym { name, max } => {
                let v = bindings
                    .get(name)
                    .ok_or_else(|| Error::UnboundSymbol { name: name.clone() })?;
                if v > *max {
                    return Err(Error::SymbolOutOfRange {
                        name: name.clone(),
                        value: v,
                        max: *max,
                    });
                }
                Ok(v)
            }
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym { name, max } => write!(f, "{name}<={max}"),
        }
    }
}

/// A shape: a list of [`Dim`]s (row-major, last dimension contiguous).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape of fixed dimensions.
    pub fn fixed(dims: &[usize]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The dimension at `axis`.
    pub fn dim(&self, axis: usize) -> &Dim {
        &self.0[axis]
    }

    /// The last dimension, if the shape has any.
    pub fn last(&self) -> Option<&Dim> {
        self.0.last()
    }

    /// True when no dimension is symbolic.
    pub fn is_fixed(&self) -> bool {
        self.0.iter().all(|d| d.fixed().is_some())
    }

    /// The fixed sizes, if every dimension is fixed.
    pub fn fixed_dims(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::fixed).collect()
    }

    /// The concrete sizes under `bindings`.
    pub fn resolve(&self, bindings: &SymbolBindings) -> Result<Vec<usize>> {
        self.0.iter().map(|d| d.resolve(bindings)).collect()
    }

    /// Element count at the largest size of every symbol.
    pub fn max_numel(&self) -> usize {
        self.0.iter().map(Dim::max).product()
    }

    /// The symbols this shape mentions, with their maxima.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, usize)> {
        self.0.iter().filter_map(|d| match d {
            Dim::Sym { name, max } => Some((name.as_str(), *max)),
            Dim::Fixed(_) => None,
        })
    }

    /// Checks that concrete `dims` are an instance of this shape, recording symbol values in
    /// `bindings` (a symbol already bound must agree). `what` names the tensor in errors.
    pub fn bind_from(
        &self,
        dims: &[usize],
        bindings: &mut SymbolBindings,
        what: &str,
    ) -> Result<()> {
        let mismatch = || Error::ShapeMismatch {
            what: what.to_string(),
            expected: self.to_string(),
            got: format!("{dims:?}"),
        };
        if dims.len() != self.rank() {
            return Err(mismatch());
        }
        for (d, &n) in self.0.iter().zip(dims) {
            match d {
                Dim::Fixed(f) if *f != n => return Err(mismatch()),
                Dim::Fixed(_) => {}
                Dim::Sym { name, max } => {
                    if n > *max {
                        return Err(Error::SymbolOutOfRange {
                            name: name.clone(),
                            value: n,
                            max: *max,
                        });
                    }
                    match bindings.get(name) {
                        Some(prev) if prev != n => {
                            return Err(Error::ShapeMismatch {
                                what: what.to_string(),
                                expected: format!("{self} with {name}={prev}"),
                                got: format!("{dims:?}"),
                            })
                        }
                        Some(_) => {}
                        None => bindings.set(name, n),
                    }
                }
            }
        }
        Ok(())
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Shape::fixed(dims)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Self {
        Shape::fixed(&dims)
    }
}

impl From<Vec<Dim>> for Shape {
    fn from(dims: Vec<Dim>) -> Self {
        Shape(dims)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Values of symbolic dimensions for one execution (or one specialization).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct SymbolBindings(BTreeMap<String, usize>);

impl SymbolBindings {
    /// No bindings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds `name` to `value` (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: usize) {
        self.0.insert(name.to_string(), value);
    }

    /// Builder form of [`SymbolBindings::set`].
    pub fn with(mut self, name: &str, value: usize) -> Self {
        self.set(name, value);
        self
    }

    /// The value bound to `name`.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.0.get(name).copied()
    }

    /// All bindings, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// True when nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_and_resolve() {
        let s = Shape(vec![Dim::Fixed(1), Dim::sym("t", 16), Dim::Fixed(8)]);
        assert_eq!(s.to_string(), "[1, t<=16, 8]");
        let mut b = SymbolBindings::new();
        s.bind_from(&[1, 5, 8], &mut b, "x").unwrap();
        assert_eq!(b.get("t"), Some(5));
        assert_eq!(s.resolve(&b).unwrap(), vec![1, 5, 8]);
        // A second tensor must agree with the first binding.
        let err = s
            .bind_from(&[1, 6, 8], &mut b, "y")
            .unwrap_err()
            .to_string();
        assert!(err.contains("y") && err.contains("t=5"), "{err}");
        // Over the maximum.
        let err = s
            .bind_from(&[1, 17, 8], &mut SymbolBindings::new(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("17") && err.contains("16"), "{err}");
        // Fixed mismatch and rank mismatch.
        assert!(s
            .bind_from(&[2, 5, 8], &mut SymbolBindings::new(), "x")
            .is_err());
        assert!(s
            .bind_from(&[1, 5], &mut SymbolBindings::new(), "x")
            .is_err());
        assert!(s.resolve(&SymbolBindings::new()).is_err());
    }
}
