//! The layer-by-layer calibration driver: the calibration set goes through the model one block at a time, and
//! within a block one input site at a time. At each site the inputs of its projections are captured (as a Hessian:
//! only one site's statistics are in memory), the projections are rounded (GPTQ, or round to nearest), and the
//! *rounded* projections compute the next site's inputs, so every projection is fitted to the errors of those before
//! it (GPTQ's "true sequential" order) and each block's output, fed to the next, is the quantized block's. With AWQ,
//! the block's scales are searched on the original block first and folded in before the sites are rounded.
//!
//! A mixture-of-experts block's MLP is calibrated expert by expert: each expert's Hessian holds only the rows of
//! the tokens the router sends it (gate/up: the MLP norm's output; down: that expert's hidden rows under its
//! rounded gate/up), and an expert routed fewer than [`MIN_EXPERT_TOKENS`] tokens is rounded to nearest instead,
//! since so few rows leave most of its Hessian's directions unseen. The router stays f32, as the release keeps it.
//!
//! Work: one forward pass of each block over the set, plus the MLP's gate and up once more (down's input is
//! recomputed rather than held). Memory: the model in f32, the residual rows of the calibration set
//! (`samples × seq_len × hidden` f32, 151 MB for 128 × 512 tokens of SmolLM2), the attention heads' output of the set
//! while o is rounded (as large again, `q_dim` wide), one site's Hessian and one KV cache of `seq_len` positions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use lowbit_formats::experts::ExpertStack;
use lowbit_formats::source::ModelSource;
use lowbit_model::{DenseF32, ExpertMatrix, KvCache, Model, Observer, Proj, Site};

use crate::awq::{self, AwqOptions, BlockWeights, SiteScales};
use crate::error::QuantError;
use crate::gptq::{gptq, GptqOptions, RowGrid};
use crate::grid::{BlockGrid, GroupGrid, Quantized, Target};
use crate::hessian::Hessian;
use crate::imatrix::MIN_EXPERT_TOKENS;

/// Where the driver is, for a progress display: `done` of `total` work units, and what runs now.
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub what: &'a str,
}

/// What the driver does: AWQ's scales or not, then GPTQ or round to nearest.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Plan {
    pub awq: Option<AwqOptions>,
    pub gptq: Option<GptqOptions>,
}

/// How one tensor was rounded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub format: String,
    /// GPTQ's loss, the damping that made the Hessian invertible and the columns without calibration signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gptq: Option<GptqFigures>,
    /// The output error `tr(ΔW·H·ΔWᵀ)/rows` of the rounding on the calibration inputs.
    pub output_error: f64,
}

/// GPTQ onto `grid`, its output packed by `pack` (values, parameters): the rounded values, the packed tensor and
/// GPTQ's figures.
#[allow(clippy::too_many_arguments)]
fn gptq_onto<G: RowGrid, E: std::fmt::Display>(
    grid: &G,
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    opts: GptqOptions,
    pack: impl FnOnce(&[f32], &[G::Params]) -> std::result::Result<Quantized, E>,
) -> std::result::Result<(Vec<f32>, Quantized, Option<GptqFigures>), String> {
    let out = gptq(grid, w, rows, cols, h, opts).map_err(|e| format!("GPTQ: {e}"))?;
    let packed = pack(&out.values, &out.params).map_err(|e| e.to_string())?;
    let figures = GptqFigures { loss: out.loss, damp: out.damp, dead_columns: out.dead_columns };
    Ok((out.values, packed, Some(figures)))
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct GptqFigures {
    pub loss: f64,
    pub damp: f64,
    pub dead_columns: usize,
}

/// How many calibration tokens the router sent each expert of a stack, and the experts rounded to nearest for
/// having fewer than [`MIN_EXPERT_TOKENS`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExpertCoverage {
    pub tokens: Vec<usize>,
    pub rounded_to_nearest: Vec<usize>,
}

