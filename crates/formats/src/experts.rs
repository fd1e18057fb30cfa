//! Mixture-of-experts weights as sources store them, read one expert at a time.
//!
//! A stack `blk.N.ffn_{gate_up,down}_exps` holds one matrix per expert. Hugging Face checkpoints store it as
//! MXFP4 halves (`.blocks` U8 `[experts, rows, cols/32, 16]`, `.scales` U8 `[experts, rows, cols/32]`) or as
//! `.weight` in transformers' orientation `[experts, cols, rows]` (`x @ W`); lowbit's native directories and GGUF
//! files store `.weight` as Linear weights, `[experts, rows, cols]`. GGUF files (llama.cpp's converter) split the
//! fused gate/up stack into `ffn_gate_exps` and `ffn_up_exps`; seen through the fused name, their rows interleave
//! again (gate row i is fused row 2i, up row i is 2i + 1). [`ExpertStack::expert_f32`] gives expert `e` as a
//! row-major `[rows, cols]` Linear weight whatever the storage, so that quantizers and loaders hold one expert
//! at a time.

use crate::dequant::{dequantize, dequantize_split_mxfp4};
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::source::{ModelSource, TensorRef};

/// How a stack's bytes are laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackStorage {
    /// Hugging Face MXFP4: codes and scales tensors.
    Mxfp4 { blocks: String, scales: String },
    /// One tensor per stack, each expert's matrix transposed (`[cols, rows]`, transformers' layout).
    Transposed { tensor: String, dtype: DType },
    /// One tensor per stack, each expert's matrix as a Linear weight (`[rows, cols]`).
    Rows { tensor: String, dtype: DType },
    /// A native directory's group-quantized stack (its rows, expert after expert).
    Group { tensor: String },
    /// A native directory's NF4 stack (each expert quantized on its own).
    Nf4 { tensor: String },
    /// A native directory's palettized stack (its rows, expert after expert, no palette shared by two).
    Palette { tensor: String },
    /// A GGUF file's gate and up stacks (`[experts, ff, cols]` each, one storage type) read as the fused one.
    SplitGateUp { gate: String, up: String, dtype: DType },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertStack {
    /// The stack's canonical weight name (`blk.3.ffn_down_exps.weight`).
    pub name: String,
    pub experts: usize,
    /// Rows and columns of each expert's Linear weight.
    pub rows: usize,
    pub cols: usize,
    pub storage: StackStorage,
}

/// The `.scales` half of an MXFP4 stack, which [`ExpertStack::of`] reads through its `.blocks` half.
pub fn is_mxfp4_scales(source: &ModelSource, name: &str) -> bool {
    name.strip_suffix(".scales").is_some_and(|base| {
        base.ends_with("_exps") && source.tensor_names().contains(&format!("{base}.blocks").as_str())
    })
}

impl ExpertStack {
    /// The stack source tensor `name` begins (its `.blocks` half, or its one `.weight` tensor); `None` for any
    /// other tensor.
    pub fn of(source: &ModelSource, name: &str) -> Result<Option<ExpertStack>> {
        let invalid = |what: String| FormatError::Invalid(format!("tensor {name}: {what}"));
        if let Some(base) = name.strip_suffix(".blocks").filter(|b| b.ends_with("_exps")) {
            let blocks = source.tensor(name)?;
            let scales_name = format!("{base}.scales");
            let scales = source.tensor(&scales_name)?;
            let [experts, rows, nb, 16] = blocks.shape[..] else {
                return Err(invalid(format!("MXFP4 codes of shape {:?}", blocks.shape)));
            };
            if blocks.dtype != DType::U8 || scales.dtype != DType::U8 || scales.shape != [experts, rows, nb] {
                return Err(invalid(format!("scales {:?} {:?} do not match", scales.dtype, scales.shape)));
            }
            let storage = StackStorage::Mxfp4 { blocks: name.to_string(), scales: scales_name };
            return Ok(Some(ExpertStack { name: format!("{base}.weight"), experts, rows, cols: nb * 32, storage }));
        }
        if !name.ends_with("_exps.weight") {
            return Ok(None);
        }
        let t = source.tensor(name)?;
        let [experts, a, b] = t.shape[..] else { return Err(invalid(format!("expert stack of shape {:?}", t.shape))) };
        let (tensor, dtype) = (name.to_string(), t.dtype);
        let (rows, cols, storage) = match source {
            ModelSource::Native(_) if source.group_view(name).is_some() => (a, b, StackStorage::Group { tensor }),
            ModelSource::Native(_) if source.nf4_stack(name).is_some() => (a, b, StackStorage::Nf4 { tensor }),
            ModelSource::Native(_) if source.palette_view(name).is_some() => (a, b, StackStorage::Palette { tensor }),
            ModelSource::Native(_) | ModelSource::Gguf(_) => (a, b, StackStorage::Rows { tensor, dtype }),
            _ => (b, a, StackStorage::Transposed { tensor, dtype }),
        };
        Ok(Some(ExpertStack { name: name.to_string(), experts, rows, cols, storage }))
    }

