//! Keys and values of past positions, one preallocated buffer per layer, written in place.
//!
//! A layer's buffer is head-major, `[kv_head][position][head_dim]`: the keys (values) one attention head reads
//! are consecutive rows, so its scores are one GEMV and its output one pass over consecutive rows.

use lowbit_formats::config::ModelConfig;

use crate::error::ModelError;

pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub fn new(config: &ModelConfig, capacity: usize) -> Result<KvCache, ModelError> {
        if capacity == 0 || capacity > config.context_length {
            return Err(ModelError::BadContext { requested: capacity, max: config.context_length });
        }
        let kv_dim = config.kv_dim();
        let per_layer = capacity
            .checked_mul(kv_dim)
            .filter(|n| n.checked_mul(8 * config.n_layers).is_some())
            .ok_or(ModelError::BadContext { requested: capacity, max: config.context_length })?;
        let buffers = || (0..config.n_layers).map(|_| vec![0f32; per_layer]).collect();
        Ok(KvCache { keys: buffers(), values: buffers(), kv_dim, head_dim: config.head_dim, capacity, len: 0 })
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions from `len` on (reusing a shared prompt prefix, or starting over).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Stores keys and values `[n, kv_dim]` of layer `layer` at positions `pos..pos+n`.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, keys: &[f32], values: &[f32]) {
        let hd = self.head_dim;
        for (buf, rows) in [(&mut self.keys[layer], keys), (&mut self.values[layer], values)] {
            for (t, row) in rows.chunks_exact(self.kv_dim).enumerate() {
                for (h, head) in row.chunks_exact(hd).enumerate() {
                    buf[(h * self.capacity + pos + t) * hd..][..hd].copy_from_slice(head);
                }
            }
        }
    }

    /// Keys and values `[positions, head_dim]` of kv head `head` of layer `layer`, positions `from..upto`.
    pub(crate) fn head(&self, layer: usize, head: usize, from: usize, upto: usize) -> (&[f32], &[f32]) {
        let range = (head * self.capacity + from) * self.head_dim..(head * self.capacity + upto) * self.head_dim;
        (&self.keys[layer][range.clone()], &self.values[layer][range])
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
