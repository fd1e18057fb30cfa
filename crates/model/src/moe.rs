//! GPT-OSS's mixture-of-experts MLP: a router picks `experts_per_token` of the block's experts for each token
//! and weighs them by a softmax over the picked logits only; each expert is a clamped SwiGLU whose gate and up
//! rows are interleaved in one matrix, with biases on both of its projections.
//!
//! Experts are `Linear`s like every other projection, one per expert and matrix, so their storage (MXFP4 kept
//! mapped, f32, or any quantized format) is the factory's choice. A batch of tokens is grouped by expert: each
//! selected expert multiplies all of its tokens at once.

use lowbit_formats::config::ModelConfig;
use lowbit_formats::experts::{ExpertStack, StackStorage};
use lowbit_formats::source::TensorRef;
use lowbit_formats::{DType, FormatError};

use crate::calib::{ExpertMatrix, Site};
use crate::error::ModelError;
use crate::group_linear::GroupLinear;
use crate::linear::{DenseF32, Linear};
use crate::mxfp4_linear::WeightBytes;
use crate::transformer::{add_assign, Loader};

/// GPT-OSS's SwiGLU: the gate is clamped above, the linear half on both sides, then shifted by one.
const SWIGLU_LIMIT: f32 = 7.0;
const SWIGLU_ALPHA: f32 = 1.702;

/// Sees an expert's input rows: (site, expert, experts, rows, row count).
pub(crate) type ExpertObserver<'a> = dyn FnMut(Site, usize, usize, &[f32], usize) + 'a;

pub(crate) struct Moe {
    /// `[experts, hidden]`, kept in f32: routing decides which weights run at all (GPT-OSS's release keeps
    /// it unquantized too).
    router: DenseF32,
    router_bias: Vec<f32>,
    /// Per expert, `[2·ff, hidden]`: row 2i is gate i, row 2i + 1 is up i.
    gate_up: Vec<Box<dyn Linear>>,
    /// `[experts, 2·ff]`.
    gate_up_bias: Vec<f32>,
    /// Per expert, `[hidden, ff]`.
    down: Vec<Box<dyn Linear>>,
    /// `[experts, hidden]`.
    down_bias: Vec<f32>,
    top_k: usize,
}

impl Moe {
    pub(crate) fn load(l: &Loader, block: usize, config: &ModelConfig) -> Result<Moe, ModelError> {
        let moe =
            config.moe.as_ref().ok_or_else(|| ModelError::Unsupported("a MoE block without MoE config".into()))?;
        let (d, ff, e) = (config.hidden_size, config.intermediate_size, moe.n_experts);
        let n = |s: &str| format!("blk.{block}.{s}");
        let (router_shape, router) = l.source.tensor_f32(&n("ffn_gate_inp.weight"))?;
        if router_shape != [e, d] {
            return Err(ModelError::Shape {
                tensor: n("ffn_gate_inp.weight"),
                expected: vec![e, d],
                found: router_shape,
            });
        }
        Ok(Moe {
            router: DenseF32::new(router.into(), e, d),
            router_bias: l.vector(&n("ffn_gate_inp.bias"), e)?,
            gate_up: experts(l, &n("ffn_gate_up_exps"), e, 2 * ff, d)?,
            gate_up_bias: gate_up_bias(l, block, e * 2 * ff)?,
            down: experts(l, &n("ffn_down_exps"), e, d, ff)?,
            down_bias: l.vector(&n("ffn_down_exps.bias"), e * d)?,
            top_k: moe.experts_per_token,
        })
    }

    /// Router logits of `n` normed rows `h`, `[n, experts]`.
    pub(crate) fn router_logits(&self, h: &[f32], n: usize) -> Vec<f32> {
        let e = self.router_bias.len();
        let mut logits = vec![0f32; n * e];
        self.router.forward(h, n, &mut logits);
        logits.chunks_exact_mut(e).for_each(|row| add_assign(row, &self.router_bias));
        logits
    }