/// The quantized tensors by name (an expert stack as one matrix, its experts' rows one after another), the 1-D
/// tensors AWQ changed (norms and biases its scales were folded into, to be written in place of the source's), a
/// report per tensor (per expert: `name[e]`) and per AWQ site, the experts' coverage per stack, and where the
/// time went.
pub struct LayerwiseResult {
    pub tensors: BTreeMap<String, Quantized>,
    pub values: BTreeMap<String, Vec<f32>>,
    pub reports: Vec<TensorReport>,
    pub coverage: BTreeMap<String, ExpertCoverage>,
    pub awq: Vec<SiteScales>,
    pub seconds: Timings,
}

/// Wall seconds per phase of the run, and per block.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Forward passes over the calibration set (the sites' inputs, the blocks' outputs).
    pub forward: f64,
    /// Adding the inputs' x·xᵀ to the Hessians.
    pub hessians: f64,
    /// AWQ's scale search.
    pub awq: f64,
    /// Rounding (GPTQ sweeps with their Cholesky factors, or round to nearest with AWQ's clip search).
    pub rounding: f64,
    /// Each block from start to end (the output projection's rounding is in none of them).
    pub blocks: Vec<f64>,
}

/// Rounds every block projection of `model` (built from `source` with f32 weights) that `format_for` gives a
/// target (a native group format or a GGUF block type) as `plan` says, on the calibration windows `samples`; also
/// the output projection (the tied embedding when the model ties them) when `format_for` gives it one (GPTQ or
/// round to nearest, without AWQ: nothing before it could take a scale). The model is left holding the rounded
/// weights, except for expert stacks, which go back to what they were loaded as once their block is done.
pub fn quantize_model(
    model: &mut Model,
    source: &ModelSource,
    samples: &[Vec<u32>],
    format_for: &dyn Fn(&str, &[usize]) -> Option<Target>,
    plan: Plan,
    progress: &dyn Fn(Progress),
) -> Result<LayerwiseResult, QuantError> {
    let seq_len = samples.iter().map(Vec::len).max().unwrap_or(0);
    let blocks = model.n_blocks();
    // Per block: five passes over the set (a sixth for experts, one per stack), a rounding per matrix and AWQ's
    // search.
    let units = |li: usize| {
        usize::from(plan.awq.is_some())
            + match model.n_experts(li) {
                0 => 5 * samples.len() + Proj::ALL.len(),
                e => 6 * samples.len() + 4 + 2 * e,
            }
    };
    let total = (0..blocks).map(units).sum::<usize>() + samples.len() + 1;
    let cache = model.new_cache(seq_len.max(1))?;
    let mut d = Driver {
        model,
        source,
        format_for,
        plan,
        progress,
        done: 0,
        total,
        cache,
        result: LayerwiseResult {
            tensors: BTreeMap::new(),
            values: BTreeMap::new(),
            reports: Vec::new(),
            coverage: BTreeMap::new(),
            awq: Vec::new(),
            seconds: Timings::default(),
        },
    };
    let mut rows: Vec<(Vec<f32>, usize)> =
        samples.iter().map(|s| Ok((d.model.embed(s)?, s.len()))).collect::<Result<_, lowbit_model::ModelError>>()?;
    for li in 0..blocks {
        let start = Instant::now();
        d.block(li, &mut rows)?;
        d.result.seconds.blocks.push(start.elapsed().as_secs_f64());
    }

    let head = d.model.head_tensor_name();
    let mut h = Hessian::new(d.model.config.hidden_size);
    for (s, (x, n)) in rows.iter().enumerate() {
        d.step(&format!("output: capturing sample {}/{}", s + 1, rows.len()), 1);
        let start = Instant::now();
        let input = d.model.head_input(x);
        d.result.seconds.forward += start.elapsed().as_secs_f64();
        d.add(&mut h, &input, *n);
    }
    d.step(&format!("output: rounding {head}"), 1);
    let (shape, w) = source.tensor_f32(head)?;
    source.release(&source.tensor(head)?);
    if let Some(target) = format_for(head, &shape) {
        // Rows round independently under one Hessian, so a large vocabulary's rows go in slices: GPTQ's working
        // copies are a slice's, not the whole projection's (3 × 2.3 GB for GPT-OSS's 201088 rows).
        let cols = shape[1];
        let mut parts = Vec::new();
        for (i, slice) in w.chunks(HEAD_SLICE_ROWS * cols).enumerate() {
            let (r0, rows) = (i * HEAD_SLICE_ROWS, slice.len() / cols);
            let name = if rows == shape[0] { head.to_string() } else { format!("{head}[{r0}..{}]", r0 + rows) };
            parts.push(d.round(&name, target, rows, cols, slice, &h, None, plan.gptq)?.1);
        }
        let q = stacked(parts).map_err(|what| QuantError::Tensor { tensor: head.to_string(), what })?;
        d.result.tensors.insert(head.to_string(), q);
    }
    progress(Progress { done: d.total, total: d.total, what: "done" });
    Ok(d.result)
}

