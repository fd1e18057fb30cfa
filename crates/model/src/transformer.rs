//! The decoder-only transformer of the Llama family (Llama, Mistral, SmolLM2, Qwen2), Gemma 3 and GPT-OSS.
//!
//! One code path serves all: Gemma 3 and GPT-OSS differ only in switches carried by `ModelConfig` and in
//! tensors that exist or not (QK-norm, post-attention and post-MLP norms, attention sinks, an o_proj bias),
//! and GPT-OSS's MLP is a mixture of experts (`moe`). Every projection is a `Linear`, so the storage
//! format of the weights is invisible here.

use std::sync::Arc;

use lowbit_formats::config::{Activation, Arch, AttentionKind, ModelConfig};
use lowbit_formats::source::ModelSource;
use lowbit_kernels as k;

use crate::calib::{ExpertMatrix, Observer, Proj, Site};
use crate::embedding::Embedding;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearFactory};
use crate::moe::Moe;
use crate::rope::Rope;

/// Longest run of tokens pushed through the layers at once; longer inputs are split so the
/// activation buffers stay bounded (llama.cpp's micro-batch).
pub const MAX_BATCH: usize = 512;

/// Which positions of a forward pass need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Tokens at index `i` and later within the call (perplexity scores the second half).
    From(usize),
}

pub(crate) struct Block {
    attn_norm: Vec<f32>,
    q: Box<dyn Linear>,
    k: Box<dyn Linear>,
    v: Box<dyn Linear>,
    o: Box<dyn Linear>,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    /// Llama checkpoints with `attention_bias` bias o_proj too (Qwen2 does not).
    o_bias: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attention_norm: Option<Vec<f32>>,
    /// GPT-OSS: per head, a logit that joins the softmax's denominator only.
    sinks: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
    post_ffw_norm: Option<Vec<f32>>,
    attention: AttentionKind,
    rope: Arc<Rope>,
}

/// A block's MLP.
pub(crate) enum Ffn {
    /// Gated: down(act(gate·x) ⊙ up·x).
    Dense { gate: Box<dyn Linear>, up: Box<dyn Linear>, down: Box<dyn Linear> },
    /// A mixture of experts.
    Moe(Box<Moe>),
}

pub struct Model {
    pub config: ModelConfig,
    /// `[vocab, hidden]`, row per token.
    pub(crate) embedding: Embedding,
    pub(crate) blocks: Vec<Block>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) lm_head: Box<dyn Linear>,
}

/// Reads tensors by canonical name and checks their shapes against the config.
pub(crate) struct Loader<'a> {
    pub(crate) source: &'a ModelSource,
    pub(crate) factory: &'a dyn LinearFactory,
}

impl Loader<'_> {
    pub(crate) fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let (shape, data) = self.source.tensor_f32(name)?;
        if data.len() != len {
            return Err(ModelError::Shape { tensor: name.into(), expected: vec![len], found: shape });
        }
        Ok(data)
    }

    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        if self.source.tensor_names().contains(&name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Box<dyn Linear>, ModelError> {
        let t = self.source.tensor(name)?;
        if t.shape != [rows, cols] {
            return Err(ModelError::Shape { tensor: name.into(), expected: vec![rows, cols], found: t.shape });
        }
        let linear = self.factory.build(&t)?;
        self.source.release(&t);
        Ok(linear)
    }
}

