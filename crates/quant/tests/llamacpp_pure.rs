//! lowbit's GGUF export of SmolLM2 to every legacy and k-quant type writes, tensor for tensor,
//! the bytes and types that llama.cpp's `llama-quantize --pure` writes from the same weights
//! (fingerprints in tests/data, made by scripts/golden/gen_quantize_llamacpp.py).

use std::collections::BTreeMap;

use lowbit_formats::gguf::GgufFile;
use lowbit_formats::DType;
use serde_json::Value;

/// Same as the script's: zero-padded little-endian u64 words, weighted by position.
fn fingerprint(raw: &[u8]) -> u64 {
    raw.chunks(8).enumerate().fold(0u64, |acc, (i, c)| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        let weight = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        acc.wrapping_add(u64::from_le_bytes(w).wrapping_mul(weight))
    })
}

#[test]
fn every_type_matches_llama_cpp_byte_for_byte() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let golden: Value = serde_json::from_str(include_str!("data/llamacpp_pure_smollm2.json")).unwrap();
    let source = GgufFile::open(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("lowbit-pure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (type_name, want) in golden["types"].as_object().unwrap() {
        let target = [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q2K,
            DType::Q3K,
            DType::Q4K,
            DType::Q5K,
            DType::Q6K,
        ]
        .into_iter()
        .find(|d| d.name() == type_name)
        .unwrap();
        let out = dir.join(format!("{type_name}.gguf"));
        lowbit_quant::gguf_export::export(&source, &out, target, &|_, _| {}).unwrap();
        let ours = GgufFile::open(&out).unwrap();
        assert_eq!(ours.file_len(), want["file_bytes"].as_u64().unwrap(), "{type_name}: file size");
        let want: BTreeMap<&str, (&str, u64)> = want["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), (v[0].as_str().unwrap(), v[1].as_str().unwrap().parse().unwrap())))
            .collect();
        assert_eq!(ours.tensors().len(), want.len(), "{type_name}: tensor count");
        for t in ours.tensors() {
            let got = (t.dtype.name(), fingerprint(ours.tensor_data(t)));
            if want.get(t.name.as_str()) != Some(&got) {
                failures.push(format!(
                    "{type_name} {}: ours {got:?}, llama.cpp {:?}",
                    t.name,
                    want.get(t.name.as_str())
                ));
            }
        }
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "{} tensors differ:\n{}", failures.len(), failures.join("\n"));
}
