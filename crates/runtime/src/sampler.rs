//! Choosing the next token from logits: greedy, or llama.cpp's default chain
//! (repetition penalty → top-k → top-p → min-p → temperature → draw) with a seeded PRNG.

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 (or less) means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables: drop tokens whose probability is below `min_p` × the best one's.
    pub min_p: f32,
    /// 1.0 disables: logits of recently seen tokens are divided (positive) or multiplied
    /// (negative) by this, as in llama.cpp and Hugging Face.
    pub repetition_penalty: f32,
    /// How many of the latest tokens the penalties look at.
    pub penalty_last_n: usize,
    /// OpenAI's presence penalty (0 disables): subtracted from the logit of every token among the latest ones.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty (0 disables): subtracted once per occurrence among the latest tokens.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            penalty_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0x5EED,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.temperature.is_finite()
            && (0.0..=1.0).contains(&self.top_p)
            && (0.0..=1.0).contains(&self.min_p)
            && self.repetition_penalty.is_finite()
            && self.repetition_penalty > 0.0
            && (-2.0..=2.0).contains(&self.presence_penalty)
            && (-2.0..=2.0).contains(&self.frequency_penalty);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid sampling parameters: temperature {} (finite), top_p {} and min_p {} (0..=1), repetition penalty {} (> 0), presence penalty {} and frequency penalty {} (-2..=2)",
                self.temperature, self.top_p, self.min_p, self.repetition_penalty, self.presence_penalty, self.frequency_penalty
            ))
        }
    }
}

/// xoshiro256** seeded by splitmix64: small, fast, and the same stream on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    /// Picks a token given the logits of the next position and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        if p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            // llama.cpp's penalties sampler: all three over the same latest tokens.
            let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
            let mut counts = std::collections::HashMap::new();
            recent.iter().for_each(|&t| *counts.entry(t).or_insert(0u32) += 1);
            for (&t, &n) in &counts {
                if let Some(c) = cand.get_mut(t as usize) {
                    c.1 = if c.1 > 0.0 { c.1 / p.repetition_penalty } else { c.1 * p.repetition_penalty };
                    c.1 -= n as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&cand);
        }
        // Only a cut needs the vocabulary sorted (a few ms a token); without one the draw runs in id order.
        if p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0 {
            // Descending by logit, ties by id, so the draw is reproducible.
            let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if p.top_k > 0 && p.top_k < cand.len() {
                cand.select_nth_unstable_by(p.top_k - 1, by_logit);
                cand.truncate(p.top_k);
            }
            cand.sort_unstable_by(by_logit);
            let probs = softmax(&cand, 1.0);
            if p.top_p < 1.0 {
                let mut acc = 0.0;
                let keep = probs.iter().position(|&q| {
                    acc += q;
                    acc >= p.top_p as f64
                });
                cand.truncate(keep.map_or(cand.len(), |i| i + 1));
            }
            if p.min_p > 0.0 {
                let floor = probs[0] * p.min_p as f64;
                let keep = probs.iter().take(cand.len()).take_while(|&&q| q >= floor).count().max(1);
                cand.truncate(keep);
            }
        }
        let probs = softmax(&cand, p.temperature);
        let r = self.rng.next_f64();
        let mut acc = 0.0;
        for (c, q) in cand.iter().zip(&probs) {
            acc += q;
            if r < acc {
                return c.0;
            }
        }
        cand.last().map_or(0, |c| c.0)
    }
}

fn argmax(cand: &[(u32, f32)]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for &c in cand {
        if c.1 > best.1 {
            best = c;
        }
    }
    best.0
}

/// Probabilities of `cand` at temperature `t`, in f64.
fn softmax(cand: &[(u32, f32)], t: f32) -> Vec<f64> {
    let max = cand.iter().fold(f64::NEG_INFINITY, |m, c| m.max(c.1 as f64));
    let e: Vec<f64> = cand.iter().map(|c| ((c.1 as f64 - max) / t as f64).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9], &[]), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_greedy_choice() {
        let params = SamplingParams { repetition_penalty: 1.5, ..Default::default() };
        let mut s = Sampler::new(params);
        // 2.0 / 1.5 < 1.9: the repeated token loses.
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9], &[1]), 3);
    }

    #[test]
    fn presence_and_frequency_penalties_count_recent_tokens() {
        let logits = [0.0, 2.0, 1.5, 1.2];
        let params = SamplingParams { frequency_penalty: 0.3, presence_penalty: 0.1, ..Default::default() };
        assert_eq!(Sampler::new(params.clone()).sample(&logits, &[1, 1]), 2, "2.0 − 2·0.3 − 0.1 = 1.3 < 1.5");
        assert_eq!(Sampler::new(params.clone()).sample(&logits, &[1]), 1, "2.0 − 0.3 − 0.1 = 1.6 still wins");
        // Only the latest `penalty_last_n` tokens count.
        let params = SamplingParams { penalty_last_n: 1, ..params };
        assert_eq!(Sampler::new(params).sample(&logits, &[1, 1, 3]), 1);
        let bad = SamplingParams { presence_penalty: 2.5, ..Default::default() };
        assert!(bad.validate().is_err());
    }

    /// Without top-k, top-p or min-p the draw skips sorting; its frequencies still follow the softmax.
    #[test]
    fn an_uncut_draw_follows_the_softmax() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let mut s = Sampler::new(params);
        let mut counts = [0usize; 4];
        let draws = 40_000;
        (0..draws).for_each(|_| counts[s.sample(&logits, &[]) as usize] += 1);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let want = (logits[i] as f64).exp() / z;
            let got = c as f64 / draws as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} against {want}");
        }
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let params = SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() };
        let best = argmax(&logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect::<Vec<_>>());
        assert_eq!(Sampler::new(params).sample(&logits, &[]), best);

        let params = SamplingParams { temperature: 1.5, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params.clone() });
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        // Two tokens with p = 0.75 / 0.25 at temperature 1.
        let logits = [3f32.ln(), 0.0];
        let params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let mut s = Sampler::new(params);
        let n = 20_000;
        let zeros = (0..n).filter(|_| s.sample(&logits, &[]) == 0).count();
        let f = zeros as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.015, "frequency {f}");
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        // p ∝ [8, 4, 2, 1, 1]: min_p 0.3 keeps the first two; top_p 0.5 keeps only the first.
        let logits: Vec<f32> = [8f32, 4.0, 2.0, 1.0, 1.0].iter().map(|v| v.ln()).collect();
        let base = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
        let mut s = Sampler::new(SamplingParams { min_p: 0.3, ..base.clone() });
        let seen: std::collections::HashSet<u32> = (0..2000).map(|_| s.sample(&logits, &[])).collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
        let mut s = Sampler::new(SamplingParams { top_p: 0.5, ..base });
        assert!((0..500).all(|_| s.sample(&logits, &[]) == 0));
    }
}
