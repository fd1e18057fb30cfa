//! The layer-by-layer calibration driver: the calibration set goes through the model one block at a time,
//! each block's projection inputs are captured (as Hessians: only one block's statistics are in memory),
//! the block is quantized, and the *quantized* block's outputs become the next block's inputs, so every
//! block is fitted to the errors of those before it (GPTQ's sequential scheme).
//!
//! Memory: the model in f32, the hidden states of the calibration set (`samples × seq_len × hidden` f32,
//! 151 MB for 128 × 512 tokens of SmolLM2), one block's Hessians and one KV cache of `seq_len` positions.

use std::collections::BTreeMap;
use std::time::Instant;

use lowbit_formats::source::ModelSource;
use lowbit_model::{DenseF32, Model, Observer, Proj, Site};

use crate::error::QuantError;
use crate::gptq::{gptq, GptqOptions, GptqOutput};
use crate::grid::{BlockGrid, GroupGrid, Quantized, Target};
use crate::hessian::Hessian;

/// Where the driver is, for a progress display: `done` of `total` work units, and what runs now.
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub what: &'a str,
}

/// What GPTQ did to one tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub format: String,
    pub loss: f64,
    pub damp: f64,
    pub dead_columns: usize,
}

/// The quantized tensors by name, a report per tensor, and where the time went.
pub struct LayerwiseResult {
    pub tensors: BTreeMap<String, Quantized>,
    pub reports: Vec<TensorReport>,
    pub seconds: Timings,
}

/// Wall seconds per phase of the run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Running the original blocks to collect Hessians (forward passes and the x·xᵀ products).
    pub capture: f64,
    /// Of which computing the Hessians.
    pub hessians: f64,
    /// The GPTQ sweeps (Cholesky factors included).
    pub gptq: f64,
    /// Running the quantized blocks to produce the next block's inputs.
    pub propagate: f64,
}

/// One Hessian per input site of the block being calibrated, and the time spent adding to them.
struct SiteHessians(BTreeMap<Site, Hessian>, f64);

impl Observer for SiteHessians {
    fn observe(&mut self, _: usize, site: Site, x: &[f32], n: usize) {
        let start = Instant::now();
        let dim = x.len() / n.max(1);
        self.0.entry(site).or_insert_with(|| Hessian::new(dim)).add(x, n);
        self.1 += start.elapsed().as_secs_f64();
    }
}

