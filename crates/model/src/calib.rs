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

    /// The canonical name of the bias added to the projection's output (where the model has one).
    pub fn bias_name(self, block: usize) -> String {
        self.tensor_name(block).replace(".weight", ".bias")
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

/// A matrix each expert of a mixture-of-experts block has, stored as one stack of all the block's experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpertMatrix {
    /// Gate and up rows interleaved, `[2·ff, hidden]`.
    GateUp,
    /// `[hidden, ff]`.
    Down,
}

impl ExpertMatrix {
    /// In the order an expert runs them.
    pub const ALL: [ExpertMatrix; 2] = [ExpertMatrix::GateUp, ExpertMatrix::Down];

    /// The canonical name of the stack in block `block`.
    pub fn tensor_name(self, block: usize) -> String {
        match self {
            ExpertMatrix::GateUp => format!("blk.{block}.ffn_gate_up_exps.weight"),
            ExpertMatrix::Down => format!("blk.{block}.ffn_down_exps.weight"),
        }
    }

    /// Where the matrix reads its input (as [`Observer::observe_expert`] reports it).
    pub fn site(self) -> Site {
        match self {
            ExpertMatrix::GateUp => Site::MlpIn,
            ExpertMatrix::Down => Site::MlpOut,
        }
    }
}

/// Multiplies each input column `c` of the row-major matrix `w` (rows of `s.len()`) by `s[c]`: how a scale
/// divided out of a projection's input is folded into its weight (AWQ).
pub fn scale_columns(w: &mut [f32], s: &[f32]) {
    w.chunks_exact_mut(s.len().max(1)).for_each(|row| row.iter_mut().zip(s).for_each(|(v, s)| *v *= s));
}

/// Sees the input of projections as the model runs: `x` is `[n, width]`, row per token.
pub trait Observer {
    fn observe(&mut self, block: usize, site: Site, x: &[f32], n: usize);

    /// The input of expert `expert` (of `experts`) of a mixture-of-experts block: the rows of the tokens routed to
    /// it, `[n, width]`, for its gate/up stack (`Site::MlpIn`, the MLP norm's output) or its down stack
    /// (`Site::MlpOut`, its activated hidden rows). Only calibration that treats experts one by one looks.
    fn observe_expert(&mut self, _block: usize, _site: Site, _expert: usize, _experts: usize, _x: &[f32], _n: usize) {}
}

/// Observes nothing: the ordinary forward pass.
impl Observer for () {
    fn observe(&mut self, _: usize, _: Site, _: &[f32], _: usize) {}
}

impl Model {
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn check_block(&self, block: usize) -> Result<(), ModelError> {
        match block < self.blocks.len() {
            true => Ok(()),
            false => Err(ModelError::Unsupported(format!("block {block} of a {}-block model", self.blocks.len()))),
        }
    }

    /// Block-by-block calibration of MLPs reaches only dense ones: a mixture of experts has a hidden row per
    /// chosen expert.
    fn check_dense(&self, block: usize) -> Result<(), ModelError> {
        self.check_block(block)?;
        match self.blocks[block].is_moe() {
            true => Err(ModelError::Unsupported(format!("block {block}'s MLP is a mixture of experts"))),
            false => Ok(()),
        }
    }

    /// Whether any block's MLP is a mixture of experts.
    pub fn has_experts(&self) -> bool {
        self.blocks.iter().any(|b| b.is_moe())
    }

    fn check_rows(&self, what: &str, x: &[f32], n: usize, width: usize) -> Result<(), ModelError> {
        match x.len() == n * width {
            true => Ok(()),
            false => Err(ModelError::Shape { tensor: what.into(), expected: vec![n, width], found: vec![x.len()] }),
        }
    }

    /// The input of `site` (`AttnIn` or `MlpIn`: a norm's output) of block `block` for residual rows `x`
    /// (`[n, hidden]`).
    pub fn site_input(&self, block: usize, site: Site, x: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        self.check_block(block)?;
        if !matches!(site, Site::AttnIn | Site::MlpIn) {
            return Err(ModelError::Unsupported(format!("{site:?} is not a norm's output")));
        }
        self.check_rows("residual rows", x, n, self.config.hidden_size)?;
        Ok(self.norm_input(block, site, x))
    }

