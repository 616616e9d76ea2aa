//! Choosing the next token from the logits: greedy or sampled.
//!
//! The order of operations follows llama.cpp's common sampler chain: repetition penalty
//! on the raw logits, then (if sampling) top-k, temperature, top-p and min-p, and a draw
//! from the remaining distribution. A temperature of 0 means greedy decoding. Sampling
//! uses a seeded ChaCha generator, so the same seed, prompt and model give the same
//! text on every run and platform.
//!
//! ```
//! use kura::llm::{Sampler, SamplingParams};
//! let mut s = Sampler::new(SamplingParams::greedy());
//! assert_eq!(s.sample(&[0.1, 2.0, -1.0], &[]), 1);
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Sampling settings. `Default` is llama.cpp-like: temperature 0.8, top-k 40, top-p
/// 0.95, min-p 0.05, repetition penalty 1.1 over the last 64 tokens, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; `0` (or below) means greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`0`: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to `top_p` (`1`: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (`0`: off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this (`1`: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token, no penalty.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: 0,
        }
    }

    /// Whether these settings decode greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// A sampler: settings plus the random generator state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler seeded with `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            scratch: Vec::new(),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token. `history` is the sequence so far (prompt and generated
    /// tokens), used by the repetition penalty. Non-finite logits are never chosen
    /// unless all are.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let penalize = p.repeat_penalty != 1.0 && p.repeat_last_n > 0;
        let mut logits_owned;
        let logits = if penalize {
            logits_owned = logits.to_vec();
            let from = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = history[from..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits_owned.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
            &logits_owned[..]
        } else {
            logits
        };
        if p.is_greedy() {
            return argmax(logits);
        }

        // Candidates sorted by logit, most likely first.
        let c = &mut self.scratch;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l)),
        );
        if c.is_empty() {
            return argmax(logits);
        }
        c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && c.len() > p.top_k {
            c.truncate(p.top_k);
        }
        // Temperature softmax.
        let max = c[0].1;
        let mut sum = 0f32;
        for (_, l) in c.iter_mut() {
            *l = ((*l - max) / p.temperature).exp();
            sum += *l;
        }
        for (_, l) in c.iter_mut() {
            *l /= sum;
        }
        if p.top_p < 1.0 {
            let mut acc = 0f32;
            let mut keep = c.len();
            for (i, (_, pr)) in c.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let threshold = c[0].1 * p.min_p;
            let keep = c.iter().take_while(|(_, pr)| *pr >= threshold).count();
            c.truncate(keep.max(1));
        }
        let total: f32 = c.iter().map(|(_, pr)| pr).sum();
        let mut r = self.rng.random::<f32>() * total;
        for (id, pr) in c.iter() {
            if r < *pr {
                return *id;
            }
            r -= pr;
        }
        c.last().map_or(0, |(id, _)| *id)
    }
}

/// Index of the largest value (the first one on ties); non-finite values lose.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in xs.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_maximum_and_the_penalty_can_change_it() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[1.0, 3.0, 2.9], &[1]), 1);
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            repeat_last_n: 8,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&[1.0, 3.0, 2.9], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[]), argmax(&logits));
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..Default::default()
            });
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn min_p_removes_unlikely_tokens() {
        // Token 0 is e^10 times likelier than the others: min-p 0.01 leaves only it.
        let logits = [10.0, 0.0, 0.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.01,
            repeat_penalty: 1.0,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, &[]), 0);
        }
    }
}