/// GPTQ of every block projection of `model` (built from `source` with f32 weights) that `format_for`
/// gives a target (a native group format or a GGUF block type), on the calibration windows `samples`; also
/// the output projection (the tied embedding when the model ties them) when `format_for` gives it one. The
/// model is left holding the rounded weights.
pub fn gptq_model(
    model: &mut Model,
    source: &ModelSource,
    samples: &[Vec<u32>],
    format_for: &dyn Fn(&str, &[usize]) -> Option<Target>,
    opts: GptqOptions,
    progress: &dyn Fn(Progress),
) -> Result<LayerwiseResult, QuantError> {
    let seq_len = samples.iter().map(Vec::len).max().unwrap_or(0);
    let blocks = model.n_blocks();
    let total = blocks * (2 * samples.len() + Proj::ALL.len()) + samples.len() + 1;
    let mut done = 0;
    let mut step = |what: &str, units: usize| {
        progress(Progress { done, total, what });
        done += units;
    };
    let model_err =
        |e: lowbit_model::ModelError| QuantError::Tensor { tensor: "calibration".into(), what: e.to_string() };
    let mut cache = model.new_cache(seq_len.max(1)).map_err(model_err)?;
    let mut hidden: Vec<Vec<f32>> =
        samples.iter().map(|s| model.embed(s)).collect::<Result<_, _>>().map_err(model_err)?;
    let mut result = LayerwiseResult { tensors: BTreeMap::new(), reports: Vec::new(), seconds: Timings::default() };

    for li in 0..blocks {
        let mut hessians = SiteHessians(BTreeMap::new(), 0.0);
        let start = Instant::now();
        for (s, x) in hidden.iter().enumerate() {
            step(&format!("block {li}: capturing sample {}/{}", s + 1, samples.len()), 1);
            let mut scratch = x.clone();
            model.block_forward(li, &mut scratch, samples[s].len(), &mut cache, &mut hessians).map_err(model_err)?;
        }
        result.seconds.capture += start.elapsed().as_secs_f64();
        result.seconds.hessians += hessians.1;
        let start = Instant::now();
        for p in Proj::ALL {
            let name = p.tensor_name(li);
            step(&format!("block {li}: GPTQ {name}"), 1);
            let h = &hessians.0[&p.site()];
            if let Some(q) = quantize_one(source, &name, h, format_for, opts, &mut result)? {
                model.set_projection(li, p, q).map_err(model_err)?;
            }
        }
        result.seconds.gptq += start.elapsed().as_secs_f64();
        let start = Instant::now();
        for (s, x) in hidden.iter_mut().enumerate() {
            step(&format!("block {li}: propagating sample {}/{}", s + 1, samples.len()), 1);
            model.block_forward(li, x, samples[s].len(), &mut cache, &mut ()).map_err(model_err)?;
        }
        result.seconds.propagate += start.elapsed().as_secs_f64();
    }

    let head = model.head_tensor_name();
    let mut h = Hessian::new(model.config.hidden_size);
    for (s, x) in hidden.iter().enumerate() {
        step(&format!("output: capturing sample {}/{}", s + 1, samples.len()), 1);
        h.add(&model.head_input(x), samples[s].len());
    }
    step(&format!("output: GPTQ {head}"), 1);
    let start = Instant::now();
    quantize_one(source, head, &h, format_for, opts, &mut result)?;
    result.seconds.gptq += start.elapsed().as_secs_f64();
    progress(Progress { done: total, total, what: "done" });
    Ok(result)
}

/// GPTQ of tensor `name` when `format_for` gives it a target: records it and returns its rounded values as
/// a projection for the rest of the calibration run.
fn quantize_one(
    source: &ModelSource,
    name: &str,
    h: &Hessian,
    format_for: &dyn Fn(&str, &[usize]) -> Option<Target>,
    opts: GptqOptions,
    result: &mut LayerwiseResult,
) -> Result<Option<Box<DenseF32>>, QuantError> {
    let (shape, w) = source.tensor_f32(name)?;
    // The mapped pages were only needed for this copy.
    source.release(&source.tensor(name)?);
    let Some(target) = format_for(name, &shape) else { return Ok(None) };
    let (rows, cols) = (shape[0], shape[1]);
    let tensor_err = |what: String| QuantError::Tensor { tensor: name.to_string(), what };
    let (values, quantized) = match target {
        Target::Group(format) => {
            let grid = GroupGrid(format);
            let out = gptq(&grid, &w, rows, cols, h, opts).map_err(|e| tensor_err(format!("GPTQ: {e}")))?;
            let packed = grid.pack(&out.values, &out.params, rows, cols).map_err(|e| tensor_err(e.to_string()))?;
            result.reports.push(report(name, target, &out));
            (out.values, Quantized::Group(packed))
        }
        Target::Gguf { dtype, weighted } => {
            let grid = BlockGrid { dtype, importance: weighted.then(|| h.importance()) };
            let out = gptq(&grid, &w, rows, cols, h, opts).map_err(|e| tensor_err(format!("GPTQ: {e}")))?;
            let bytes = grid.pack(&out.values, &out.params, cols).map_err(|e| tensor_err(e.to_string()))?;
            result.reports.push(report(name, target, &out));
            (out.values, Quantized::Gguf { dtype, bytes })
        }
    };
    result.tensors.insert(name.to_string(), quantized);
    Ok(Some(Box::new(DenseF32::new(values.into(), rows, cols))))
}

fn report<P>(name: &str, target: Target, out: &GptqOutput<P>) -> TensorReport {
    TensorReport {
        name: name.to_string(),
        format: target.name(),
        loss: out.loss,
        damp: out.damp,
        dead_columns: out.dead_columns,
    }
}
