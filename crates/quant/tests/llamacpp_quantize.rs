//! lowbit's GGUF export of SmolLM2 and Gemma 3 against what llama.cpp's `llama-quantize` writes from the same weights,
//! for every mix (`Q2_K`, `Q3_K_S` … `Q5_K_M`, `Q6_K`, the legacy types, `TQ1_0`, `TQ2_0`, `MXFP4_MOE`, `F16`, `BF16`)
//! and every `--pure` type: the storage type of each tensor, the bytes of each tensor in each type, and whole files.
//! Fixtures in tests/data/llamacpp_*.json, made by scripts/golden/gen_quantize_llamacpp.py.

use std::collections::BTreeMap;
use std::path::Path;

use lowbit_formats::dequant::dequantize;
use lowbit_formats::gguf::GgufFile;
use lowbit_formats::quantize::quantize;
use lowbit_formats::DType;
use lowbit_quant::gguf_export::{export, planned_types};
use lowbit_quant::FileType;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    /// In llama-quantize's file order.
    tensors: Vec<String>,
    runs: BTreeMap<String, Run>,
    /// Per tensor, per storage type: the fingerprint of its bytes.
    fingerprints: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Run {
    #[serde(rename = "type")]
    ftype: String,
    pure: bool,
    file_type: u32,
    file_bytes: u64,
    file_fingerprint: String,
    /// ggml type ids, one per tensor, in `Golden::tensors` order.
    types: Vec<u32>,
}

/// The script's: zero-padded little-endian u64 words, weighted by position, as 16 hex digits.
fn fingerprint(raw: &[u8]) -> String {
    let sum = raw.chunks(8).enumerate().fold(0u64, |acc, (i, c)| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        let weight = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        acc.wrapping_add(u64::from_le_bytes(w).wrapping_mul(weight))
    });
    format!("{sum:016x}")
}

fn golden(json: &str) -> Golden {
    serde_json::from_str(json).expect("fixture parses")
}

fn dtype(name: &str) -> DType {
    (0..64).filter_map(DType::from_ggml).find(|d| d.name() == name).unwrap_or_else(|| panic!("unknown type {name}"))
}

/// The run's file type, checked against the `general.file_type` llama-quantize wrote.
fn file_type(name: &str, run: &Run) -> FileType {
    let f = FileType::parse(&run.ftype).unwrap_or_else(|| panic!("{name}: unknown file type"));
    assert_eq!(f.id(), run.file_type, "{name}: general.file_type");
    f
}