    /// The MLP's output for `n` normed rows `h`: what it adds to the residual, `[n, hidden]`. `observe(site, expert,
    /// experts, x, m)` sees each selected expert's inputs (`Site::MlpIn` for gate/up, `Site::MlpOut` for down).
    pub(crate) fn forward(&self, h: &[f32], n: usize, observe: &mut ExpertObserver) -> Vec<f32> {
        let d = self.router.in_features();
        let ff = self.down.first().map_or(0, |l| l.in_features());
        let logits = self.router_logits(h, n);
        let mut tokens_of: Vec<Vec<(usize, f32)>> = vec![Vec::new(); self.gate_up.len()];
        for (t, row) in logits.chunks_exact(self.router_bias.len()).enumerate() {
            for (expert, weight) in route(row, self.top_k) {
                tokens_of[expert].push((t, weight));
            }
        }
        let mut out = vec![0f32; n * d];
        for (expert, tokens) in tokens_of.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let m = tokens.len();
            let mut x = Vec::with_capacity(m * d);
            tokens.iter().for_each(|&(t, _)| x.extend_from_slice(&h[t * d..(t + 1) * d]));
            observe(Site::MlpIn, expert, self.gate_up.len(), &x, m);
            let mut gu = vec![0f32; m * 2 * ff];
            self.gate_up[expert].forward(&x, m, &mut gu);
            let bias = &self.gate_up_bias[expert * 2 * ff..(expert + 1) * 2 * ff];
            let act: Vec<f32> = gu
                .chunks_exact(2 * ff)
                .flat_map(|row| {
                    row.chunks_exact(2).zip(bias.chunks_exact(2)).map(|(p, b)| swiglu(p[0] + b[0], p[1] + b[1]))
                })
                .collect();
            observe(Site::MlpOut, expert, self.gate_up.len(), &act, m);
            let mut y = vec![0f32; m * d];
            self.down[expert].forward(&act, m, &mut y);
            let bias = &self.down_bias[expert * d..(expert + 1) * d];
            for (&(t, weight), row) in tokens.iter().zip(y.chunks_exact(d)) {
                for ((o, &v), &b) in out[t * d..(t + 1) * d].iter_mut().zip(row).zip(bias) {
                    *o += weight * (v + b);
                }
            }
        }
        out
    }

    pub(crate) fn n_experts(&self) -> usize {
        self.gate_up.len()
    }

    /// Multiplies the router's input columns by `s` (the inverse of a scale divided out of the MLP norm) and
    /// returns its new weight, `[experts, hidden]`.
    pub(crate) fn scale_router_inputs(&mut self, s: &[f32]) -> Vec<f32> {
        let (rows, cols) = (self.router.out_features(), self.router.in_features());
        let mut w = self.router.weight().to_vec();
        crate::calib::scale_columns(&mut w, s);
        self.router = DenseF32::new(w.clone().into(), rows, cols);
        w
    }

    pub(crate) fn expert_mut(&mut self, m: ExpertMatrix, expert: usize) -> Option<&mut Box<dyn Linear>> {
        match m {
            ExpertMatrix::GateUp => self.gate_up.get_mut(expert),
            ExpertMatrix::Down => self.down.get_mut(expert),
        }
    }

    /// The router's bytes and the mean bytes of `top_k` experts: what one token reads.
    pub(crate) fn bytes_per_token(&self) -> usize {
        let experts: usize = self.gate_up.iter().chain(&self.down).map(|l| l.weight_bytes()).sum();
        experts * self.top_k / self.gate_up.len().max(1) + self.router.weight_bytes()
    }

    pub(crate) fn weight_bytes(&self) -> usize {
        let experts: usize = self.gate_up.iter().chain(&self.down).map(|l| l.weight_bytes()).sum();
        experts + self.router.weight_bytes()
    }
}

/// The `k` experts with the largest logits (ties to the lower index, as a stable sort) and their weights: a
/// softmax over the chosen logits only.
pub(crate) fn route(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(k);
    let top = order.first().map_or(0.0, |&i| logits[i]);
    let exps: Vec<f32> = order.iter().map(|&i| (logits[i] - top).exp()).collect();
    let sum: f32 = exps.iter().sum();
    order.into_iter().zip(exps).map(|(i, e)| (i, e / sum)).collect()
}

/// gate·σ(1.702·gate)·(up + 1) with gate ≤ 7 and |up| ≤ 7 (comparisons keep a NaN a NaN, as torch's clamp does).
fn swiglu(gate: f32, up: f32) -> f32 {
    let g = if gate > SWIGLU_LIMIT { SWIGLU_LIMIT } else { gate };
    let u = up.clamp(-SWIGLU_LIMIT, SWIGLU_LIMIT);
    g / (1.0 + (-SWIGLU_ALPHA * g).exp()) * (u + 1.0)
}

/// `[experts, 2·ff]` with gate and up interleaved as in the fused matrix: the fused tensor, or a GGUF file's gate and
/// up biases (`[experts, ff]` each).
fn gate_up_bias(l: &Loader, block: usize, len: usize) -> Result<Vec<f32>, ModelError> {
    let fused = format!("blk.{block}.ffn_gate_up_exps.bias");
    if l.source.tensor_names().contains(&fused.as_str()) {
        return l.vector(&fused, len);
    }
    let gate = l.vector(&format!("blk.{block}.ffn_gate_exps.bias"), len / 2)?;
    let up = l.vector(&format!("blk.{block}.ffn_up_exps.bias"), len / 2)?;
    Ok(gate.iter().zip(&up).flat_map(|(&g, &u)| [g, u]).collect())
}

