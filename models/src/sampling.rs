//! Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p and
//! min-p, after a repetition penalty; seeded so runs are reproducible.

use crate::error::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sampling settings. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; 0 picks the most likely token.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f32,
    /// Penalize tokens already in the context: positive logits divided, negative multiplied
    /// (1: off).
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated (OpenAI's
    /// `presence_penalty`, in [-2, 2]; 0: off).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated (OpenAI's
    /// `frequency_penalty`, in [-2, 2]; 0: off).
    pub frequency_penalty: f32,
    /// Seed of the random source.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks every value, naming the offending option.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, message: &str| {
            Err(ModelError::InvalidOption {
                option,
                message: message.into(),
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "--temperature",
                &format!("{} must be a finite number >= 0", self.temperature),
            );
        }
        if self.top_k == Some(0) {
            return bad("--top-k", "must be at least 1");
        }
        if self.top_p.is_nan() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return bad("--top-p", &format!("{} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("--min-p", &format!("{} must be in [0, 1]", self.min_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(
                "--repetition-penalty",
                &format!("{} must be a finite number > 0", self.repetition_penalty),
            );
        }
        for (option, v) in [
            ("--presence-penalty", self.presence_penalty),
            ("--frequency-penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(option, &format!("{v} must be in [-2, 2]"));
            }
        }
        Ok(())
    }

    /// Whether the logits are used as they are (no penalty changes them).
    pub fn unpenalized(&self) -> bool {
        self.repetition_penalty == 1.0
            && self.presence_penalty == 0.0
            && self.frequency_penalty == 0.0
    }
}

/// Picks tokens according to [`SamplingParams`].
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler; fails on invalid parameters.
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
        })
    }

    /// The next token given `logits` and the tokens so far (`context`, for the repetition
    /// penalty; presence and frequency penalties see no generated tokens).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> Result<u32> {
        self.sample_after(logits, context, &[])
    }

    /// [`Sampler::sample`] with the tokens generated so far (`generated`, the tail of
    /// `context`) for the presence and frequency penalties.
    pub fn sample_after(
        &mut self,
        logits: &[f32],
        context: &[u32],
        generated: &[u32],
    ) -> Result<u32> {
        if logits.is_empty() {
            return Err(ModelError::InvalidOption {
                option: "logits",
                message: "empty".into(),
            });
        }
        if let Some(i) = logits.iter().position(|l| l.is_nan()) {
            return Err(ModelError::Runtime(switchyard_runtime::Error::exec(
                "sampling",
                format!("the model produced NaN logits (first at token {i})"),
            )));
        }
        let mut l = logits.to_vec();
        if self.params.repetition_penalty != 1.0 {
            let mut seen = vec![false; l.len()];
            for &t in context {
                if let Some(s) = seen.get_mut(t as usize) {
                    if !*s {
                        *s = true;
                        let v = &mut l[t as usize];
                        *v = if *v > 0.0 {
                            *v / self.params.repetition_penalty
                        } else {
                            *v * self.params.repetition_penalty
                        };
                    }
                }
            }
        }
        if self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0 {
            let mut counts = std::collections::HashMap::<u32, f32>::new();
            for &t in generated {
                *counts.entry(t).or_default() += 1.0;
            }
            for (t, n) in counts {
                if let Some(v) = l.get_mut(t as usize) {
                    *v -= self.params.presence_penalty + self.params.frequency_penalty * n;
                }
            }
        }
        if self.params.temperature == 0.0 {
            return Ok(argmax(&l));
        }
        // Candidates sorted by logit, most likely first.
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        if let Some(k) = self.params.top_k {
            idx.truncate(k.max(1));
        }
        let t = self.params.temperature;
        let max = l[idx[0]] / t;
        let mut p: Vec<f64> = idx
            .iter()
            .map(|&i| ((l[i] / t - max) as f64).exp())
            .collect();
        let sum: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= sum);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = p.len();
            for (j, x) in p.iter().enumerate() {
                acc += x;
                if acc >= self.params.top_p as f64 {
                    keep = j + 1;
                    break;
                }
            }
            p.truncate(keep);
        }
        if self.params.min_p > 0.0 {
            let floor = p[0] * self.params.min_p as f64;
            let keep = p.iter().take_while(|&&x| x >= floor).count().max(1);
            p.truncate(keep);
        }
        let total: f64 = p.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (j, x) in p.iter().enumerate() {
            if r < *x {
                return Ok(idx[j] as u32);
            }
            r -= x;
        }
        Ok(idx[p.len() - 1] as u32)
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_penalty() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[]).unwrap(), 1);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[1]).unwrap(), 2);
        // Presence 0.05 + frequency 0.05 per repeat: token 1 generated twice loses 0.15 and
        // falls below token 2; once (0.1) it still leads by 0.1 - 0.1 = 0 (first on ties).
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.05,
            frequency_penalty: 0.05,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            s.sample_after(&[0.1, 3.0, 2.9], &[1, 1], &[1, 1]).unwrap(),
            2
        );
        assert_eq!(s.sample_after(&[0.1, 3.0, 2.8], &[1], &[1]).unwrap(), 1);
        // The prompt (context without generated tokens) is not penalized.
        assert_eq!(s.sample_after(&[0.1, 3.0, 2.9], &[1, 1], &[]).unwrap(), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_filters() {
        let logits = [1.0, 2.0, 3.0, 0.5, 2.5];
        let draw = |params: SamplingParams| {
            let mut s = Sampler::new(params).unwrap();
            (0..200)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let p = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        assert_eq!(draw(p.clone()), draw(p.clone()));
        assert_ne!(
            draw(p.clone()),
            draw(SamplingParams {
                seed: 8,
                ..p.clone()
            })
        );
        let top2 = draw(SamplingParams {
            top_k: Some(2),
            ..p.clone()
        });
        assert!(top2.iter().all(|&t| t == 2 || t == 4));
        let nucleus = draw(SamplingParams {
            top_p: 0.5,
            ..p.clone()
        });
        assert!(nucleus.iter().all(|&t| t == 2 || t == 4));
        let minp = draw(SamplingParams {
            min_p: 0.9,
            ..p.clone()
        });
        assert!(minp.iter().all(|&t| t == 2));
    }

    #[test]
    fn nonsense_values_are_rejected_by_name() {
        let e = |p: SamplingParams| Sampler::new(p).err().unwrap().to_string();
        assert!(e(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        })
        .contains("--temperature"));
        assert!(e(SamplingParams {
            top_p: 1.5,
            ..Default::default()
        })
        .contains("--top-p"));
        assert!(e(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .contains("--top-p"));
        assert!(e(SamplingParams {
            top_k: Some(0),
            ..Default::default()
        })
        .contains("--top-k"));
        assert!(e(SamplingParams {
            min_p: 2.0,
            ..Default::default()
        })
        .contains("--min-p"));
        assert!(e(SamplingParams {
            repetition_penalty: 0.0,
            ..Default::default()
        })
        .contains("--repetition-penalty"));
        assert!(e(SamplingParams {
            frequency_penalty: 2.5,
            ..Default::default()
        })
        .contains("--frequency-penalty"));
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert!(s
            .sample(&[0.0, f32::NAN], &[])
            .unwrap_err()
            .to_string()
            .contains("NaN"));
    }
}
