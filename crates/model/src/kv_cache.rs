//! Keys and values of past positions, one preallocated buffer per layer, written in place.

use lowbit_formats::config::ModelConfig;

use crate::error::ModelError;

pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
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
        Ok(KvCache { keys: buffers(), values: buffers(), kv_dim, capacity, len: 0 })
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
        let range = pos * self.kv_dim..pos * self.kv_dim + keys.len();
        self.keys[layer][range.clone()].copy_from_slice(keys);
        self.values[layer][range].copy_from_slice(values);
    }

    /// Keys and values of layer `layer` for positions `0..upto`.
    pub(crate) fn layer(&self, layer: usize, upto: usize) -> (&[f32], &[f32]) {
        let end = upto * self.kv_dim;
        (&self.keys[layer][..end], &self.values[layer][..end])
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