impl Model {
    /// Builds the model from any source; `factory` decides how projection weights are stored.
    pub fn load(source: &ModelSource, factory: &dyn LinearFactory) -> Result<Model, ModelError> {
        let config = source.config()?;
        let l = Loader { source, factory };
        let (d, ff, vocab) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let (qd, kvd, hd) = (config.q_dim(), config.kv_dim(), config.head_dim);

        let embd = source.tensor("token_embd.weight")?;
        if embd.shape != [vocab, d] {
            return Err(ModelError::Shape { tensor: embd.name.into(), expected: vec![vocab, d], found: embd.shape });
        }
        let embedding = Embedding::load(source, &embd)?;
        let lm_head = if config.tie_embeddings { factory.build(&embd)? } else { l.linear("output.weight", vocab, d)? };
        source.release(&embd);

        let full_rope = Arc::new(Rope::new(&config, config.rope_theta));
        let sliding_rope = Arc::new(Rope::new(&config, config.rope_theta_sliding.unwrap_or(config.rope_theta)));
        let mlp_norm_is_post_attention = mlp_norm_name(config.arch) == "post_attention_norm.weight";
        let mut blocks = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let attention = config.layer_attention[i];
            let bias = |s: &str, len| if config.qkv_bias { l.vector(&n(s), len).map(Some) } else { Ok(None) };
            blocks.push(Block {
                attn_norm: l.vector(&n("attn_norm.weight"), d)?,
                q: l.linear(&n("attn_q.weight"), qd, d)?,
                k: l.linear(&n("attn_k.weight"), kvd, d)?,
                v: l.linear(&n("attn_v.weight"), kvd, d)?,
                o: l.linear(&n("attn_output.weight"), d, qd)?,
                q_bias: bias("attn_q.bias", qd)?,
                k_bias: bias("attn_k.bias", kvd)?,
                v_bias: bias("attn_v.bias", kvd)?,
                o_bias: l.optional_vector(&n("attn_output.bias"), d)?,
                q_norm: l.optional_vector(&n("attn_q_norm.weight"), hd)?,
                k_norm: l.optional_vector(&n("attn_k_norm.weight"), hd)?,
                post_attention_norm: match mlp_norm_is_post_attention {
                    true => None,
                    false => l.optional_vector(&n("post_attention_norm.weight"), d)?,
                },
                sinks: match config.attention_sinks {
                    true => Some(l.vector(&n("attn_sinks.weight"), config.n_heads)?),
                    false => None,
                },
                ffn_norm: l.vector(&n(mlp_norm_name(config.arch)), d)?,
                ffn: match config.moe {
                    Some(_) => Ffn::Moe(Box::new(Moe::load(&l, i, &config)?)),
                    None => Ffn::Dense {
                        gate: l.linear(&n("ffn_gate.weight"), ff, d)?,
                        up: l.linear(&n("ffn_up.weight"), ff, d)?,
                        down: l.linear(&n("ffn_down.weight"), d, ff)?,
                    },
                },
                post_ffw_norm: l.optional_vector(&n("post_ffw_norm.weight"), d)?,
                attention,
                rope: match attention {
                    AttentionKind::Full => full_rope.clone(),
                    AttentionKind::Sliding { .. } => sliding_rope.clone(),
                },
            });
        }
        let output_norm = l.vector("output_norm.weight", d)?;
        Ok(Model { config, embedding, blocks, output_norm, lm_head })
    }

    /// A KV cache for up to `capacity` positions (at most the model's context length).
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache, ModelError> {
        KvCache::new(&self.config, capacity)
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        self.block_bytes(&Moe::weight_bytes) + self.lm_head.weight_bytes() + self.embedding.bytes()
    }

    /// Bytes of weights one decode step reads: every projection and the output projection once, the routers, and
    /// of each mixture of experts the share its router picks (experts_per_token of n_experts; exact for experts
    /// of one size). The embedding contributes one row, left out.
    pub fn decode_bytes_per_token(&self) -> usize {
        self.block_bytes(&Moe::bytes_per_token) + self.lm_head.weight_bytes()
    }

    /// The blocks' projection bytes, with `experts` counting a mixture of experts' share.
    fn block_bytes(&self, experts: &dyn Fn(&Moe) -> usize) -> usize {
        let projections =
            |b: &Block| -> usize { Proj::ALL.iter().filter_map(|&p| b.projection(p)).map(|l| l.weight_bytes()).sum() };
        self.blocks.iter().map(|b| projections(b) + if let Ffn::Moe(m) = &b.ffn { experts(m) } else { 0 }).sum()
    }

    /// Runs `tokens` after what `cache` already holds and returns the logits that `want`
    /// asks for, row-major `[rows, vocab]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Vec<f32>, ModelError> {
        self.forward_observed(tokens, cache, want, &mut ())
    }

    /// [`Model::forward`], showing `observer` the input of every projection (calibration).
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        want: Logits,
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>, ModelError> {
        let vocab = self.config.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { token: bad, vocab });
        }
        if cache.len() + tokens.len() > cache.capacity() {
            return Err(ModelError::ContextFull { needed: cache.len() + tokens.len(), capacity: cache.capacity() });
        }
        let first_wanted = match want {
            Logits::Last => tokens.len().saturating_sub(1),
            Logits::From(i) => i.min(tokens.len()),
        };
        let mut logits = Vec::with_capacity((tokens.len() - first_wanted) * vocab);
        for (c, chunk) in tokens.chunks(MAX_BATCH).enumerate() {
            let start = c * MAX_BATCH;
            let mut x = self.embed(chunk)?;
            let mut spans = [Span { pos0: cache.len(), n: chunk.len(), cache: &mut *cache }];
            for li in 0..self.blocks.len() {
                self.run_block(li, &mut x, &mut spans, observer);
            }
            cache.advance(chunk.len());
            let from = first_wanted.saturating_sub(start).min(chunk.len());
            if from < chunk.len() {
                let normed = self.head_input(&x[from * self.config.hidden_size..]);
                observer.observe(self.blocks.len(), Site::Head, &normed, chunk.len() - from);
                logits.extend(self.head(&normed, chunk.len() - from));
            }
        }
        Ok(logits)
    }

    /// One decode step of several sequences at once: token `tokens[i]` after what `caches[i]` holds, for each
    /// `i`. The projections multiply all the sequences' rows together (one pass over the weights for the batch);
    /// attention reads each sequence's own cache. Returns the logits `[sequences, vocab]`.
    pub fn decode_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Vec<f32>, ModelError> {
        if tokens.len() != caches.len() {
            return Err(ModelError::Unsupported(format!("{} tokens for {} caches", tokens.len(), caches.len())));
        }
        if let Some(c) = caches.iter().find(|c| c.len() + 1 > c.capacity()) {
            return Err(ModelError::ContextFull { needed: c.len() + 1, capacity: c.capacity() });
        }
        let mut x = self.embed(tokens)?;
        let mut spans: Vec<Span> = caches.iter_mut().map(|c| Span { pos0: c.len(), n: 1, cache: c }).collect();
        for li in 0..self.blocks.len() {
            self.run_block(li, &mut x, &mut spans, &mut ());
        }
        caches.iter_mut().for_each(|c| c.advance(1));
        Ok(self.head(&self.head_input(&x), tokens.len()))
    }

    /// The embeddings of `tokens`, `[n, hidden]` (scaled where the architecture scales them).
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (vocab, d) = (self.config.vocab_size, self.config.hidden_size);
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { token: bad, vocab });
        }
        let mut x = vec![0f32; tokens.len() * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            self.embedding.row_into(t as usize, row);
            if let Some(s) = self.config.embedding_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        Ok(x)
    }

    /// Block `li` applied to the residual stream `x` in place: the rows of `spans`, one after another.
    pub(crate) fn run_block(&self, li: usize, x: &mut [f32], spans: &mut [Span], observer: &mut dyn Observer) {
        let n: usize = spans.iter().map(|s| s.n).sum();
        let h = self.norm_input(li, Site::AttnIn, x);
        observer.observe(li, Site::AttnIn, &h, n);
        let heads = self.attention_heads(li, &h, spans);
        observer.observe(li, Site::AttnOut, &heads, n);
        add_assign(x, &self.attention_output(li, &heads, n));

        let h = self.norm_input(li, Site::MlpIn, x);
        observer.observe(li, Site::MlpIn, &h, n);
        if self.blocks[li].is_moe() {
            return add_assign(x, &self.ffn_output(li, &h, n, observer));
        }
        let act = self.mlp_hidden(li, &h, n);
        observer.observe(li, Site::MlpOut, &act, n);
        add_assign(x, &self.mlp_output(li, &act, n));
    }

    /// The norm in front of the attention (`Site::AttnIn`) or the MLP (`Site::MlpIn`, or any other site) of
    /// block `li` applied to residual rows `x`: that site's input.
    pub(crate) fn norm_input(&self, li: usize, site: Site, x: &[f32]) -> Vec<f32> {
        let cfg = &self.config;
        let b = &self.blocks[li];
        let w = if site == Site::AttnIn { &b.attn_norm } else { &b.ffn_norm };
        let mut h = vec![0f32; x.len()];
        k::rmsnorm(x, w, cfg.rms_eps, cfg.norm_weight_offset, &mut h);
        h
    }

    /// The attention heads of block `li` for normed rows `h` (the rows of `spans`, one after another), before the
    /// output projection (`[n, q_dim]`); writes each span's keys and values into its cache.
    pub(crate) fn attention_heads(&self, li: usize, h: &[f32], spans: &mut [Span]) -> Vec<f32> {
        // Each row's span and position.
        let rows: Vec<(usize, usize)> =
            spans.iter().enumerate().flat_map(|(i, s)| (s.pos0..s.pos0 + s.n).map(move |p| (i, p))).collect();
        let n = rows.len();
        let cfg = &self.config;
        let b = &self.blocks[li];
        let (hd, nh, nkv) = (cfg.head_dim, cfg.n_heads, cfg.n_kv_heads);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let mut q = vec![0f32; n * qd];
        let mut kk = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        b.q.forward(h, n, &mut q);
        b.k.forward(h, n, &mut kk);
        b.v.forward(h, n, &mut v);
        for (buf, bias) in [(&mut q, &b.q_bias), (&mut kk, &b.k_bias), (&mut v, &b.v_bias)] {
            if let Some(bias) = bias {
                buf.chunks_exact_mut(bias.len()).for_each(|row| add_assign(row, bias));
            }
        }
        for (buf, norm) in [(&mut q, &b.q_norm), (&mut kk, &b.k_norm)] {
            if let Some(w) = norm {
                let raw = buf.clone();
                k::rmsnorm(&raw, w, cfg.rms_eps, cfg.norm_weight_offset, buf);
            }
        }
        for (t, &(_, pos)) in rows.iter().enumerate() {
            b.rope.apply(&mut q[t * qd..(t + 1) * qd], pos);
            b.rope.apply(&mut kk[t * kvd..(t + 1) * kvd], pos);
        }
        let mut first_row = 0;
        for s in spans.iter_mut() {
            let rows = first_row * kvd..(first_row + s.n) * kvd;
            s.cache.write(li, s.pos0, &kk[rows.clone()], &v[rows]);
            first_row += s.n;
        }
        let caches: Vec<&KvCache> = spans.iter().map(|s| &*s.cache).collect();

        let group = nh / nkv;
        let scale = cfg.attention_scale;
        let window = match b.attention {
            AttentionKind::Full => usize::MAX,
            AttentionKind::Sliding { window } => window,
        };
        let mut out = vec![0f32; n * qd];
        k::parallel_chunks_mut(&mut out, hd, &|idx, o| {
            let (t, head) = (idx / nh, idx % nh);
            let (span, pos) = rows[t];
            let first = (pos + 1).saturating_sub(window);
            let qv = &q[t * qd + head * hd..t * qd + (head + 1) * hd];
            let (keys, values) = caches[span].head(li, head / group, first, pos + 1);
            let positions = pos + 1 - first;
            let mut scores = vec![0f32; positions];
            k::matmul_f32(qv, keys, &mut scores, 1, hd, positions);
            scores.iter_mut().for_each(|s| *s *= scale);
            match &b.sinks {
                Some(sinks) => softmax_with_sink(&mut scores, sinks[head]),
                None => k::softmax_inplace(&mut scores),
            }
            k::add_weighted_rows(&scores, values, o);
        });
        out
    }

    /// The output projection (and post-attention norm) of attention heads: what attention adds to the residual.
    pub(crate) fn attention_output(&self, li: usize, heads: &[f32], n: usize) -> Vec<f32> {
        let cfg = &self.config;
        let b = &self.blocks[li];
        let mut proj = vec![0f32; n * cfg.hidden_size];
        b.o.forward(heads, n, &mut proj);
        if let Some(bias) = &b.o_bias {
            proj.chunks_exact_mut(bias.len()).for_each(|row| add_assign(row, bias));
        }
        post_norm(cfg, &b.post_attention_norm, proj)
    }

    /// The activated gate times up of dense block `li` for `n` normed rows `h`: the down projection's input.
    /// (Callers check the block is dense: a mixture of experts has no single hidden row.)
    pub(crate) fn mlp_hidden(&self, li: usize, h: &[f32], n: usize) -> Vec<f32> {
        let b = &self.blocks[li];
        let ff = self.config.intermediate_size;
        let mut gate = vec![0f32; n * ff];
        let mut up = vec![0f32; n * ff];
        if let Ffn::Dense { gate: g, up: u, .. } = &b.ffn {
            g.forward(h, n, &mut gate);
            u.forward(h, n, &mut up);
        }
        match self.config.activation {
            Activation::Silu => k::silu_mul(&mut gate, &up),
            Activation::GeluTanh => k::gelu_tanh_mul(&mut gate, &up),
        }
        gate
    }

    /// The down projection (and post-MLP norm) of the MLP's hidden rows: what the MLP adds to the residual.
    pub(crate) fn mlp_output(&self, li: usize, act: &[f32], n: usize) -> Vec<f32> {
        let cfg = &self.config;
        let b = &self.blocks[li];
        let mut out = vec![0f32; n * cfg.hidden_size];
        if let Ffn::Dense { down, .. } = &b.ffn {
            down.forward(act, n, &mut out);
        }
        post_norm(cfg, &b.post_ffw_norm, out)
    }

    /// What the MLP of block `li` adds to the residual for its `n` normed input rows `h`, dense or experts (whose
    /// inputs `observer` sees).
    pub(crate) fn ffn_output(&self, li: usize, h: &[f32], n: usize, observer: &mut dyn Observer) -> Vec<f32> {
        let b = &self.blocks[li];
        match &b.ffn {
            Ffn::Moe(moe) => post_norm(
                &self.config,
                &b.post_ffw_norm,
                moe.forward(h, n, &mut |site, e, experts, x, m| observer.observe_expert(li, site, e, experts, x, m)),
            ),
            Ffn::Dense { .. } => self.mlp_output(li, &self.mlp_hidden(li, h, n), n),
        }
    }

    /// The router logits of block `li` for its MLP input rows `h`, `[n, experts]`; `None` for a dense block.
    pub(crate) fn router_logits(&self, li: usize, h: &[f32], n: usize) -> Option<Vec<f32>> {
        match &self.blocks[li].ffn {
            Ffn::Moe(moe) => Some(moe.router_logits(h, n)),
            Ffn::Dense { .. } => None,
        }
    }

    /// The final norm of hidden rows after the last block, `[n, hidden]`: the output projection's input.
    pub fn head_input(&self, hidden: &[f32]) -> Vec<f32> {
        let cfg = &self.config;
        let mut normed = vec![0f32; hidden.len()];
        k::rmsnorm(hidden, &self.output_norm, cfg.rms_eps, cfg.norm_weight_offset, &mut normed);
        normed
    }

    /// Output projection of `n` normed rows.
    fn head(&self, normed: &[f32], n: usize) -> Vec<f32> {
        let mut logits = vec![0f32; n * self.config.vocab_size];
        self.lm_head.forward(normed, n, &mut logits);
        logits
    }
}

