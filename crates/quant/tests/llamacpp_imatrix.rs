//! Importance matrices against llama.cpp's: the GGUF imatrix file read and written back byte for byte, lowbit's
//! collection on the same chunks against `llama-imatrix`'s, and whole GGUF files quantized with that imatrix against
//! `llama-quantize --imatrix`'s (SHA-256). Fixtures in tests/data/imatrix_*, made by
//! scripts/golden/gen_imatrix_llamacpp.py.

use std::path::Path;

use lowbit_formats::gguf::GgufFile;
use lowbit_model::{F32Factory, Model};
use lowbit_quant::calib_data::{self, CalibSpec, TokenizerInfo};
use lowbit_quant::gguf_export::{export, ImatrixInput};
use lowbit_quant::imatrix::Importance;
use lowbit_quant::FileType;
use lowbit_runtime::tokenizer::Tokenizer;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Golden {
    imatrix: String,
    calib: String,
    chunks: usize,
    ctx: usize,
    runs: std::collections::BTreeMap<String, Run>,
}

#[derive(Deserialize)]
struct Run {
    bytes: u64,
    sha256: String,
}

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("data/imatrix_llamacpp.json")).expect("fixture parses")
}

fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-imatrix-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn llama_imatrix_file_round_trips_byte_for_byte() {
    let g = golden();
    let path = data(&g.imatrix);
    let m = Importance::read(&path).unwrap();
    assert_eq!((m.chunk_count, m.chunk_size), (g.chunks as u32, g.ctx as u32));
    assert_eq!(m.datasets, std::slice::from_ref(&g.calib));
    // SmolLM2's 30 blocks × 7 matrices; each saw every token.
    assert_eq!(m.entries.len(), 30 * 7);
    assert!(m.entries.values().all(|e| e.counts == [(g.chunks * g.ctx) as u64]));
    let out = scratch("round-trip").join("back.gguf");
    m.write(&out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn collection_matches_llama_imatrix() {
    let Some(model_path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let g = golden();
    let source = lowbit_formats::source::ModelSource::open(&model_path).unwrap();
    let tok = Tokenizer::from_gguf(source.gguf().unwrap()).unwrap();
    let tokenize = |text: &str| tok.encode(text, false).map_err(|e| e.to_string());
    let info = TokenizerInfo {
        vocab: source.config().unwrap().vocab_size,
        bos: tok.adds_bos().then(|| tok.bos_id()).flatten(),
        fingerprint: String::new(),
        tokenize: &tokenize,
    };
    let spec = CalibSpec { samples: g.chunks, seq_len: g.ctx, seed: 0 };
    let chunks = calib_data::load_chunks(&data(&g.calib), spec, &info).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    let ours = Importance::collect(&model, &chunks.samples, vec![g.calib.clone()], &|_| {}).unwrap();
    let theirs = Importance::read(&data(&g.imatrix)).unwrap();
    assert_eq!(ours.entries.keys().collect::<Vec<_>>(), theirs.entries.keys().collect::<Vec<_>>());
    assert_eq!(
        (ours.chunk_count, ours.chunk_size, &ours.datasets),
        (theirs.chunk_count, theirs.chunk_size, &theirs.datasets)
    );
    let mut rel: Vec<(f64, &str)> = Vec::new();
    for (name, t) in &theirs.entries {
        let o = &ours.entries[name];
        assert_eq!(o.counts, t.counts, "{name}");
        let (diff, norm) = o
            .sum2
            .iter()
            .zip(&t.sum2)
            .fold((0.0f64, 0.0f64), |(d, n), (&a, &b)| (d + f64::from(a - b).powi(2), n + f64::from(b).powi(2)));
        rel.push(((diff / norm).sqrt(), name));
    }
    rel.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, worst) = (rel[rel.len() / 2], rel[rel.len() - 1]);
    eprintln!("relative L2 per tensor: median {:.2e} ({}), worst {:.2e} ({})", median.0, median.1, worst.0, worst.1);
    assert!(median.0 < 5e-5 && worst.0 < 1e-3, "median {median:?}, worst {worst:?}");
}

#[test]
fn weighted_files_match_llama_quantize() {
    let Some(model_path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let g = golden();
    let dir = scratch("files");
    // llama.cpp's runs were made from llama-quantize's F32 file, which lowbit's F32 conversion equals.
    let f32_path = dir.join("f32.gguf");
    export(&GgufFile::open(&model_path).unwrap(), &f32_path, FileType::F32, false, None, &|_, _| {}).unwrap();
    let source = GgufFile::open(&f32_path).unwrap();
    let matrix = Importance::read(&data(&g.imatrix)).unwrap();
    // llama-quantize records the imatrix file's name as it was given.
    let input = ImatrixInput { matrix: &matrix, file: &g.imatrix };
    for (name, run) in &g.runs {
        let out = dir.join("out.gguf");
        export(&source, &out, FileType::parse(name).unwrap(), false, Some(&input), &|_, _| {}).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, run.bytes, "{name}: file size");
        assert_eq!(sha256(&bytes), run.sha256, "{name}: file bytes");
    }
    drop(source);
    std::fs::remove_dir_all(&dir).unwrap();
}
