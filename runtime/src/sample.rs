//! Choosing the next token from a row of logits: greedy, or temperature / top-k / top-p
//! sampling driven by a small seeded PRNG (xoshiro256**, seeded through splitmix64).

use crate::error::Error;

/// xoshiro256** (Blackman & Vigna), state filled from the seed by splitmix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [split(), split(), split(), split()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Sampling settings. `temperature <= 0` means greedy; `top_k = 0` means no top-k limit;
/// `top_p = 1` means no nucleus limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// Picks tokens from logits rows. Deterministic for a given config (seed included).
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    cand: Vec<(f32, u32)>,
    probs: Vec<f64>,
}

/// The first index of the largest value, like `torch.argmax` (a NaN counts as the largest).
/// Returns 0 for an empty slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            return i as u32;
        }
        if v > best_v || i == 0 {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Descending by logit, ascending by id on ties (NaN treated as smallest): a total order, so
/// sampling does not depend on the sort algorithm.
fn by_logit_desc(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    key(b.0).total_cmp(&key(a.0)).then(a.1.cmp(&b.1))
}

impl Sampler {
    /// Argmax, first index on ties.
    pub fn greedy() -> Sampler {
        let config = SamplerConfig::default();
        Sampler { config, rng: Rng::new(config.seed), cand: Vec::new(), probs: Vec::new() }
    }

    pub fn new(config: SamplerConfig) -> Result<Sampler, Error> {
        if !config.temperature.is_finite() {
            return Err(Error::InvalidArgument(format!("sampler temperature {} is not finite", config.temperature)));
        }
        if !(config.top_p > 0.0 && config.top_p <= 1.0) {
            return Err(Error::InvalidArgument(format!("sampler top_p {} is not in (0, 1]", config.top_p)));
        }
        Ok(Sampler { config, rng: Rng::new(config.seed), cand: Vec::new(), probs: Vec::new() })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    pub fn is_greedy(&self) -> bool {
        self.config.temperature <= 0.0
    }

    /// Chooses a token id from one row of logits (`logits.len()` = vocab, non-empty).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() || logits.len() <= 1 {
            return argmax(logits);
        }
        let SamplerConfig { temperature, top_k, top_p, .. } = self.config;
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(logits.iter().enumerate().map(|(i, &v)| (v, i as u32)));
        if top_k > 0 && top_k < cand.len() {
            cand.select_nth_unstable_by(top_k - 1, by_logit_desc);
            cand.truncate(top_k);
        }
        if top_p < 1.0 || top_k > 0 {
            cand.sort_unstable_by(by_logit_desc);
        }
        // Softmax over the candidates at this temperature (in f64; NaN and -inf get 0).
        let max = cand.iter().map(|c| c.0).filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY || max.is_nan() {
            return argmax(logits);
        }
        let inv_t = 1.0 / temperature as f64;
        let probs = &mut self.probs;
        probs.clear();
        probs.extend(cand.iter().map(|&(v, _)| if v.is_nan() { 0.0 } else { ((v as f64 - max as f64) * inv_t).exp() }));
        let total: f64 = probs.iter().sum();
        let mut keep = probs.len();
        if top_p < 1.0 {
            // Smallest prefix (in descending order) whose mass reaches top_p; at least one.
            let target = top_p as f64 * total;
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= target {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept_total: f64 = probs[..keep].iter().sum();
        let mut u = self.rng.next_f64() * kept_total;
        for i in 0..keep {
            if u < probs[i] {
                return cand[i].1;
            }
            u -= probs[i];
        }
        // Rounding left u just above the last weight: take the last candidate with weight.
        (0..keep).rev().find(|&i| probs[i] > 0.0).map_or(cand[0].1, |i| cand[i].1)
    }
}