struct Driver<'a> {
    model: &'a mut Model,
    source: &'a ModelSource,
    format_for: &'a dyn Fn(&str, &[usize]) -> Option<Target>,
    plan: Plan,
    progress: &'a dyn Fn(Progress),
    done: usize,
    total: usize,
    cache: KvCache,
    result: LayerwiseResult,
}

impl Driver<'_> {
    fn step(&mut self, what: &str, units: usize) {
        (self.progress)(Progress { done: self.done, total: self.total, what });
        self.done += units;
    }

    fn add(&mut self, h: &mut Hessian, x: &[f32], n: usize) {
        let start = Instant::now();
        h.add(x, n);
        self.result.seconds.hessians += start.elapsed().as_secs_f64();
    }

    /// Block `li`: AWQ's scales, then each site's Hessian and rounding in the order the block runs them; `rows`
    /// (the calibration set's residual rows) leave as the quantized block's output.
    fn block(&mut self, li: usize, rows: &mut [(Vec<f32>, usize)]) -> Result<(), QuantError> {
        let mut weights = BlockWeights::new();
        let mut targets = BTreeMap::new();
        for p in Proj::ALL.into_iter().filter(|&p| self.model.projection(li, p).is_some()) {
            let name = p.tensor_name(li);
            let (shape, w) = self.source.tensor_f32(&name)?;
            // The mapped pages were only needed for this copy.
            self.source.release(&self.source.tensor(&name)?);
            if let Some(t) = (self.format_for)(&name, &shape) {
                targets.insert(p, t);
                weights.insert(p, (shape[0], shape[1], Arc::from(w)));
            }
        }
        let moe = self.model.n_experts(li) > 0;
        // The scale AWQ gives a mixture of experts' gate/up stack, applied as its experts are read for rounding.
        let mut gate_up_scales = None;
        if let Some(opts) = self.plan.awq {
            self.step(&format!("block {li}: AWQ scale search"), 1);
            let start = Instant::now();
            let windows: Vec<(&[f32], usize)> =
                rows.iter().take(opts.samples.max(1)).map(|(x, n)| (&x[..], *n)).collect();
            let experts = match moe {
                true => self.expert_target(li, ExpertMatrix::GateUp)?.map(|(stack, target)| awq::ExpertGateUp {
                    source: self.source,
                    stack,
                    target,
                }),
                false => None,
            };
            let found = awq::search_block(
                self.model,
                li,
                &windows,
                &weights,
                &targets,
                experts.as_ref(),
                &opts,
                &mut self.cache,
            )?;
            let changed = awq::apply(self.model, li, &found, &mut weights)?;
            if moe {
                gate_up_scales = found.iter().find(|f| f.site == Site::MlpIn).map(|f| f.scales.clone());
            }
            self.result.values.extend(changed);
            self.result.awq.extend(found);
            self.result.seconds.awq += start.elapsed().as_secs_f64();
        }

        let total = rows.len();
        // q, k, v: the attention norm's output.
        let mut h = self.hessian(Site::AttnIn);
        for (i, (x, n)) in rows.iter().enumerate() {
            self.step(&format!("block {li}: attention input {}/{total}", i + 1), 1);
            let input = self.timed(|m, _| m.site_input(li, Site::AttnIn, x, *n))?;
            self.add(&mut h, &input, *n);
        }
        self.round_site(li, Site::AttnIn, &h, &weights, &targets)?;
        // o: the attention heads, kept for the residual.
        let mut h = self.hessian(Site::AttnOut);
        let mut heads = Vec::with_capacity(total);
        for (i, (x, n)) in rows.iter().enumerate() {
            self.step(&format!("block {li}: attention heads {}/{total}", i + 1), 1);
            let out =
                self.timed(|m, cache| m.attention_heads_of(li, &m.site_input(li, Site::AttnIn, x, *n)?, *n, cache))?;
            self.add(&mut h, &out, *n);
            heads.push(out);
        }
        self.round_site(li, Site::AttnOut, &h, &weights, &targets)?;
        if moe {
            for (i, ((x, n), heads)) in rows.iter_mut().zip(heads).enumerate() {
                self.step(&format!("block {li}: attention output {}/{total}", i + 1), 1);
                let out = self.timed(|m, _| m.attention_output_of(li, &heads, *n))?;
                add_rows(x, &out);
            }
            return self.experts(li, rows, gate_up_scales.as_deref());
        }
        // gate, up: the MLP norm's output, after attention joins the residual.
        let mut h = self.hessian(Site::MlpIn);
        for (i, ((x, n), heads)) in rows.iter_mut().zip(heads).enumerate() {
            self.step(&format!("block {li}: MLP input {}/{total}", i + 1), 1);
            let input = self.timed(|m, _| {
                add_rows(x, &m.attention_output_of(li, &heads, *n)?);
                m.site_input(li, Site::MlpIn, x, *n)
            })?;
            self.add(&mut h, &input, *n);
        }
        self.round_site(li, Site::MlpIn, &h, &weights, &targets)?;
        // down: the MLP's hidden rows, recomputed below rather than held (intermediate_size wide).
        let mut h = self.hessian(Site::MlpOut);
        for (i, (x, n)) in rows.iter().enumerate() {
            self.step(&format!("block {li}: MLP hidden {}/{total}", i + 1), 1);
            let act = self.timed(|m, _| m.mlp_hidden_of(li, &m.site_input(li, Site::MlpIn, x, *n)?, *n))?;
            self.add(&mut h, &act, *n);
        }
        self.round_site(li, Site::MlpOut, &h, &weights, &targets)?;
        for (i, (x, n)) in rows.iter_mut().enumerate() {
            self.step(&format!("block {li}: block output {}/{total}", i + 1), 1);
            let out = self.timed(|m, _| {
                m.mlp_output_of(li, &m.mlp_hidden_of(li, &m.site_input(li, Site::MlpIn, x, *n)?, *n)?, *n)
            })?;
            add_rows(x, &out);
        }
        Ok(())
    }

    /// Stack `m` of block `li`'s experts and its target, if the format gives it one.
    fn expert_target(&self, li: usize, m: ExpertMatrix) -> Result<Option<(ExpertStack, Target)>, QuantError> {
        let name = m.tensor_name(li);
        let stack = ExpertStack::named(self.source, &name)?;
        Ok((self.format_for)(&name, &[stack.experts, stack.rows, stack.cols]).map(|t| (stack, t)))
    }

    /// The experts of block `li`, stack by stack (gate/up, then down under the rounded gate/up): each expert's
    /// Hessian from the rows routed to it, then GPTQ (or round to nearest when the plan has no GPTQ or the expert
    /// saw too few tokens; with AWQ's clip search when the plan has one). Gate/up's columns are first multiplied
    /// by AWQ's `gate_up_scales` when given. `rows` leave as the block's output. The block then gets its experts
    /// back as they were loaded (MXFP4 stays mapped under `CalibrationFactory`), so the f32 copies of one block's
    /// rounded experts are all the driver holds of them: 3.2 GB for a block of GPT-OSS-20B, against 76 GB for the
    /// model. (With AWQ those experts then sit under the scaled norm and router: the model is done with.)
    fn experts(
        &mut self,
        li: usize,
        rows: &mut [(Vec<f32>, usize)],
        gate_up_scales: Option<&[f32]>,
    ) -> Result<(), QuantError> {
        let (experts, total) = (self.model.n_experts(li), rows.len());
        let mut loaded = Vec::new();
        for m in ExpertMatrix::ALL {
            let name = m.tensor_name(li);
            let Some((stack, target)) = self.expert_target(li, m)? else {
                self.done += total + experts;
                continue;
            };
            let mut seen = ExpertHessians {
                site: m.site(),
                hessians: (0..experts).map(|_| Hessian::new(stack.cols)).collect(),
                seconds: 0.0,
            };
            for (i, (x, n)) in rows.iter().enumerate() {
                self.step(&format!("block {li}: {m:?} inputs of the experts {}/{total}", i + 1), 1);
                self.timed(|model, _| {
                    model.ffn_output_of(li, &model.site_input(li, Site::MlpIn, x, *n)?, *n, &mut seen)
                })?;
            }
            self.result.seconds.forward -= seen.seconds;
            self.result.seconds.hessians += seen.seconds;
            let mut parts = Vec::with_capacity(experts);
            let mut coverage = ExpertCoverage { tokens: Vec::new(), rounded_to_nearest: Vec::new() };
            for (e, h) in seen.hessians.iter().enumerate() {
                let expert = format!("{name}[{e}]");
                self.step(&format!("block {li}: rounding {expert}"), 1);
                let thin = (h.tokens() as u64) < MIN_EXPERT_TOKENS;
                coverage.tokens.push(h.tokens());
                if thin {
                    coverage.rounded_to_nearest.push(e);
                }
                let mut w = stack.expert_f32(self.source, e)?;
                if let (ExpertMatrix::GateUp, Some(s)) = (m, gate_up_scales) {
                    lowbit_model::scale_columns(&mut w, s);
                }
                let gptq = self.plan.gptq.filter(|_| !thin);
                let clip = self.plan.awq.filter(|o| o.clip && !thin).map(|o| o.grid / 2);
                let (values, q) = self.round(&expert, target, stack.rows, stack.cols, &w, h, clip, gptq)?;
                let rounded = Box::new(DenseF32::new(values.into(), stack.rows, stack.cols));
                loaded.push((m, e, self.model.set_expert(li, m, e, rounded)?));
                parts.push(q);
            }
            let stacked = stacked(parts).map_err(|what| QuantError::Tensor { tensor: name.clone(), what })?;
            self.result.tensors.insert(name.clone(), stacked);
            self.result.coverage.insert(name, coverage);
        }
        for (i, (x, n)) in rows.iter_mut().enumerate() {
            self.step(&format!("block {li}: block output {}/{total}", i + 1), 1);
            let out = self.timed(|m, _| m.ffn_output_of(li, &m.site_input(li, Site::MlpIn, x, *n)?, *n, &mut ()))?;
            add_rows(x, &out);
        }
        for (m, e, linear) in loaded {
            self.model.set_expert(li, m, e, linear)?;
        }
        Ok(())
    }

    /// An empty Hessian of the width of `site`'s input.
    fn hessian(&self, site: Site) -> Hessian {
        let c = &self.model.config;
        Hessian::new(match site {
            Site::AttnOut => c.q_dim(),
            Site::MlpOut => c.intermediate_size,
            _ => c.hidden_size,
        })
    }

    /// Runs `f` on the model and the scratch cache, counting its time as forward passes.
    fn timed<T>(
        &mut self,
        f: impl FnOnce(&Model, &mut KvCache) -> Result<T, lowbit_model::ModelError>,
    ) -> Result<T, QuantError> {
        let start = Instant::now();
        let out = f(self.model, &mut self.cache)?;
        self.result.seconds.forward += start.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Rounds the projections of `site` that have targets and puts their rounded values into the model.
    fn round_site(
        &mut self,
        li: usize,
        site: Site,
        h: &Hessian,
        weights: &BlockWeights,
        targets: &BTreeMap<Proj, Target>,
    ) -> Result<(), QuantError> {
        for p in site.projections() {
            let name = p.tensor_name(li);
            self.step(&format!("block {li}: rounding {name}"), 1);
            let (Some(&target), Some((rows, cols, w))) = (targets.get(p), weights.get(p)) else { continue };
            // AWQ's clip search leaves q and k alone: their error shows only through the attention scores.
            let clip = self.plan.awq.filter(|o| o.clip && !matches!(p, Proj::Q | Proj::K)).map(|o| o.grid / 2);
            let (values, q) = self.round(&name, target, *rows, *cols, w, h, clip, self.plan.gptq)?;
            self.result.tensors.insert(name, q);
            self.model.set_projection(li, *p, Box::new(DenseF32::new(values.into(), *rows, *cols)))?;
        }
        Ok(())
    }

    /// Rounds one tensor onto `target` with the Hessian `h` of its input: GPTQ with `gptq`, else round to nearest
    /// (group formats with AWQ's clip search of `clip` steps when given: the reference's 20-point grid over shrink
    /// factors down to ½). Reports it; returns its values and its packed form.
    #[allow(clippy::too_many_arguments)]
    fn round(
        &mut self,
        name: &str,
        target: Target,
        rows: usize,
        cols: usize,
        w: &[f32],
        h: &Hessian,
        clip: Option<usize>,
        gptq_options: Option<GptqOptions>,
    ) -> Result<(Vec<f32>, Quantized), QuantError> {
        let start = Instant::now();
        let tensor_err = |what: String| QuantError::Tensor { tensor: name.to_string(), what };
        let (values, quantized, gptq_figures) = match (gptq_options, target) {
            (Some(opts), Target::Group(format)) => {
                let grid = GroupGrid(format);
                gptq_onto(&grid, w, rows, cols, h, opts, |v, p| grid.pack(v, p, rows, cols).map(Quantized::Group))
                    .map_err(tensor_err)?
            }
            (Some(opts), Target::Gguf { dtype, weighted }) => {
                let grid = BlockGrid { dtype, importance: weighted.then(|| h.importance()) };
                gptq_onto(&grid, w, rows, cols, h, opts, |v, p| {
                    grid.pack(v, p, cols).map(|bytes| Quantized::Gguf { dtype, bytes })
                })
                .map_err(tensor_err)?
            }
            (Some(opts), Target::Palette { format, seed }) => {
                let grid = crate::palette::PaletteGrid::new(format, Some(h.importance()), seed)
                    .map_err(|e| tensor_err(e.to_string()))?;
                gptq_onto(&grid, w, rows, cols, h, opts, |v, p| grid.pack(v, p, rows, cols).map(Quantized::Palette))
                    .map_err(tensor_err)?
            }
            (Some(opts), Target::Ternary { group }) => {
                let format = crate::ternary::format(group).map_err(|e| tensor_err(e.to_string()))?;
                let grid = crate::ternary::TernaryGrid { format, importance: Some(h.importance()) };
                gptq_onto(&grid, w, rows, cols, h, opts, |v, p| grid.pack(v, p, rows, cols).map(Quantized::Group))
                    .map_err(tensor_err)?
            }
            (None, Target::Group(format)) if clip.is_some() => {
                let grid = GroupGrid(format);
                let params = grid.clip_search(w, cols, &h.matrix(), clip.unwrap_or(1)).map_err(tensor_err)?;
                let values: Vec<f32> = w
                    .chunks_exact(cols)
                    .zip(&params)
                    .flat_map(|(row, p)| {
                        row.iter().enumerate().map(|(c, &v)| crate::gptq::RowGrid::round(&grid, p, c, v))
                    })
                    .collect();
                let packed = grid.pack(&values, &params, rows, cols).map_err(|e| tensor_err(e.to_string()))?;
                (values, Quantized::Group(packed), None)
            }
            (None, _) => {
                let (values, quantized) = target.round(w, rows, cols, Some(&h.importance())).map_err(tensor_err)?;
                (values, quantized, None)
            }
        };
        let output_error = output_error(w, &values, cols, h);
        self.result.seconds.rounding += start.elapsed().as_secs_f64();
        self.result.reports.push(TensorReport {
            name: name.to_string(),
            format: target.name(),
            gptq: gptq_figures,
            output_error,
        });
        Ok((values, quantized))
    }
}