impl Block {
    /// The projection `p`; `None` for the MLP's in a mixture-of-experts block, which has one per expert.
    pub(crate) fn projection(&self, p: Proj) -> Option<&dyn Linear> {
        Some(match (p, &self.ffn) {
            (Proj::Q, _) => &*self.q,
            (Proj::K, _) => &*self.k,
            (Proj::V, _) => &*self.v,
            (Proj::O, _) => &*self.o,
            (Proj::Gate, Ffn::Dense { gate, .. }) => &**gate,
            (Proj::Up, Ffn::Dense { up, .. }) => &**up,
            (Proj::Down, Ffn::Dense { down, .. }) => &**down,
            (_, Ffn::Moe(_)) => return None,
        })
    }

    pub(crate) fn is_moe(&self) -> bool {
        matches!(self.ffn, Ffn::Moe(_))
    }

    pub(crate) fn n_experts(&self) -> usize {
        match &self.ffn {
            Ffn::Moe(moe) => moe.n_experts(),
            Ffn::Dense { .. } => 0,
        }
    }

    pub(crate) fn expert_mut(&mut self, m: ExpertMatrix, expert: usize) -> Option<&mut Box<dyn Linear>> {
        self.moe_mut()?.expert_mut(m, expert)
    }

    pub(crate) fn moe_mut(&mut self) -> Option<&mut Moe> {
        match &mut self.ffn {
            Ffn::Moe(moe) => Some(moe),
            Ffn::Dense { .. } => None,
        }
    }

