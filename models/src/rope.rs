//! Rotary position embeddings: frequencies, scaling variants, partial rotary.

use crate::config::Keys;
use crate::error::{ModelError, Result};

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain frequencies.
    None,
    /// Every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3's scheme: long wavelengths divided by `factor`, short ones kept, a smooth blend
    /// between.
    Llama3 {
        /// Divisor of the long wavelengths.
        factor: f32,
        /// Wavelengths longer than `original / low_freq_factor` are scaled.
        low_freq_factor: f32,
        /// Wavelengths shorter than `original / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// The context length the model was trained with.
        original_max_position_embeddings: f32,
    },
    /// Each frequency divided by its own factor (`rotary_dim / 2` of them): how GGUF files
    /// carry any of the schemes above (the `rope_freqs.weight` tensor).
    Factors(Vec<f32>),
}

/// Rotary embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// The frequency base (`rope_theta`).
    pub theta: f32,
    /// Features of each head that rotate (the rest pass through).
    pub rotary_dim: usize,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl Rope {
    /// The rotary embedding of a config (of its global layers, when it has per-layer-type
    /// parameters: Gemma 3's `rope_parameters.full_attention`).
    pub(crate) fn from_config(k: &Keys<'_>, head_dim: usize) -> Result<Rope> {
        Self::parse(k, head_dim, "full_attention", "rope_theta")
    }

    /// The rotary embedding of the sliding-window layers of a Gemma 3 config:
    /// `rope_parameters.sliding_attention`, or `rope_local_base_freq` (default 10000) without
    /// scaling.
    pub(crate) fn local_from_config(k: &Keys<'_>, head_dim: usize) -> Result<Rope> {
        let nested = k.object("rope_parameters")?;
        if let Some(rp) = &nested {
            if rp.object("sliding_attention")?.is_some() {
                return Self::parse(k, head_dim, "sliding_attention", "rope_local_base_freq");
            }
        }
        let theta = match nested.as_ref().map(|rp| rp.opt_f32("rope_local_base_freq")) {
            Some(Ok(Some(t))) => t,
            Some(Err(e)) => return Err(e),
            _ => k.opt_f32("rope_local_base_freq")?.unwrap_or(10000.0),
        };
        if theta.is_nan() || theta <= 1.0 {
            return Err(ModelError::config(
                k.file,
                "rope_local_base_freq",
                format!("{theta} must be > 1"),
            ));
        }
        Ok(Rope {
            theta,
            rotary_dim: head_dim,
            scaling: RopeScaling::None,
        })
    }

    fn parse(k: &Keys<'_>, head_dim: usize, layer_type: &str, classic_theta: &str) -> Result<Rope> {
        let nested = k.object("rope_parameters")?;
        let by_type = match &nested {
            Some(rp) => rp.object(layer_type)?,
            None => None,
        };
        let (theta, partial, scaling) = match by_type.or(nested) {
            Some(rp) => (
                rp.opt_f32("rope_theta")?.unwrap_or(10000.0),
                match rp.opt_f32("partial_rotary_factor")? {
                    Some(p) => Some(p),
                    None => k.opt_f32("partial_rotary_factor")?,
                },
                RopeScaling::parse(&rp, "rope_parameters")?,
            ),
            None => (
                k.opt_f32(classic_theta)?.unwrap_or(10000.0),
                k.opt_f32("partial_rotary_factor")?,
                match k.object("rope_scaling")? {
                    Some(rs) => RopeScaling::parse(&rs, "rope_scaling")?,
                    None => RopeScaling::None,
                },
            ),
        };
        if theta.is_nan() || theta <= 1.0 {
            return Err(ModelError::config(
                k.file,
                "rope_theta",
                format!("{theta} must be > 1"),
            ));
        }
        let partial = partial.unwrap_or(1.0);
        let rotary_dim = (head_dim as f32 * partial) as usize;
        if partial.is_nan()
            || partial <= 0.0
            || partial > 1.0
            || rotary_dim == 0
            || !rotary_dim.is_multiple_of(2)
        {
            return Err(ModelError::config(
                k.file,
                "partial_rotary_factor",
                format!(
                    "{partial} of head_dim {head_dim} must give an even number of rotary features"
                ),
            ));
        }
        if let RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } = scaling {
            if factor.is_nan() || factor <= 0.0 {
                return Err(ModelError::config(
                    k.file,
                    "rope_scaling.factor",
                    "must be positive",
                ));
            }
        }
        Ok(Rope {
            theta,
            rotary_dim,
            scaling,
        })
    }

    /// Per feature pair, the divisor that turns the plain frequency into the scaled one (all 1
    /// without scaling).
    pub fn factors(&self) -> Vec<f32> {
        let plain = Rope {
            scaling: RopeScaling::None,
            ..self.clone()
        };
        plain
            .inv_freq()
            .iter()
            .zip(self.inv_freq())
            .map(|(p, s)| p / s)
            .collect()
    }

    /// The rotation frequency of each feature pair (`rotary_dim / 2` values), in f32 as the
    /// reference implementation computes them.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.rotary_dim as f32;
        let base: Vec<f32> = (0..self.rotary_dim / 2)
            .map(|i| 1.0 / self.theta.powf((2 * i) as f32 / dim))
            .collect();
        match &self.scaling {
            RopeScaling::None => base,
            RopeScaling::Factors(f) => base.iter().zip(f).map(|(b, f)| b / f).collect(),
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            &RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_short_scales_long_and_blends_between() {
        let plain = Rope {
            theta: 10000.0,
            rotary_dim: 16,
            scaling: RopeScaling::None,
        };
        let scaled = Rope {
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 32.0,
            },
            ..plain.clone()
        };
        let (p, s) = (plain.inv_freq(), scaled.inv_freq());
        assert_eq!(p[0], 1.0);
        assert_eq!(s[0], p[0]); // wavelength 2π < 8: kept
        assert!((s[7] - p[7] / 8.0).abs() < 1e-12); // very long wavelength: divided by 8
        let blended = s
            .iter()
            .zip(&p)
            .filter(|(a, b)| *a != *b && (**a - **b / 8.0).abs() > 1e-9)
            .count();
        assert!(blended > 0, "some frequencies fall in the smooth band");
    }
}