/// Accumulates each expert's Hessian from the rows routed to it at one site.
struct ExpertHessians {
    site: Site,
    hessians: Vec<Hessian>,
    /// Time spent adding to them.
    seconds: f64,
}

impl Observer for ExpertHessians {
    fn observe(&mut self, _: usize, _: Site, _: &[f32], _: usize) {}

    fn observe_expert(&mut self, _block: usize, site: Site, expert: usize, _experts: usize, x: &[f32], n: usize) {
        if let (true, Some(h)) = (site == self.site, self.hessians.get_mut(expert)) {
            let start = Instant::now();
            h.add(x, n);
            self.seconds += start.elapsed().as_secs_f64();
        }
    }
}

/// Rows of the output projection rounded at a time.
const HEAD_SLICE_ROWS: usize = 16384;

/// Matrices (a stack's experts, a matrix's slices of rows) as one, their rows one after another (how a native
/// directory stores a stack, and a GGUF tensor its rows; a palettized stack's palettes, one per group of rows,
/// follow each other the same way).
fn stacked(parts: Vec<Quantized>) -> Result<Quantized, String> {
    let mut parts = parts.into_iter();
    let mut out = parts.next().ok_or_else(|| "a stack without experts".to_string())?;
    for part in parts {
        match (&mut out, part) {
            (Quantized::Group(o), Quantized::Group(m)) => {
                o.rows += m.rows;
                o.codes.extend_from_slice(&m.codes);
                o.scales.extend_from_slice(&m.scales);
                o.zeros.extend_from_slice(&m.zeros);
            }
            (Quantized::Gguf { dtype, bytes }, Quantized::Gguf { dtype: d, bytes: b }) if *dtype == d => {
                bytes.extend_from_slice(&b);
            }
            (Quantized::Palette(o), Quantized::Palette(m)) if o.format.group_rows.is_some_and(|g| m.rows % g == 0) => {
                o.rows += m.rows;
                o.codes.extend_from_slice(&m.codes);
                o.lut.extend_from_slice(&m.lut);
                o.scales.extend_from_slice(&m.scales);
            }
            _ => return Err("parts of one matrix in different formats, or palettes spanning two parts".into()),
        }
    }
    Ok(out)
}