/// Every run's storage type per tensor; quick, since nothing is quantized.
fn check_types(source: &GgufFile, g: &Golden) {
    let mut failures = Vec::new();
    for (name, run) in &g.runs {
        let types = planned_types(source, file_type(name, run), run.pure, false).unwrap();
        let ours: BTreeMap<&str, &str> =
            source.tensors().iter().zip(&types).map(|(t, d)| (&*t.name, d.name())).collect();
        assert_eq!(ours.len(), g.tensors.len(), "{name}: tensor count");
        for (tensor, &want) in g.tensors.iter().zip(&run.types) {
            let want = DType::from_ggml(want).map_or("?", |d| d.name());
            let got = ours.get(tensor.as_str()).copied();
            if got != Some(want) {
                failures.push(format!("{name} {tensor}: ours {got:?}, llama.cpp {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} tensor types differ:\n{}", failures.len(), failures.join("\n"));
}

/// Every tensor in every storage type it has in any run: quantized once each (the pairs spread over the cores),
/// fingerprints compared.
fn check_bytes(source: &GgufFile, g: &Golden) {
    let work: Vec<(&String, &String, &String)> =
        g.fingerprints.iter().flat_map(|(t, by_type)| by_type.iter().map(move |(d, fp)| (t, d, fp))).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let work = &work;
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for &(tensor, type_name, want) in work.iter().skip(k).step_by(threads) {
                        let t = source.tensor_info(tensor).unwrap_or_else(|| panic!("no tensor {tensor}"));
                        let values = dequantize(t.dtype, source.tensor_data(t), t.n_elements as usize).unwrap();
                        let d = dtype(type_name);
                        let bytes = quantize(d, &values, t.dims[0] as usize, None)
                            .unwrap_or_else(|e| panic!("{tensor} {d}: {e}"));
                        if fingerprint(&bytes) != *want {
                            failures.push(format!("{tensor} {type_name}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{} tensors differ from llama.cpp's bytes:\n{}", failures.len(), failures.join("\n"));
}

/// Whole files: the F32 conversion (llama.cpp's fixtures were made from llama-quantize's F32 file, which it equals),
/// then the named runs made from it. (Made from the packaged model instead, a tensor that keeps its type is copied,
/// as llama-quantize copies it, and its bytes differ from a re-quantization of the F32 values.)
fn check_files(source: &GgufFile, g: &Golden, runs: &[&str]) {
    let dir = std::env::temp_dir().join(format!("lowbit-llamacpp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f32_path = dir.join("f32.gguf");
    export(source, &f32_path, FileType::F32, false, None, &|_, _| {}).unwrap();
    let f32_source = GgufFile::open(&f32_path).unwrap();
    for &name in std::iter::once(&"F32").chain(runs) {
        let run = &g.runs[name];
        let out = dir.join("out.gguf");
        export(&f32_source, &out, file_type(name, run), run.pure, None, &|_, _| {}).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, run.file_bytes, "{name}: file size");
        assert_eq!(fingerprint(&bytes), run.file_fingerprint, "{name}: file bytes");
        std::fs::remove_file(&out).unwrap();
    }
    drop(f32_source);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn model(name: &str) -> Option<GgufFile> {
    lowbit_testdata::model(name).map(|p| GgufFile::open(Path::new(&p)).unwrap())
}

#[test]
fn smollm2_tensor_types_match_llama_quantize() {
    let Some(source) = model(lowbit_testdata::SMOLLM2) else { return };
    check_types(&source, &golden(include_str!("data/llamacpp_smollm2.json")));
}

#[test]
fn gemma3_tensor_types_match_llama_quantize() {
    let Some(source) = model(lowbit_testdata::GEMMA3) else { return };
    check_types(&source, &golden(include_str!("data/llamacpp_gemma3.json")));
}

#[test]
fn smollm2_tensor_bytes_match_llama_quantize() {
    let Some(source) = model(lowbit_testdata::SMOLLM2) else { return };
    check_bytes(&source, &golden(include_str!("data/llamacpp_smollm2.json")));
}

#[test]
fn gemma3_tensor_bytes_match_llama_quantize() {
    let Some(source) = model(lowbit_testdata::GEMMA3) else { return };
    check_bytes(&source, &golden(include_str!("data/llamacpp_gemma3.json")));
}

#[test]
fn whole_files_match_llama_quantize() {
    if let Some(source) = model(lowbit_testdata::SMOLLM2) {
        check_files(&source, &golden(include_str!("data/llamacpp_smollm2.json")), &["Q4_K_M", "TQ1_0 --pure"]);
    }
    if let Some(source) = model(lowbit_testdata::GEMMA3) {
        check_files(&source, &golden(include_str!("data/llamacpp_gemma3.json")), &["Q3_K_M"]);
    }
}

#[test]
fn fixtures_cover_every_file_type() {
    for json in [include_str!("data/llamacpp_smollm2.json"), include_str!("data/llamacpp_gemma3.json")] {
        let g = golden(json);
        for f in FileType::ALL {
            assert!(g.runs.values().any(|r| !r.pure && FileType::parse(&r.ftype) == Some(f)), "{f}: no run");
        }
        assert!(g.runs.values().filter(|r| r.pure).count() >= 13, "fewer --pure runs than block types");
    }
}