    /// The attention heads of block `block` for its attention input `h` (`[n, hidden]`, one sequence from
    /// position 0): the output projection's input, `[n, q_dim]`. `cache` is scratch for the block's keys and
    /// values (positions `0..n` of its layer, not advanced).
    pub fn attention_heads_of(
        &self,
        block: usize,
        h: &[f32],
        n: usize,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_block(block)?;
        self.check_rows("attention input", h, n, self.config.hidden_size)?;
        if n > cache.capacity() {
            return Err(ModelError::ContextFull { needed: n, capacity: cache.capacity() });
        }
        Ok(self.attention_heads(block, h, &mut [crate::transformer::Span { cache, pos0: 0, n }]))
    }

    /// The attention branch's contribution to the residual (output projection, bias, post-norm) from its heads.
    pub fn attention_output_of(&self, block: usize, heads: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        self.check_block(block)?;
        self.check_rows("attention heads", heads, n, self.config.q_dim())?;
        Ok(self.attention_output(block, heads, n))
    }

    /// The MLP's hidden rows (activated gate times up, the down projection's input) for its input `h`.
    pub fn mlp_hidden_of(&self, block: usize, h: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        self.check_dense(block)?;
        self.check_rows("MLP input", h, n, self.config.hidden_size)?;
        Ok(self.mlp_hidden(block, h, n))
    }

    /// The MLP branch's contribution to the residual (down projection, post-norm) from its hidden rows.
    pub fn mlp_output_of(&self, block: usize, act: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        self.check_dense(block)?;
        self.check_rows("MLP hidden rows", act, n, self.config.intermediate_size)?;
        Ok(self.mlp_output(block, act, n))
    }

    /// The MLP branch's contribution to the residual for its input `h` (`Site::MlpIn`, `[n, hidden]`), dense or
    /// a mixture of experts, whose experts' inputs `observer` sees.
    pub fn ffn_output_of(
        &self,
        block: usize,
        h: &[f32],
        n: usize,
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_block(block)?;
        self.check_rows("MLP input", h, n, self.config.hidden_size)?;
        Ok(self.ffn_output(block, h, n, observer))
    }

    /// The number of experts of block `block`'s MLP: 0 for a dense one.
    pub fn n_experts(&self, block: usize) -> usize {
        self.blocks.get(block).map_or(0, |b| b.n_experts())
    }

    /// Replaces matrix `m` of expert `expert` of block `block` (with a quantized one); its shape must be the old
    /// one's. Returns the old one.
    pub fn set_expert(
        &mut self,
        block: usize,
        m: ExpertMatrix,
        expert: usize,
        linear: Box<dyn Linear>,
    ) -> Result<Box<dyn Linear>, ModelError> {
        self.check_block(block)?;
        let slot = self.blocks[block]
            .expert_mut(m, expert)
            .ok_or_else(|| ModelError::Unsupported(format!("expert {expert} of block {block}")))?;
        replace_same_shape(slot, linear, &m.tensor_name(block))
    }

    /// The router's logits of a mixture-of-experts block for its input `h` (`Site::MlpIn`), `[n, experts]`.
    pub fn router_logits_of(&self, block: usize, h: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        self.check_block(block)?;
        self.check_rows("MLP input", h, n, self.config.hidden_size)?;
        self.router_logits(block, h, n).ok_or_else(|| ModelError::Unsupported(format!("block {block} has no router")))
    }

    /// Multiplies the input columns of block `block`'s router by `s` (`[hidden]`), as AWQ does when it divides
    /// the MLP norm by `s`: the routing stays the same. Returns the router's new weight, `[experts, hidden]`;
    /// `None` for a dense block or a scale of the wrong width.
    pub fn scale_router_inputs(&mut self, block: usize, s: &[f32]) -> Option<Vec<f32>> {
        let hidden = self.config.hidden_size;
        let moe = self.blocks.get_mut(block)?.moe_mut()?;
        (s.len() == hidden).then(|| moe.scale_router_inputs(s))
    }