/// `tr(ΔW·H·ΔWᵀ)/rows`: the mean over output rows of the rounding's squared output error on the calibration inputs
/// (H as GPTQ defines it, twice the mean x·xᵀ).
fn output_error(w: &[f32], q: &[f32], cols: usize, h: &Hessian) -> f64 {
    let m: Vec<f32> = h.matrix().iter().map(|&v| v as f32).collect();
    let rows = w.len() / cols.max(1);
    let d: Vec<f32> = w.iter().zip(q).map(|(a, b)| a - b).collect();
    let mut dh = vec![0f32; d.len()];
    // H is symmetric, so its rows serve as the "weight" rows of the product D·H.
    lowbit_kernels::matmul_f32(&d, &m, &mut dh, rows, cols, cols);
    dh.iter().zip(&d).map(|(a, b)| f64::from(a * b)).sum::<f64>() / rows.max(1) as f64
}

fn add_rows(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowbit_formats::native::GroupFormat;
    use lowbit_formats::DType;

    /// GPTQ rounds each row under the one Hessian, so rows rounded in slices and joined are the whole matrix
    /// rounded at once: what lets the output projection go in slices. For a group format and a GGUF type.
    #[test]
    fn rows_rounded_in_slices_join_into_the_whole() {
        let (rows, cols) = (40, 64);
        let mut r = lowbit_testdata::Rng::new(5);
        let w = r.units(rows * cols);
        let mut h = Hessian::new(cols);
        h.add(&r.units(128 * cols), 128);
        let opts = GptqOptions::default();
        let group = GroupGrid(GroupFormat::new(4, 32, true).unwrap());
        let gguf = BlockGrid { dtype: DType::Q4_0, importance: None };
        let round = |w: &[f32], rows: usize, gguf_type: bool| -> Quantized {
            let out = if gguf_type {
                gptq_onto(&gguf, w, rows, cols, &h, opts, |v, p| {
                    gguf.pack(v, p, cols).map(|bytes| Quantized::Gguf { dtype: DType::Q4_0, bytes })
                })
            } else {
                gptq_onto(&group, w, rows, cols, &h, opts, |v, p| group.pack(v, p, rows, cols).map(Quantized::Group))
            };
            out.unwrap().1
        };
        for gguf_type in [false, true] {
            let whole = round(&w, rows, gguf_type);
            let parts = w.chunks(16 * cols).map(|s| round(s, s.len() / cols, gguf_type)).collect();
            assert_eq!(format!("{:?}", stacked(parts).unwrap()), format!("{whole:?}"), "GGUF: {gguf_type}");
        }
    }
}
