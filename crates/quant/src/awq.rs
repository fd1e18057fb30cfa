//! AWQ (Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration", 2023):
//! before rounding, multiply each input column of a projection by a scale `s` that grows with the column's mean
//! activation magnitude, and divide the layer that produces the input by the same `s`. The model computes the
//! same function, but the weights that meet large activations are rounded with a relatively finer step.
//!
//! Per block, four groups of projections share an input and a scale vector, each folded into what feeds it:
//! q/k/v into the attention norm, o into v's output rows (with grouped-query attention one scale per v channel,
//! repeated over the query heads that read it), gate/up into the MLP norm, down into up's output rows. The scale
//! is `s = m^α / √(max·min)` (m: mean |x| per column on a few calibration windows), α searched on a grid of
//! [`AwqOptions::grid`] points from 0 (plain rounding) to 1 for the least error of what the group feeds: the
//! attention branch's output for q/k/v (the heads' softmax is not linear in q and k), the MLP branch's output for
//! gate/up, the projection's own output for o and down. All four are searched on the original block, then applied
//! together, as the reference implementation does. Rounding in the search is the target's round to nearest.
//!
//! In a mixture-of-experts block (GPT-OSS) the MLP norm feeds the router and every expert's gate/up, so they take
//! one scale: the experts' gate/up columns and the router's columns multiplied by `s`, the norm divided by it (the
//! routing stays exactly the same, the router being kept wide), searched for the least error of the whole mixture's
//! output. Down gets no scale: GPT-OSS's SwiGLU clamps its linear half and adds one to it, so a scale on up's rows
//! would not pass through to down's input.

use std::collections::BTreeMap;
use std::sync::Arc;

use lowbit_formats::experts::ExpertStack;
use lowbit_formats::source::ModelSource;
use lowbit_model::{scale_columns, DenseF32, ExpertMatrix, KvCache, Linear, Model, Proj, Site};
use serde::Serialize;

use crate::error::QuantError;
use crate::grid::Target;

/// AWQ's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AwqOptions {
    /// Points of the α grid (the reference's 20).
    pub grid: usize,
    /// Calibration windows the scales are searched on (the first ones of the set).
    pub samples: usize,
    /// Search each group's clipping range for the least output error (group formats; not q and k, whose error
    /// shows only through attention scores, as in the reference).
    pub clip: bool,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions { grid: 20, samples: 4, clip: true }
    }
}

/// The f32 weights of a block's projections, as they will be rounded: `(rows, cols, values)` by projection.
pub type BlockWeights = BTreeMap<Proj, (usize, usize, Arc<[f32]>)>;

/// The scale chosen for one input site of a block.
#[derive(Clone, Debug, Serialize)]
pub struct SiteScales {
    #[serde(skip)]
    pub site: Site,
    /// The projections scaled.
    pub tensors: Vec<String>,
    pub alpha: f32,
    /// Mean squared error of what the group feeds, with plain rounding (α = 0) and with the chosen scale.
    pub rtn_error: f64,
    pub error: f64,
    /// Per input column of the site's projections.
    #[serde(skip)]
    pub scales: Vec<f32>,
}

/// What the scales of a site fold into: a norm (`AttnIn`, `MlpIn`) or the output rows of a projection (v for
/// o's input, up for down's); `None` when the site has no such layer.
fn folds_into(site: Site) -> Option<Proj> {
    match site {
        Site::AttnOut => Some(Proj::V),
        Site::MlpOut => Some(Proj::Up),
        _ => None,
    }
}

/// A mixture-of-experts block's gate/up stack and its target; the search reads its experts from `source` one at a
/// time, so no f32 copy of the stack is held beside the rounded one.
pub struct ExpertGateUp<'a> {
    pub source: &'a ModelSource,
    pub stack: ExpertStack,
    pub target: Target,
}

/// The name of a mixture-of-experts block's router weight, which takes the gate/up scale with the experts.
fn router_tensor_name(block: usize) -> String {
    format!("blk.{block}.ffn_gate_inp.weight")
}

/// The original block's activations on the search windows: each site's input and each branch's output.
struct Activations {
    tokens: usize,
    input: BTreeMap<Site, Vec<f32>>,
    /// Per window: (tokens, attention input, MLP input), to re-run the branches.
    windows: Vec<(usize, Vec<f32>, Vec<f32>)>,
    attention: Vec<f32>,
    mlp: Vec<f32>,
}

