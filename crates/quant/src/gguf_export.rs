//! Re-quantizing a GGUF model to one storage type, one tensor at a time.
//!
//! Rules (llama.cpp's `llama-quantize --pure`, including `tensor_type_fallback`): 1-D tensors
//! (norms, biases) stay F32; every matrix gets the target type, or, when its rows are not a
//! multiple of that type's block length, llama.cpp's fallback (Q2_K, Q3_K → Q4_0; Q4_K → Q5_0;
//! Q5_K → Q5_1; Q6_K → Q8_0; F16 when even the fallback does not fit). The output matches
//! llama.cpp's byte for byte (tests/llamacpp_pure.rs). Tensors are read, quantized and written
//! in order, so memory holds one tensor at a time.

use std::path::Path;

use lowbit_formats::dequant::dequantize;
use lowbit_formats::gguf::{GgufFile, Value};
use lowbit_formats::gguf_write::{GgufWriter, TensorData};
use lowbit_formats::quantize::quantize;
use lowbit_formats::{DType, FormatError};

/// The type a tensor of `shape` (row-major) gets when the model is converted to `target`.
pub fn tensor_type(shape: &[usize], target: DType) -> DType {
    let row_len = shape.last().copied().unwrap_or(0);
    if shape.len() < 2 {
        return DType::F32;
    }
    if row_len % target.block_len() == 0 {
        return target;
    }
    let fallback = match target {
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        DType::Q2K | DType::Q3K => DType::Q4_0,
        _ => DType::F16,
    };
    if row_len % fallback.block_len() == 0 {
        fallback
    } else {
        DType::F16
    }
}

/// llama.cpp's `general.file_type` (LLAMA_FTYPE) for a conversion to `target`.
fn file_type(target: DType) -> Option<u32> {
    Some(match target {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        DType::Q2K => 10,
        DType::Q3K => 11,
        DType::Q4K => 14,
        DType::Q5K => 16,
        DType::Q6K => 18,
        DType::BF16 => 32,
        DType::U8 | DType::I8 => return None,
    })
}

/// What a conversion wrote.
#[derive(Clone, Debug, Default)]
pub struct ExportSummary {
    pub tensors: usize,
    pub bytes: u64,
    /// Tensors per storage type, in first-seen order.
    pub per_type: Vec<(DType, usize)>,
}

/// Writes `source` with every matrix converted to `target` (see the module rules) to `out`,
/// atomically. `progress(i, name)` is called as tensor `i` is written.
pub fn export(
    source: &GgufFile,
    out: &Path,
    target: DType,
    progress: &(dyn Fn(usize, &str) + Sync),
) -> Result<ExportSummary, FormatError> {
    let ftype = file_type(target).ok_or_else(|| {
        FormatError::Invalid(format!("{target} is not a storage type a GGUF model can be converted to"))
    })?;
    let mut w = GgufWriter::new();
    w.copy_metadata_from(source, &["general.file_type", "general.quantization_version"])?;
    w.metadata("general.file_type", Value::U32(ftype))?;
    w.metadata("general.quantization_version", Value::U32(2))?;
    let mut summary = ExportSummary::default();
    for (i, t) in source.tensors().iter().enumerate() {
        let shape = t.shape();
        let dtype = tensor_type(&shape, target);
        let n = t.n_elements as usize;
        let row_len = shape.last().copied().unwrap_or(n).max(1);
        let name = t.name.as_str();
        let data = if dtype == t.dtype {
            TensorData::Borrowed(source.tensor_data(t))
        } else {
            let raw = source.tensor_data(t);
            TensorData::deferred(move |sink| {
                progress(i, name);
                let values = dequantize(t.dtype, raw, n).map_err(|e| in_tensor(name, e))?;
                let bytes = quantize(dtype, &values, row_len, None).map_err(|e| in_tensor(name, e))?;
                sink.write(&bytes)
            })
        };
        w.tensor(name, dtype, &shape, data)?;
        summary.tensors += 1;
        summary.bytes += dtype.storage_bytes(n as u64)?;
        match summary.per_type.iter_mut().find(|(d, _)| *d == dtype) {
            Some((_, c)) => *c += 1,
            None => summary.per_type.push((dtype, 1)),
        }
    }
    w.write(out)?;
    Ok(summary)
}

/// Prefixes an error with the tensor it happened in.
fn in_tensor(name: &str, e: FormatError) -> FormatError {
    match e {
        FormatError::Invalid(what) => FormatError::Invalid(format!("tensor {name}: {what}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_that_do_not_fit_fall_back_like_llama_cpp() {
        assert_eq!(tensor_type(&[576], DType::Q4K), DType::F32);
        assert_eq!(tensor_type(&[1536, 576], DType::Q4K), DType::Q5_0);
        assert_eq!(tensor_type(&[576, 1536], DType::Q4K), DType::Q4K);
        assert_eq!(tensor_type(&[576, 576], DType::Q6K), DType::Q8_0);
        assert_eq!(tensor_type(&[576, 576], DType::Q5K), DType::Q5_1);
        assert_eq!(tensor_type(&[576, 576], DType::Q8_0), DType::Q8_0);
        assert_eq!(tensor_type(&[10, 100], DType::Q8_0), DType::F16);
    }
}
