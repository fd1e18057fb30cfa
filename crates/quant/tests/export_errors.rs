//! Export failures name the tensor, and leave nothing behind: no output file, no temporary file, and a file already
//! at the output path untouched. Shapes a type cannot hold fall back as llama.cpp's do.

use std::path::{Path, PathBuf};

use lowbit_formats::gguf::{GgufFile, Value};
use lowbit_formats::gguf_write::{GgufWriter, TensorData};
use lowbit_formats::quantize::QuantizeError;
use lowbit_formats::DType;
use lowbit_quant::gguf_export::{export, ImatrixInput};
use lowbit_quant::imatrix::{Entry, ImatrixError, Importance};
use lowbit_quant::{FileType, QuantError};

/// A fresh directory per test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-export-errors-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Smooth, varied weights.
fn weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect()
}

/// A one-layer llama-architecture F32 GGUF with the given extra metadata and 2-D tensors (name, [rows, cols],
/// values); a norm is added so that there is an unquantized tensor too.
fn model(dir: &Path, meta: &[(&str, u32)], tensors: Vec<(&str, [usize; 2], Vec<f32>)>) -> GgufFile {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("llama".into())).unwrap();
    w.metadata("llama.block_count", Value::U32(1)).unwrap();
    for &(key, v) in meta {
        w.metadata(key, Value::U32(v)).unwrap();
    }
    w.tensor("blk.0.attn_norm.weight", DType::F32, &[256], TensorData::Owned(f32_bytes(&[1.0; 256]))).unwrap();
    for (name, shape, values) in tensors {
        w.tensor(name, DType::F32, &shape, TensorData::Owned(f32_bytes(&values))).unwrap();
    }
    let path = dir.join("source.gguf");
    w.write(&path).unwrap();
    GgufFile::open(&path).unwrap()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_nan_is_an_error_naming_the_tensor_and_leaves_no_file() {
    let dir = scratch("nan");
    let mut q = weights(256 * 256);
    q[3 * 256 + 7] = f32::NAN;
    let source = model(
        &dir,
        &[],
        vec![("blk.0.attn_k.weight", [256, 256], weights(256 * 256)), ("blk.0.attn_q.weight", [256, 256], q)],
    );
    let out = dir.join("out.gguf");
    let e = export(&source, &out, FileType::Q4KM, false, None, &|_, _| {}).unwrap_err();
    match &e {
        QuantError::Quantize { tensor, dtype, cause: QuantizeError::NonFinite { row: 3, column: 7, value } } => {
            assert_eq!((tensor.as_str(), *dtype), ("blk.0.attn_q.weight", DType::Q4K));
            assert!(value.is_nan());
        }
        other => panic!("unexpected error {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains("blk.0.attn_q.weight") && message.contains("row 3, column 7"), "{message}");
    assert_eq!(listing(&dir), ["source.gguf"]);
}

#[test]
fn an_infinity_fails_without_touching_an_existing_output() {
    let dir = scratch("inf");
    let mut down = weights(256 * 512);
    down[256 * 512 - 1] = f32::NEG_INFINITY;
    let source = model(&dir, &[], vec![("blk.0.ffn_down.weight", [256, 512], down)]);
    let out = dir.join("out.gguf");
    std::fs::write(&out, b"previous").unwrap();
    for (ftype, pure, dtype) in [(FileType::TQ1_0, true, DType::TQ1_0), (FileType::Mxfp4Moe, true, DType::MXFP4)] {
        match export(&source, &out, ftype, pure, None, &|_, _| {}).unwrap_err() {
            QuantError::Quantize {
                tensor,
                dtype: d,
                cause: QuantizeError::NonFinite { row: 255, column: 511, .. },
            } => {
                assert_eq!((tensor.as_str(), d), ("blk.0.ffn_down.weight", dtype));
            }
            other => panic!("{ftype}: unexpected error {other:?}"),
        }
        assert_eq!(std::fs::read(&out).unwrap(), b"previous");
        assert_eq!(listing(&dir), ["out.gguf", "source.gguf"]);
    }
}

#[test]
fn rows_no_type_divides_fall_back_to_f16_and_its_range_is_checked() {
    let dir = scratch("f16");
    // 100 columns: neither 256 nor 32 divides them, so llama.cpp (and lowbit) store F16.
    let mut odd = weights(4 * 100);
    let source = model(&dir, &[], vec![("blk.0.attn_q.weight", [4, 100], odd.clone())]);
    let out = dir.join("out.gguf");
    export(&source, &out, FileType::Q4KM, false, None, &|_, _| {}).unwrap();
    let written = GgufFile::open(&out).unwrap();
    assert_eq!(written.tensor_info("blk.0.attn_q.weight").unwrap().dtype, DType::F16);
    assert_eq!(written.tensor_info("blk.0.attn_norm.weight").unwrap().dtype, DType::F32);
    std::fs::remove_file(&out).unwrap();

    odd[2 * 100 + 50] = 1e6;
    let dir = scratch("f16-overflow");
    let source = model(&dir, &[], vec![("blk.0.attn_q.weight", [4, 100], odd)]);
    match export(&source, &dir.join("out.gguf"), FileType::Q4KM, false, None, &|_, _| {}).unwrap_err() {
        QuantError::Quantize {
            tensor,
            dtype: DType::F16,
            cause: QuantizeError::Overflow { row: 2, column: 50, .. },
        } => {
            assert_eq!(tensor, "blk.0.attn_q.weight")
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(listing(&dir), ["source.gguf"]);
}

#[test]
fn an_expert_tensor_without_a_layer_number_is_an_error_naming_it() {
    // llama.cpp reads an MoE model's layer from the tensor name and gives up when there is none.
    let dir = scratch("moe");
    let source =
        model(&dir, &[("llama.expert_count", 4)], vec![("ffn_down_shared.weight", [256, 256], weights(256 * 256))]);
    let e = export(&source, &dir.join("out.gguf"), FileType::Q4KM, false, None, &|_, _| {}).unwrap_err();
    assert!(matches!(&e, QuantError::Tensor { tensor, .. } if tensor == "ffn_down_shared.weight"), "{e:?}");
    assert_eq!(listing(&dir), ["source.gguf"]);
}

#[test]
fn an_imatrix_for_another_model_is_refused_before_work() {
    let dir = scratch("imatrix");
    let source = model(&dir, &[], vec![("blk.0.ffn_down.weight", [256, 256], weights(256 * 256))]);
    let out = dir.join("out.gguf");
    let entry = |name: &str, cols: usize| {
        let mut m = Importance::default();
        m.entries.insert(name.into(), Entry { sum2: vec![1.0; cols], counts: vec![1] });
        m
    };
    let narrow = entry("blk.0.ffn_down.weight", 128);
    let input = ImatrixInput { matrix: &narrow, file: "imatrix.gguf" };
    match export(&source, &out, FileType::Q4KM, false, Some(&input), &|_, _| {}).unwrap_err() {
        QuantError::Importance(ImatrixError::Columns { imatrix: 128, tensor_cols: 256, .. }) => {}
        e => panic!("{e}"),
    }
    let foreign = entry("blk.3.attn_q.weight", 256);
    let input = ImatrixInput { matrix: &foreign, file: "imatrix.gguf" };
    match export(&source, &out, FileType::Q4KM, false, Some(&input), &|_, _| {}).unwrap_err() {
        QuantError::Importance(ImatrixError::UnknownTensor(name)) => assert_eq!(name, "blk.3.attn_q.weight"),
        e => panic!("{e}"),
    }
    assert_eq!(listing(&dir), ["source.gguf"]);
}