fn activations(
    model: &Model,
    block: usize,
    windows: &[(&[f32], usize)],
    cache: &mut KvCache,
) -> Result<Activations, QuantError> {
    let mut a =
        Activations { tokens: 0, input: BTreeMap::new(), windows: Vec::new(), attention: Vec::new(), mlp: Vec::new() };
    for &(x, n) in windows {
        let mut x = x.to_vec();
        let h = model.site_input(block, Site::AttnIn, &x, n)?;
        let heads = model.attention_heads_of(block, &h, n, cache)?;
        let attn = model.attention_output_of(block, &heads, n)?;
        x.iter_mut().zip(&attn).for_each(|(v, d)| *v += d);
        let m = model.site_input(block, Site::MlpIn, &x, n)?;
        // A mixture of experts has no one hidden row per token for down: its MLP runs whole.
        let act = match model.n_experts(block) {
            0 => Some(model.mlp_hidden_of(block, &m, n)?),
            _ => None,
        };
        a.mlp.extend(match &act {
            Some(act) => model.mlp_output_of(block, act, n)?,
            None => model.ffn_output_of(block, &m, n, &mut ())?,
        });
        a.attention.extend(attn);
        for (site, v) in [(Site::AttnIn, Some(&h)), (Site::AttnOut, Some(&heads)), (Site::MlpIn, Some(&m))]
            .into_iter()
            .chain([(Site::MlpOut, act.as_ref())])
        {
            if let Some(v) = v {
                a.input.entry(site).or_default().extend_from_slice(v);
            }
        }
        a.windows.push((n, h, m));
        a.tokens += n;
    }
    Ok(a)
}

/// Mean |x| per column of rows `x` of width `dim`.
fn mean_abs(x: &[f32], dim: usize) -> Vec<f32> {
    let mut m = vec![0f64; dim];
    for row in x.chunks_exact(dim) {
        m.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v.abs()));
    }
    let n = (x.len() / dim).max(1) as f64;
    m.iter().map(|&v| (v / n) as f32).collect()
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// The mean |x| of o's input columns averaged over the query heads that share a v channel, repeated back over
/// them, so the scale can be folded into v (one value per v channel).
fn shared_over_heads(m: &[f32], model: &Model) -> Vec<f32> {
    let c = &model.config;
    let (hd, group) = (c.head_dim, c.n_heads / c.n_kv_heads.max(1));
    let mut kv = vec![0f32; c.kv_dim()];
    for (i, &v) in m.iter().enumerate() {
        let (head, d) = (i / hd, i % hd);
        kv[(head / group) * hd + d] += v / group as f32;
    }
    (0..m.len()).map(|i| kv[(i / hd / group) * hd + i % hd]).collect()
}

/// One value per v channel of a vector over o's input columns that [`shared_over_heads`] made.
fn v_channels(s: &[f32], c: &lowbit_formats::config::ModelConfig) -> Vec<f32> {
    let (hd, group) = (c.head_dim, c.n_heads / c.n_kv_heads.max(1));
    (0..c.kv_dim()).map(|j| s[(j / hd) * group * hd + j % hd]).collect()
}

