//! The requests of a run: random-token prompts of fixed or spread lengths (exact, with
//! `ignore_eos`), or prompts from a jsonl dataset; seeded, so a run can be repeated.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::Path;

/// One request to send.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Token ids, or text.
    pub prompt: Value,
    /// Prompt tokens when known (random-token prompts).
    pub prompt_tokens: Option<usize>,
    pub max_tokens: usize,
}

/// Random-token prompts: `count` requests of about `input_len` prompt and exactly `output_len`
/// generated tokens, each length drawn uniformly within `spread` (a fraction) of its target.
/// Ids are drawn from `[low, vocab)`, skipping `special`.
pub fn random(
    count: usize,
    input_len: usize,
    output_len: usize,
    spread: f64,
    vocab: usize,
    special: &dyn Fn(u32) -> bool,
    seed: u64,
) -> Result<Vec<RequestSpec>> {
    if !(0.0..1.0).contains(&spread) {
        bail!("--len-spread {spread}: must be in [0, 1)");
    }
    if input_len == 0 || output_len == 0 {
        bail!("--input-len and --output-len must be at least 1");
    }
    // Low ids are often bytes and control tokens; prompts of ordinary vocabulary are closer to
    // text.
    let low = (vocab / 16).min(1000) as u32;
    if vocab as u32 <= low + 1 {
        bail!("the model's vocabulary ({vocab}) is too small for random prompts");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw_len = |target: usize| -> usize {
        let d = (target as f64 * spread).floor() as usize;
        if d == 0 {
            target
        } else {
            rng.random_range(target - d..=target + d).max(1)
        }
    };
    let lengths: Vec<(usize, usize)> = (0..count)
        .map(|_| (draw_len(input_len), draw_len(output_len)))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    Ok(lengths
        .into_iter()
        .map(|(p, o)| {
            let ids: Vec<u32> = (0..p)
                .map(|_| loop {
                    let id = rng.random_range(low..vocab as u32);
                    if !special(id) {
                        break id;
                    }
                })
                .collect();
            RequestSpec {
                prompt: json!(ids),
                prompt_tokens: Some(p),
                max_tokens: o,
            }
        })
        .collect())
}

/// Prompts from a jsonl file: one object per line with `prompt` (text or token ids) and
/// optionally `max_tokens` (else `output_len`); cycled to `count` requests.
pub fn dataset(path: &Path, count: usize, output_len: usize) -> Result<Vec<RequestSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--dataset: cannot read {}", path.display()))?;
    let mut specs = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let where_ = || format!("--dataset {} line {}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).with_context(where_)?;
        let prompt = match v.get("prompt") {
            Some(p @ Value::String(_)) => p.clone(),
            Some(p @ Value::Array(ids)) if ids.iter().all(Value::is_u64) && !ids.is_empty() => {
                p.clone()
            }
            _ => bail!(
                "{}: `prompt` must be a string or a list of token ids",
                where_()
            ),
        };
        let max_tokens = match v.get("max_tokens") {
            None => output_len,
            Some(m) => match m.as_u64() {
                Some(m) if m > 0 => m as usize,
                _ => bail!("{}: `max_tokens` must be a positive integer", where_()),
            },
        };
        let prompt_tokens = prompt.as_array().map(Vec::len);
        specs.push(RequestSpec {
            prompt,
            prompt_tokens,
            max_tokens,
        });
    }
    if specs.is_empty() {
        bail!("--dataset {}: no prompts", path.display());
    }
    Ok((0..count).map(|i| specs[i % specs.len()].clone()).collect())
}

/// Seconds between arrivals of a Poisson process at `rate` requests per second.
pub fn poisson_gaps(count: usize, rate: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa77);
    (0..count)
        .map(|_| {
            let u: f64 = rng.random::<f64>();
            -(1.0 - u).ln() / rate
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_prompts_are_seeded_and_within_the_spread() {
        let none = |_| false;
        let a = random(20, 100, 50, 0.2, 5000, &none, 7).unwrap();
        let b = random(20, 100, 50, 0.2, 5000, &none, 7).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for s in &a {
            let p = s.prompt_tokens.unwrap();
            assert!((80..=120).contains(&p) && (40..=60).contains(&s.max_tokens));
            assert_eq!(s.prompt.as_array().unwrap().len(), p);
        }
        let fixed = random(3, 16, 8, 0.0, 5000, &|id| id % 2 == 0, 1).unwrap();
        for s in &fixed {
            assert_eq!((s.prompt_tokens, s.max_tokens), (Some(16), 8));
            assert!(s
                .prompt
                .as_array()
                .unwrap()
                .iter()
                .all(|id| id.as_u64().unwrap() % 2 == 1));
        }
    }

    #[test]
    fn poisson_gaps_have_the_rate_as_mean() {
        // The mean of 20000 exponential gaps at rate 4 is 0.25 s within a few standard errors
        // (0.25 / sqrt(20000) = 0.0018).
        let g = poisson_gaps(20000, 4.0, 3);
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        assert!((mean - 0.25).abs() < 0.01, "{mean}");
    }
}