    /// The stack whose canonical weight name is `weight` (`blk.3.ffn_down_exps.weight`), stored either way.
    pub fn named(source: &ModelSource, weight: &str) -> Result<ExpertStack> {
        let blocks = weight.strip_suffix(".weight").map(|base| format!("{base}.blocks"));
        let names = source.tensor_names();
        let first = match blocks {
            Some(b) if names.contains(&b.as_str()) => b,
            _ => weight.to_string(),
        };
        // Only a GGUF file splits the stack; anywhere else a missing fused stack is missing.
        let split = matches!(source, ModelSource::Gguf(_)) && !names.contains(&first.as_str());
        if let Some(block) = weight.strip_suffix(".ffn_gate_up_exps.weight").filter(|_| split) {
            return ExpertStack::split_gate_up(source, weight, block);
        }
        ExpertStack::of(source, &first)?.ok_or_else(|| FormatError::MissingTensor(weight.to_string()))
    }

    /// The fused stack `weight` made of a GGUF file's `{block}.ffn_gate_exps.weight` and `{block}.ffn_up_exps.weight`.
    fn split_gate_up(source: &ModelSource, weight: &str, block: &str) -> Result<ExpertStack> {
        let (gate, up) = (format!("{block}.ffn_gate_exps.weight"), format!("{block}.ffn_up_exps.weight"));
        let (g, u) = (source.tensor(&gate)?, source.tensor(&up)?);
        let [experts, ff, cols] = g.shape[..] else {
            return Err(FormatError::Invalid(format!("tensor {gate}: expert stack of shape {:?}", g.shape)));
        };
        if (u.shape.as_slice(), u.dtype) != (g.shape.as_slice(), g.dtype) {
            return Err(FormatError::Invalid(format!(
                "tensors {gate} ({} {:?}) and {up} ({} {:?}) differ",
                g.dtype, g.shape, u.dtype, u.shape
            )));
        }
        let storage = StackStorage::SplitGateUp { gate, up, dtype: g.dtype };
        Ok(ExpertStack { name: weight.to_string(), experts, rows: 2 * ff, cols, storage })
    }