/// `m^α`, normalized by `√(max·min)` as the reference does so the scales centre on 1.
fn scales_for(m: &[f32], alpha: f32) -> Vec<f32> {
    let s: Vec<f32> = m.iter().map(|&v| v.max(1e-4).powf(alpha).max(1e-4)).collect();
    let (lo, hi) = s.iter().fold((f32::MAX, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    s.iter().map(|v| v / norm).collect()
}

/// `round(W·diag(s))·diag(1/s)`: the projection as the model computes it with scale `s` folded in and rounded.
fn scaled_rounded(target: Target, w: &[f32], cols: usize, s: &[f32], name: &str) -> Result<Vec<f32>, QuantError> {
    let mut scaled = w.to_vec();
    scale_columns(&mut scaled, s);
    let mut values =
        target.round_values(&scaled, cols).map_err(|what| QuantError::Tensor { tensor: name.into(), what })?;
    values.iter_mut().enumerate().for_each(|(i, v)| *v /= s[i % cols]);
    Ok(values)
}

/// Searches the scales of every site of block `block` whose projections (and the projection the scale folds into)
/// all have targets, on `windows` (residual rows and token counts) through the model's original block; in a
/// mixture-of-experts block the MLP norm's scale when `experts` gives the gate/up stack a target.
#[allow(clippy::too_many_arguments)]
pub fn search_block(
    model: &mut Model,
    block: usize,
    windows: &[(&[f32], usize)],
    weights: &BlockWeights,
    targets: &BTreeMap<Proj, Target>,
    experts: Option<&ExpertGateUp>,
    opts: &AwqOptions,
    cache: &mut KvCache,
) -> Result<Vec<SiteScales>, QuantError> {
    let acts = activations(model, block, windows, cache)?;
    let moe = model.n_experts(block) > 0;
    let mut found = Vec::new();
    for site in Site::BLOCK {
        let projs = site.projections();
        let gate_up = match (site, moe) {
            (Site::MlpIn, true) => match experts {
                Some(x) => Some(x),
                None => continue,
            },
            _ => None,
        };
        if gate_up.is_none() && !projs.iter().copied().chain(folds_into(site)).all(|p| targets.contains_key(&p)) {
            continue;
        }
        let x = &acts.input[&site];
        let dim = x.len() / acts.tokens.max(1);
        let m = mean_abs(x, dim);
        let m = if site == Site::AttnOut { shared_over_heads(&m, model) } else { m };
        let mut best: Option<(f32, f64, Vec<f32>)> = None;
        let mut rtn_error = 0.0;
        // The experts as loaded, kept from the first time the search replaces them.
        let mut loaded: Vec<Option<Box<dyn Linear>>> = Vec::new();
        for k in 0..opts.grid.max(1) {
            let alpha = k as f32 / opts.grid.max(1) as f32;
            let s = scales_for(&m, alpha);
            let error = match gate_up {
                Some(x) => experts_error(model, block, &acts, x, &s, &mut loaded)?,
                None => site_error(model, block, site, &acts, weights, targets, &s)?,
            };
            if k == 0 {
                rtn_error = error;
            }
            if best.as_ref().is_none_or(|b| error < b.1) {
                best = Some((alpha, error, s));
            }
        }
        let tensors = match gate_up {
            Some(_) => {
                for (e, linear) in loaded.into_iter().enumerate() {
                    if let Some(linear) = linear {
                        model.set_expert(block, ExpertMatrix::GateUp, e, linear)?;
                    }
                }
                vec![ExpertMatrix::GateUp.tensor_name(block), router_tensor_name(block)]
            }
            None => {
                restore(model, block, projs, weights)?;
                projs.iter().map(|p| p.tensor_name(block)).collect()
            }
        };
        let (alpha, error, scales) = best.expect("the grid has a point");
        found.push(SiteScales { site, tensors, alpha, rtn_error, error, scales });
    }
    Ok(found)
}

/// The error of what `site`'s projections feed, with scale `s` folded in and rounded.
fn site_error(
    model: &mut Model,
    block: usize,
    site: Site,
    acts: &Activations,
    weights: &BlockWeights,
    targets: &BTreeMap<Proj, Target>,
    s: &[f32],
) -> Result<f64, QuantError> {
    let mut rounded = Vec::new();
    for &p in site.projections() {
        let (_, cols, w) = &weights[&p];
        rounded.push((p, scaled_rounded(targets[&p], w, *cols, s, &p.tensor_name(block))?));
    }
    match site {
        Site::AttnOut | Site::MlpOut => {
            // The projection's own output: X·(W − W')ᵀ.
            let (p, values) = &rounded[0];
            let (rows, cols, w) = &weights[p];
            let diff: Vec<f32> = w.iter().zip(values).map(|(a, b)| a - b).collect();
            let x = &acts.input[&site];
            let mut out = vec![0f32; acts.tokens * rows];
            lowbit_kernels::matmul_f32(x, &diff, &mut out, acts.tokens, *cols, *rows);
            Ok(out.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / out.len().max(1) as f64)
        }
        _ => {
            for (p, values) in rounded {
                let (rows, cols, _) = weights[&p];
                model.set_projection(block, p, Box::new(DenseF32::new(values.into(), rows, cols)))?;
            }
            let mut out = Vec::new();
            let mut cache = model.new_cache(acts.windows.iter().map(|w| w.0).max().unwrap_or(1))?;
            for (n, h, m) in &acts.windows {
                if site == Site::AttnIn {
                    let heads = model.attention_heads_of(block, h, *n, &mut cache)?;
                    out.extend(model.attention_output_of(block, &heads, *n)?);
                } else {
                    let act = model.mlp_hidden_of(block, m, *n)?;
                    out.extend(model.mlp_output_of(block, &act, *n)?);
                }
            }
            let reference = if site == Site::AttnIn { &acts.attention } else { &acts.mlp };
            Ok(mse(&out, reference))
        }
    }
}

/// The error of a mixture of experts' output with scale `s` folded into every expert's gate/up and rounded (the
/// router unchanged: folded, it would see the same products). `loaded` keeps the experts the model held first.
fn experts_error(
    model: &mut Model,
    block: usize,
    acts: &Activations,
    x: &ExpertGateUp,
    s: &[f32],
    loaded: &mut Vec<Option<Box<dyn Linear>>>,
) -> Result<f64, QuantError> {
    let (rows, cols) = (x.stack.rows, x.stack.cols);
    let name = ExpertMatrix::GateUp.tensor_name(block);
    loaded.resize_with(x.stack.experts, || None);
    for (e, slot) in loaded.iter_mut().enumerate() {
        let w = x.stack.expert_f32(x.source, e)?;
        let values = scaled_rounded(x.target, &w, cols, s, &format!("{name}[{e}]"))?;
        let old =
            model.set_expert(block, ExpertMatrix::GateUp, e, Box::new(DenseF32::new(values.into(), rows, cols)))?;
        slot.get_or_insert(old);
    }
    let mut out = Vec::new();
    for (n, _, m) in &acts.windows {
        out.extend(model.ffn_output_of(block, m, *n, &mut ())?);
    }
    Ok(mse(&out, &acts.mlp))
}

/// Puts the original weights of `projs` back into the model after the search.
fn restore(model: &mut Model, block: usize, projs: &[Proj], weights: &BlockWeights) -> Result<(), QuantError> {
    for p in projs {
        let (rows, cols, w) = &weights[p];
        model.set_projection(block, *p, Box::new(DenseF32::new(w.clone(), *rows, *cols)))?;
    }
    Ok(())
}

/// Folds the scales into the model and the block's weights: the site's projections' columns multiplied by `s`, the
/// norm or the output rows (and bias) of the projection feeding the site divided by it. A mixture of experts'
/// router takes the MLP norm's scale here; its experts take it as they are rounded, read from the source. Returns
/// the unquantized tensors changed (norms, biases, routers), by name, to be written in place of the source's.
pub fn apply(
    model: &mut Model,
    block: usize,
    found: &[SiteScales],
    weights: &mut BlockWeights,
) -> Result<BTreeMap<String, Vec<f32>>, QuantError> {
    let offset = model.config.norm_weight_offset;
    let mut changed = BTreeMap::new();
    for f in found {
        let s = &f.scales;
        // A mixture of experts' block weights hold no gate and up.
        for p in f.site.projections() {
            let Some((rows, cols, w)) = weights.get(p) else { continue };
            let mut scaled = w.to_vec();
            scale_columns(&mut scaled, s);
            weights.insert(*p, (*rows, *cols, scaled.into()));
        }
        if f.site == Site::MlpIn {
            if let Some(router) = model.scale_router_inputs(block, s) {
                changed.insert(router_tensor_name(block), router);
            }
        }
        match folds_into(f.site) {
            None => {
                let name = model.site_norm_name(block, f.site).expect("a norm feeds the site");
                let norm = model.site_norm_mut(block, f.site).expect("a norm feeds the site");
                // The norm multiplies by (offset + w) (Gemma stores w − 1): the stored value becomes (offset + w)/s − offset.
                norm.iter_mut().zip(s).for_each(|(w, s)| *w = (offset + *w) / s - offset);
                changed.insert(name, norm.clone());
            }
            Some(feeder) => {
                // One scale per output row of the feeder: o's input repeats v's channels over the query heads.
                let (rows, cols, w) = &weights[&feeder];
                let per_row: Vec<f32> = if f.site == Site::AttnOut { v_channels(s, &model.config) } else { s.clone() };
                let mut w = w.to_vec();
                w.chunks_exact_mut(*cols).zip(&per_row).for_each(|(row, s)| row.iter_mut().for_each(|v| *v /= s));
                weights.insert(feeder, (*rows, *cols, w.into()));
                if let Some(bias) = model.bias_mut(block, feeder) {
                    bias.iter_mut().zip(&per_row).for_each(|(v, s)| *v /= s);
                    changed.insert(feeder.bias_name(block), bias.clone());
                }
            }
        }
    }
    Ok(changed)
}