    pub(crate) fn norm_mut(&mut self, site: Site) -> Option<&mut Vec<f32>> {
        match site {
            Site::AttnIn => Some(&mut self.attn_norm),
            Site::MlpIn => Some(&mut self.ffn_norm),
            _ => None,
        }
    }

    pub(crate) fn bias_mut(&mut self, p: Proj) -> Option<&mut Vec<f32>> {
        match p {
            Proj::Q => self.q_bias.as_mut(),
            Proj::K => self.k_bias.as_mut(),
            Proj::V => self.v_bias.as_mut(),
            Proj::O => self.o_bias.as_mut(),
            _ => None,
        }
    }

    pub(crate) fn projection_mut(&mut self, p: Proj) -> Option<&mut Box<dyn Linear>> {
        Some(match (p, &mut self.ffn) {
            (Proj::Q, _) => &mut self.q,
            (Proj::K, _) => &mut self.k,
            (Proj::V, _) => &mut self.v,
            (Proj::O, _) => &mut self.o,
            (Proj::Gate, Ffn::Dense { gate, .. }) => gate,
            (Proj::Up, Ffn::Dense { up, .. }) => up,
            (Proj::Down, Ffn::Dense { down, .. }) => down,
            (_, Ffn::Moe(_)) => return None,
        })
    }
}