    /// Expert `e`'s part of one of the stack's tensors (`tensor`): its bytes, whose pages the caller may hand back
    /// with [`ModelSource::release`] once it has what it needs.
    pub fn part<'s>(&self, source: &'s ModelSource, tensor: &str, e: usize) -> Result<TensorRef<'s>> {
        if e >= self.experts {
            return Err(FormatError::Invalid(format!("{}: expert {e} of {}", self.name, self.experts)));
        }
        let t = source.tensor(tensor)?;
        let per = t.data.len() / self.experts;
        Ok(TensorRef { data: &t.data[e * per..(e + 1) * per], ..t })
    }

    /// Expert `e` in its storage type, rows outermost: the bytes of a `[rows, cols]` matrix of that type, for
    /// stacks stored as rows (`Rows`, `SplitGateUp`); `None` for other storage.
    pub fn expert_rows(&self, source: &ModelSource, e: usize) -> Result<Option<(DType, Vec<u8>)>> {
        match &self.storage {
            StackStorage::Rows { tensor, dtype } => {
                let t = self.part(source, tensor, e)?;
                let bytes = t.data.to_vec();
                source.release(&t);
                Ok(Some((*dtype, bytes)))
            }
            StackStorage::SplitGateUp { gate, up, dtype } => {
                let (g, u) = (self.part(source, gate, e)?, self.part(source, up, e)?);
                let row = (g.data.len() / (self.rows / 2).max(1)).max(1);
                let mut fused = Vec::with_capacity(g.data.len() + u.data.len());
                for (a, b) in g.data.chunks_exact(row).zip(u.data.chunks_exact(row)) {
                    fused.extend_from_slice(a);
                    fused.extend_from_slice(b);
                }
                source.release(&g);
                source.release(&u);
                Ok(Some((*dtype, fused)))
            }
            _ => Ok(None),
        }
    }

    /// Expert `e`'s weight, row-major `[rows, cols]`. Tells the source its bytes may leave memory afterwards.
    pub fn expert_f32(&self, source: &ModelSource, e: usize) -> Result<Vec<f32>> {
        if e >= self.experts {
            return Err(FormatError::Invalid(format!("{}: expert {e} of {}", self.name, self.experts)));
        }
        let n = self.rows * self.cols;
        match &self.storage {
            StackStorage::Mxfp4 { blocks, scales } => {
                let (b, s) = (self.part(source, blocks, e)?, self.part(source, scales, e)?);
                let values = dequantize_split_mxfp4(b.data, s.data).filter(|v| v.len() == n).ok_or_else(|| {
                    FormatError::Invalid(format!("{}: MXFP4 parts do not hold {n} values", self.name))
                })?;
                source.release(&b);
                Ok(values)
            }
            StackStorage::Group { tensor } => {
                let view = source.group_view(tensor).ok_or_else(|| FormatError::MissingTensor(tensor.clone()))?;
                let expert = view.rows(e * self.rows, (e + 1) * self.rows).filter(|v| v.cols == self.cols);
                expert.map(|v| v.dequantize()).ok_or_else(|| {
                    FormatError::Invalid(format!(
                        "{}: {}×{} rows for {} experts",
                        self.name, view.rows, view.cols, self.experts
                    ))
                })
            }
            StackStorage::Nf4 { tensor } => {
                let stack = source.nf4_stack(tensor).ok_or_else(|| FormatError::MissingTensor(tensor.clone()))?;
                Ok(stack.expert(e)?.dequantize())
            }
            StackStorage::Palette { .. } => Ok(self.palette_expert(source, e)?.dequantize()),
            StackStorage::SplitGateUp { dtype, .. } => {
                let bytes = self.expert_rows(source, e)?.map(|(_, b)| b).unwrap_or_default();
                Ok(dequantize(*dtype, &bytes, n)?)
            }
            StackStorage::Rows { tensor, dtype } | StackStorage::Transposed { tensor, dtype } => {
                let t = self.part(source, tensor, e)?;
                let raw = dequantize(*dtype, t.data, n)?;
                source.release(&t);
                if matches!(self.storage, StackStorage::Rows { .. }) {
                    return Ok(raw);
                }
                let (rows, cols) = (self.rows, self.cols);
                Ok((0..rows * cols).map(|i| raw[(i % cols) * rows + i / cols]).collect())
            }
        }
    }

    /// Expert `e` of a palettized stack, as a matrix of its own.
    pub fn palette_expert<'s>(&self, source: &'s ModelSource, e: usize) -> Result<crate::native::PaletteView<'s>> {
        let StackStorage::Palette { tensor } = &self.storage else {
            return Err(FormatError::Invalid(format!("{}: not a palettized stack", self.name)));
        };
        let view = source.palette_view(tensor).ok_or_else(|| FormatError::MissingTensor(tensor.clone()))?;
        view.rows(e * self.rows, (e + 1) * self.rows).filter(|v| v.cols == self.cols).ok_or_else(|| {
            FormatError::Invalid(format!(
                "{}: {}×{} rows for {} experts",
                self.name, view.rows, view.cols, self.experts
            ))
        })
    }
}