/// One `Linear` per expert of the stack `base` (`{base}.blocks`/`.scales` in MXFP4, or `{base}.weight`), each
/// `rows`×`cols`. MXFP4 stays in the file's mapped pages, a native group stack keeps its format, anything else
/// (a GGUF file's experts among them) goes through the factory one expert at a time.
fn experts(l: &Loader, base: &str, e: usize, rows: usize, cols: usize) -> Result<Vec<Box<dyn Linear>>, ModelError> {
    let stack = ExpertStack::named(l.source, &format!("{base}.weight"))?;
    if (stack.experts, stack.rows, stack.cols) != (e, rows, cols) {
        return Err(ModelError::Shape {
            tensor: stack.name,
            expected: vec![e, rows, cols],
            found: vec![stack.experts, stack.rows, stack.cols],
        });
    }
    match &stack.storage {
        StackStorage::Mxfp4 { blocks, scales } => {
            let part = |name: &str, i: usize| -> Result<WeightBytes, ModelError> {
                let t = l.source.tensor(name)?;
                let len = t.data.len() / e;
                Ok(match l.source.mapped(name).and_then(|m| m.slice(i * len..(i + 1) * len)) {
                    Some(m) => WeightBytes::Mapped(m),
                    None => WeightBytes::Owned(t.data[i * len..(i + 1) * len].to_vec()),
                })
            };
            (0..e)
                .map(|i| {
                    let name = format!("{base}[{i}]");
                    Ok(l.factory.build_split_mxfp4(&name, part(blocks, i)?, part(scales, i)?, rows, cols)?)
                })
                .collect()
        }
        StackStorage::Group { tensor } => {
            let view = l.source.group_view(tensor).ok_or_else(|| FormatError::MissingTensor(tensor.clone()))?;
            let act_scale = l.source.act_scale(tensor);
            (0..e)
                .map(|i| {
                    let v = view.rows(i * rows, (i + 1) * rows).ok_or_else(|| ModelError::Shape {
                        tensor: tensor.clone(),
                        expected: vec![e * rows, cols],
                        found: vec![view.rows, view.cols],
                    })?;
                    Ok(Box::new(GroupLinear::in_place(l.source, &v, act_scale)) as Box<dyn Linear>)
                })
                .collect()
        }
        StackStorage::Nf4 { tensor } => {
            let stack = l.source.nf4_stack(tensor).ok_or_else(|| FormatError::MissingTensor(tensor.clone()))?;
            (0..e)
                .map(|i| Ok(Box::new(GroupLinear::nf4_in_place(l.source, &stack.expert(i)?)) as Box<dyn Linear>))
                .collect()
        }
        StackStorage::Palette { .. } => (0..e)
            .map(|i| {
                Ok(Box::new(GroupLinear::palette_in_place(l.source, &stack.palette_expert(l.source, i)?))
                    as Box<dyn Linear>)
            })
            .collect(),
        _ => (0..e)
            .map(|i| {
                // Row-stored experts keep their storage type (a GGUF file's blocks); transposed ones become f32 rows.
                let (dtype, bytes) = match stack.expert_rows(l.source, i)? {
                    Some(rows) => rows,
                    None => (DType::F32, stack.expert_f32(l.source, i)?.iter().flat_map(|v| v.to_le_bytes()).collect()),
                };
                let name = format!("{}[{i}]", stack.name);
                Ok(l.factory.build(&TensorRef { name: &name, dtype, shape: vec![rows, cols], data: &bytes })?)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_softmaxes_the_chosen_logits_only() {
        let r = route(&[0.0, 3.0, 1.0, 3.0], 2);
        assert_eq!((r[0].0, r[1].0), (1, 3));
        assert!((r[0].1 - 0.5).abs() < 1e-7 && (r[1].1 - 0.5).abs() < 1e-7);
        let r = route(&[0.0, 2.0, 1.0], 2);
        let e = (-1f32).exp();
        assert_eq!((r[0].0, r[1].0), (1, 2));
        assert!((r[1].1 - e / (1.0 + e)).abs() < 1e-7);
    }

    #[test]
    fn swiglu_clamps_and_shifts() {
        assert_eq!(swiglu(0.0, 5.0), 0.0);
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert!((swiglu(10.0, 20.0) - 7.0 * sig(1.702 * 7.0) * 8.0).abs() < 1e-5);
        assert!((swiglu(1.0, -20.0) - sig(1.702) * -6.0).abs() < 1e-6);
        assert!(swiglu(f32::NAN, 1.0).is_nan());
    }
}