    /// The canonical name of the norm whose output is `site` (`AttnIn`, `MlpIn`) in block `block`.
    pub fn site_norm_name(&self, block: usize, site: Site) -> Option<String> {
        match site {
            Site::AttnIn => Some(format!("blk.{block}.attn_norm.weight")),
            Site::MlpIn => Some(format!("blk.{block}.{}", crate::transformer::mlp_norm_name(self.config.arch))),
            _ => None,
        }
    }

    /// The weight vector of the norm whose output is `site` (`AttnIn`, `MlpIn`), for folding scales into it.
    pub fn site_norm_mut(&mut self, block: usize, site: Site) -> Option<&mut Vec<f32>> {
        self.blocks.get_mut(block)?.norm_mut(site)
    }

    /// The bias added to projection `p`'s output, where the model has one.
    pub fn bias_mut(&mut self, block: usize, p: Proj) -> Option<&mut Vec<f32>> {
        self.blocks.get_mut(block)?.bias_mut(p)
    }

    /// The weight tensor of the output projection: the token embedding when the model ties them.
    pub fn head_tensor_name(&self) -> &'static str {
        if self.config.tie_embeddings {
            "token_embd.weight"
        } else {
            "output.weight"
        }
    }

    /// Projection `p` of block `block`; `None` for the MLP projections of a mixture of experts (one per expert).
    pub fn projection(&self, block: usize, p: Proj) -> Option<&dyn Linear> {
        self.blocks.get(block)?.projection(p)
    }

    /// Replaces a projection (with a quantized or re-scaled one); its shape must be the old one's. Returns the old one.
    pub fn set_projection(
        &mut self,
        block: usize,
        p: Proj,
        linear: Box<dyn Linear>,
    ) -> Result<Box<dyn Linear>, ModelError> {
        self.check_block(block)?;
        let slot = self.blocks[block]
            .projection_mut(p)
            .ok_or_else(|| ModelError::Unsupported(format!("{p:?} of block {block}, a mixture of experts")))?;
        replace_same_shape(slot, linear, &p.tensor_name(block))
    }

    /// The parts mixed precision chooses among: every block, then the token embedding with the output projection.
    pub fn parts(&self) -> Vec<Part> {
        (0..self.blocks.len()).map(Part::Block).chain([Part::Embedding]).collect()
    }

    /// Exchanges `part` with `other`'s, which must be the same architecture: with a quantized build as `other`,
    /// the model runs with that one part quantized (a block's AWQ scales are folded only into its own norms and
    /// projections, so swapping whole blocks stays exact).
    pub fn swap_part(&mut self, other: &mut Model, part: Part) -> Result<(), ModelError> {
        if self.config != other.config {
            return Err(ModelError::Unsupported("swapping parts between models of different configs".into()));
        }
        match part {
            Part::Block(block) => {
                self.check_block(block)?;
                std::mem::swap(&mut self.blocks[block], &mut other.blocks[block]);
            }
            Part::Embedding => {
                std::mem::swap(&mut self.embedding, &mut other.embedding);
                std::mem::swap(&mut self.lm_head, &mut other.lm_head);
            }
        }
        Ok(())
    }
}

fn replace_same_shape(
    slot: &mut Box<dyn Linear>,
    linear: Box<dyn Linear>,
    tensor: &str,
) -> Result<Box<dyn Linear>, ModelError> {
    let (rows, cols) = (slot.out_features(), slot.in_features());
    if (linear.out_features(), linear.in_features()) != (rows, cols) {
        return Err(ModelError::Shape {
            tensor: tensor.into(),
            expected: vec![rows, cols],
            found: vec![linear.out_features(), linear.in_features()],
        });
    }
    Ok(std::mem::replace(slot, linear))
}

/// A unit of the model that mixed precision keeps wider or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// A transformer block: its projections and norms.
    Block(usize),
    /// The token embedding and the output projection (one matrix when tied).
    Embedding,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Part::Block(b) => write!(f, "block {b}"),
            Part::Embedding => write!(f, "embedding"),
        }
    }
}
