//! The `Linear` seam: model code multiplies by weights only through this trait, so a quantized
//! storage format plugs in by implementing it, without touching any architecture.

use std::sync::Arc;

use lowbit_formats::source::TensorRef;
use lowbit_formats::{DType, FormatError};

use crate::mxfp4_linear::{Mxfp4Linear, WeightBytes};

pub trait Linear: Send + Sync {
    fn in_features(&self) -> usize;
    fn out_features(&self) -> usize;
    /// `out[t·out_features + o] = Σ_i x[t·in_features + i] · W[o, i]` for `n` tokens.
    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]);
    /// How the weight is stored, for reports.
    fn storage(&self) -> String;
    /// Bytes the weight occupies in memory.
    fn weight_bytes(&self) -> usize;
}

/// An f32 weight matrix `[out_features, in_features]`.
pub struct DenseF32 {
    weight: Arc<[f32]>,
    rows: usize,
    cols: usize,
}

impl DenseF32 {
    pub fn new(weight: Arc<[f32]>, rows: usize, cols: usize) -> DenseF32 {
        assert_eq!(weight.len(), rows * cols, "DenseF32: weight length does not match its shape");
        DenseF32 { weight, rows, cols }
    }

    pub fn weight(&self) -> &Arc<[f32]> {
        &self.weight
    }
}

impl Linear for DenseF32 {
    fn in_features(&self) -> usize {
        self.cols
    }

    fn out_features(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        lowbit_kernels::matmul_f32(x, &self.weight, out, n, self.cols, self.rows);
    }

    fn storage(&self) -> String {
        "F32".into()
    }

    fn weight_bytes(&self) -> usize {
        self.weight.len() * 4
    }
}

/// Turns a stored weight tensor into a `Linear`. The loader calls this for every projection;
/// quantized runtimes supply their own implementation.
pub trait LinearFactory {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError>;

    /// A `rows`×`cols` matrix in Hugging Face's split MXFP4 (`codes`, `scales`; GPT-OSS's experts) named `name`.
    /// By default it stays MXFP4 on the integer kernels, wherever the runtime keeps other formats packed.
    fn build_split_mxfp4(
        &self,
        name: &str,
        codes: WeightBytes,
        scales: WeightBytes,
        rows: usize,
        cols: usize,
    ) -> Result<Box<dyn Linear>, FormatError> {
        let (nc, ns) = (codes.len(), scales.len());
        match Mxfp4Linear::new(codes, scales, rows, cols) {
            Some(l) => Ok(Box::new(l)),
            None => Err(split_mxfp4_error(name, nc, ns, rows, cols)),
        }
    }
}

fn split_mxfp4_error(name: &str, codes: usize, scales: usize, rows: usize, cols: usize) -> FormatError {
    FormatError::Invalid(format!(
        "tensor {name}: {codes} code bytes and {scales} scales are not an MXFP4 matrix of {rows}×{cols}"
    ))
}

/// Dequantizes every weight to f32: the reference runtime.
pub struct F32Factory;

impl LinearFactory for F32Factory {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError> {
        let (rows, cols) = matrix_shape(tensor)?;
        let w = lowbit_formats::dequant::dequantize(tensor.dtype, tensor.data, rows * cols)?;
        Ok(Box::new(DenseF32::new(w.into(), rows, cols)))
    }

    fn build_split_mxfp4(
        &self,
        name: &str,
        codes: WeightBytes,
        scales: WeightBytes,
        rows: usize,
        cols: usize,
    ) -> Result<Box<dyn Linear>, FormatError> {
        let w = lowbit_formats::dequant::dequantize_split_mxfp4(&codes, &scales)
            .filter(|w| Some(w.len()) == rows.checked_mul(cols))
            .ok_or_else(|| split_mxfp4_error(name, codes.len(), scales.len(), rows, cols))?;
        Ok(Box::new(DenseF32::new(w.into(), rows, cols)))
    }
}

/// The runtime of calibration (the layer-by-layer driver, importance matrices, activation ranges): f32 weights as
/// [`F32Factory`], except split MXFP4 expert stacks (GPT-OSS's), which stay MXFP4 on the integer kernels, memory-
/// mapped: in f32 they would take 76 GB for GPT-OSS-20B. The layer-by-layer driver never takes a result from them:
/// it rounds each expert from the source's values and runs the expert's block on the rounded copies. The
/// importance matrix and activation ranges see later blocks' inputs as the MXFP4 kernels compute them (int8
/// activations, as the runtime does).
pub struct CalibrationFactory;

impl LinearFactory for CalibrationFactory {
    fn build(&self, tensor: &TensorRef<'_>) -> Result<Box<dyn Linear>, FormatError> {
        F32Factory.build(tensor)
    }
}

/// `[rows, cols]` of a 2-D tensor, or a typed error naming it.
pub fn matrix_shape(tensor: &TensorRef<'_>) -> Result<(usize, usize), FormatError> {
    match tensor.shape[..] {
        [rows, cols] if rows > 0 && cols > 0 => Ok((rows, cols)),
        _ => Err(FormatError::Invalid(format!(
            "tensor {}: expected a 2-D weight, found shape {:?} ({})",
            tensor.name,
            tensor.shape,
            if tensor.dtype == DType::F32 { "F32" } else { tensor.dtype.name() }
        ))),
    }
}
