//! Rotary position embeddings.

use lowbit_formats::config::{ModelConfig, RopeStyle};

/// Rotation frequencies for one RoPE base, applied to every head of a q or k row.
pub struct Rope {
    /// `base^(-2i/rope_dim)` for i < rope_dim/2.
    inv_freq: Vec<f64>,
    head_dim: usize,
    style: RopeStyle,
}

impl Rope {
    pub fn new(config: &ModelConfig, base: f32) -> Rope {
        let dim = config.rope_dim;
        let inv_freq = (0..dim / 2).map(|i| (base as f64).powf(-2.0 * i as f64 / dim as f64)).collect();
        Rope { inv_freq, head_dim: config.head_dim, style: config.rope_style }
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
                (s as f32, c as f32)
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
