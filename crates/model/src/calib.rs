//! What calibration-based quantization (GPTQ, AWQ, importance matrices) needs from a model: the input
//! of every projection as the model runs, and one block at a time, so that a quantizer can replace a
//! block's projections and feed the quantized block's output to the next one.

use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::transformer::Model;

/// A projection of a transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    /// In the order a block runs them.
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// The weight's canonical (GGUF) tensor name in block `block`.
    pub fn tensor_name(self, block: usize) -> String {
        let short = match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        };
        format!("blk.{block}.{short}.weight")
    }

    /// Where the projection reads its input.
    pub fn site(self) -> Site {
        match self {
            Proj::Q | Proj::K | Proj::V => Site::AttnIn,
            Proj::O => Site::AttnOut,
            Proj::Gate | Proj::Up => Site::MlpIn,
            Proj::Down => Site::MlpOut,
        }
    }
}

/// A point where projections read their input; the projections of one site multiply the same activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// The attention norm's output: input of q, k and v.
    AttnIn,
    /// The attention heads' output: input of o.
    AttnOut,
    /// The MLP norm's output: input of gate and up.
    MlpIn,
    /// The activated gate times up: input of down.
    MlpOut,
    /// The final norm's output: input of the output projection (observed with block = number of blocks).
    Head,
}

impl Site {
    /// The sites of a block, in the order a block reaches them.
    pub const BLOCK: [Site; 4] = [Site::AttnIn, Site::AttnOut, Site::MlpIn, Site::MlpOut];

    /// The block projections that read this site.
    pub fn projections(self) -> &'static [Proj] {
        match self {
            Site::AttnIn => &[Proj::Q, Proj::K, Proj::V],
            Site::AttnOut => &[Proj::O],
            Site::MlpIn => &[Proj::Gate, Proj::Up],
            Site::MlpOut => &[Proj::Down],
            Site::Head => &[],
        }
    }
}

/// Sees the input of projections as the model runs: `x` is `[n, width]`, row per token.
pub trait Observer {
    fn observe(&mut self, block: usize, site: Site, x: &[f32], n: usize);
}

/// Observes nothing: the ordinary forward pass.
impl Observer for () {
    fn observe(&mut self, _: usize, _: Site, _: &[f32], _: usize) {}
}

impl Model {
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Runs block `block` alone on `x` (`[n, hidden]`, one sequence from position 0), in place, showing
    /// `observer` its projections' inputs. `cache` is scratch for this block's keys and values: it is
    /// written at positions `0..n` of this block's layer and not advanced.
    pub fn block_forward(
        &self,
        block: usize,
        x: &mut [f32],
        n: usize,
        cache: &mut KvCache,
        observer: &mut dyn Observer,
    ) -> Result<(), ModelError> {
        if block >= self.blocks.len() {
            return Err(ModelError::Unsupported(format!("block {block} of a {}-block model", self.blocks.len())));
        }
        if x.len() != n * self.config.hidden_size {
            return Err(ModelError::Shape {
                tensor: format!("block {block} input"),
                expected: vec![n, self.config.hidden_size],
                found: vec![x.len()],
            });
        }
        if n > cache.capacity() {
            return Err(ModelError::ContextFull { needed: n, capacity: cache.capacity() });
        }
        self.run_block(block, x, n, 0, cache, observer);
        Ok(())
    }

    /// The weight tensor of the output projection: the token embedding when the model ties them.
    pub fn head_tensor_name(&self) -> &'static str {
        if self.config.tie_embeddings {
            "token_embd.weight"
        } else {
            "output.weight"
        }
    }

    pub fn projection(&self, block: usize, p: Proj) -> &dyn Linear {
        self.blocks[block].projection(p)
    }

    /// Replaces a projection (with a quantized or re-scaled one); its shape must be the old one's.
    pub fn set_projection(&mut self, block: usize, p: Proj, linear: Box<dyn Linear>) -> Result<(), ModelError> {
        let slot = self.blocks[block].projection_mut(p);
        let (rows, cols) = (slot.out_features(), slot.in_features());
        if (linear.out_features(), linear.in_features()) != (rows, cols) {
            return Err(ModelError::Shape {
                tensor: p.tensor_name(block),
                expected: vec![rows, cols],
                found: vec![linear.out_features(), linear.in_features()],
            });
        }
        *slot = linear;
        Ok(())
    }
}