/// Gemma's norm of a branch's output before it joins the residual, where the block has one.
/// The canonical name (after `blk.N.`) of the norm in front of the MLP. llama.cpp names GPT-OSS's after where it
/// sits (`post_attention_norm`); in Gemma 3 that name is a norm of the attention's output.
pub(crate) fn mlp_norm_name(arch: Arch) -> &'static str {
    match arch {
        Arch::GptOss => "post_attention_norm.weight",
        _ => "ffn_norm.weight",
    }
}

fn post_norm(cfg: &ModelConfig, norm: &Option<Vec<f32>>, raw: Vec<f32>) -> Vec<f32> {
    match norm {
        Some(w) => {
            let mut out = vec![0f32; raw.len()];
            k::rmsnorm(&raw, w, cfg.rms_eps, cfg.norm_weight_offset, &mut out);
            out
        }
        None => raw,
    }
}

/// Softmax of `scores` with one more logit, `sink`, in the denominator only: the weights sum to less than one
/// by the sink's share (GPT-OSS's attention sinks).
fn softmax_with_sink(scores: &mut [f32], sink: f32) {
    let max = scores.iter().fold(sink, |m, &s| m.max(s));
    let mut sum = (sink - max).exp();
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// Consecutive rows of one sequence in a forward pass: `n` tokens at positions `pos0..pos0 + n` of `cache`.
pub(crate) struct Span<'a> {
    pub(crate) cache: &'a mut KvCache,
    pub(crate) pos0: usize,
    pub(crate) n: usize,
}

pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
