//! Rotary position embeddings, with YaRN's context extension where the config has it (GPT-OSS).

use lowbit_formats::config::{ModelConfig, RopeStyle};

/// Rotation frequencies for one RoPE base, applied to every head of a q or k row.
pub struct Rope {
    /// `base^(-2i/rope_dim)` for i < rope_dim/2.
    inv_freq: Vec<f64>,
    /// Multiplies cos and sin: YaRN's attention factor (1 without YaRN).
    scale: f64,
    head_dim: usize,
    style: RopeStyle,
}

impl Rope {
    pub fn new(config: &ModelConfig, base: f32) -> Rope {
        let dim = config.rope_dim;
        let base = base as f64;
        let mut inv_freq: Vec<f64> = (0..dim / 2).map(|i| base.powf(-2.0 * i as f64 / dim as f64)).collect();
        let mut scale = 1.0;
        if let Some(y) = &config.yarn {
            // YaRN (transformers' `_compute_yarn_parameters` with truncate = false): frequency pairs below
            // `low` keep their frequency, those above `high` are interpolated (divided by the factor), a
            // linear ramp in between; cos and sin grow by 0.1·ln(factor) + 1.
            let factor = f64::from(y.factor);
            let correction = |beta: f32| {
                dim as f64 * (y.original_context as f64 / (f64::from(beta) * 2.0 * std::f64::consts::PI)).ln()
                    / (2.0 * base.ln())
            };
            let low = correction(y.beta_fast).max(0.0);
            let mut high = correction(y.beta_slow).min(dim as f64 - 1.0);
            if high == low {
                high += 0.001; // transformers' guard against a zero-width ramp
            }
            for (i, f) in inv_freq.iter_mut().enumerate() {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                *f = *f / factor * ramp + *f * (1.0 - ramp);
            }
            scale = 0.1 * factor.ln() + 1.0;
        }
        Rope { inv_freq, scale, head_dim: config.head_dim, style: config.rope_style }
    }

    /// Rotates every head of `row` (a concatenation of heads) for position `pos`.
    pub fn apply(&self, row: &mut [f32], pos: usize) {
        let half = self.inv_freq.len();
        // Angles in f64: at positions in the tens of thousands an f32 product loses the
        // fractional turns that decide the rotation.
        let (sin, cos): (Vec<f32>, Vec<f32>) = self
            .inv_freq
            .iter()
            .map(|f| {
                let (s, c) = (pos as f64 * f).sin_cos();
                ((s * self.scale) as f32, (c * self.scale) as f32)
            })
            .unzip();
        for head in row.chunks_exact_mut(self.head_dim) {
            for i in 0..half {
                let (a, b) = match self.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}
