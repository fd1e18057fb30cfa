//! lowbit's dequantization of every GGUF type against PyPI `gguf` (an independent implementation).
//!
//! Fixtures in tests/data/dequant/ come from scripts/golden/gen_dequant.py; see its header to
//! regenerate them. Every value must be bit-identical: ggml, `gguf.quants` and lowbit compute each
//! value with the same f32 operations in the same order (f16 -> f32 is exact, then one multiply
//! and at most one subtract or add), so no tolerance is justified. The one exception is NaN
//! inputs of the plain F16/BF16 types: a NaN must stay NaN, but its payload and signalling bit
//! are not specified (x86 F16C quiets signalling NaNs, numpy keeps them).

use lowbit_formats::dequant::{dequantize, dequantize_into};
use lowbit_formats::gguf::GgufFile;
use lowbit_formats::DType;

struct Fixture {
    dtype: DType,
    raw: &'static [u8],
    expected: &'static [u8],
}

macro_rules! fixture {
    ($dtype:expr, $name:literal) => {
        Fixture {
            dtype: $dtype,
            raw: include_bytes!(concat!("data/dequant/", $name, ".bin")),
            expected: include_bytes!(concat!("data/dequant/", $name, ".f32")),
        }
    };
}

fn fixtures() -> [Fixture; 17] {
    [
        fixture!(DType::F32, "f32"),
        fixture!(DType::F16, "f16"),
        fixture!(DType::BF16, "bf16"),
        fixture!(DType::I8, "i8"),
        fixture!(DType::Q4_0, "q4_0"),
        fixture!(DType::Q4_1, "q4_1"),
        fixture!(DType::Q5_0, "q5_0"),
        fixture!(DType::Q5_1, "q5_1"),
        fixture!(DType::Q8_0, "q8_0"),
        fixture!(DType::Q2K, "q2_k"),
        fixture!(DType::Q3K, "q3_k"),
        fixture!(DType::Q4K, "q4_k"),
        fixture!(DType::Q5K, "q5_k"),
        fixture!(DType::Q6K, "q6_k"),
        fixture!(DType::TQ1_0, "tq1_0"),
        fixture!(DType::TQ2_0, "tq2_0"),
        fixture!(DType::MXFP4, "mxfp4"),
    ]
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Index, ours and expected of the first differing value, if any.
fn first_mismatch(ours: &[f32], expected: &[f32]) -> Option<(usize, f32, f32)> {
    ours.iter().zip(expected).enumerate().find(|(_, (a, b))| !same_value(**a, **b)).map(|(i, (a, b))| (i, *a, *b))
}

#[test]
fn every_type_matches_gguf_py_bit_for_bit() {
    for f in fixtures() {
        let expected = f32s(f.expected);
        let ours = dequantize(f.dtype, f.raw, expected.len()).unwrap_or_else(|e| panic!("{}: {e}", f.dtype));
        assert_eq!(ours.len(), expected.len(), "{}", f.dtype);
        if let Some((i, a, b)) = first_mismatch(&ours, &expected) {
            let block = i / f.dtype.block_len();
            panic!(
                "{}: element {i} (block {block}) is {a:e} ({:#010x}), gguf gives {b:e} ({:#010x})",
                f.dtype,
                a.to_bits(),
                b.to_bits()
            );
        }
    }
}

#[test]
fn fixtures_are_not_trivial() {
    // A fixture of zeros would let a dequantizer that writes nothing pass.
    for f in fixtures() {
        let expected = f32s(f.expected);
        let nonzero = expected.iter().filter(|x| **x != 0.0).count();
        assert!(nonzero > expected.len() / 2, "{}: only {nonzero} of {} values are non-zero", f.dtype, expected.len());
        assert!(expected.len() >= 8 * f.dtype.block_len(), "{}: fewer than 8 blocks", f.dtype);
    }
}

#[test]
fn dequantize_into_overwrites_the_whole_output() {
    for f in fixtures() {
        let expected = f32s(f.expected);
        let mut out = vec![f32::NAN; expected.len()];
        dequantize_into(f.dtype, f.raw, &mut out).unwrap();
        assert_eq!(first_mismatch(&out, &expected), None, "{}", f.dtype);
    }
}

#[test]
fn every_type_rejects_a_byte_short_or_long() {
    for f in fixtures() {
        let n = f32s(f.expected).len();
        for raw in [&f.raw[..f.raw.len() - 1], &[f.raw, &[0]].concat()] {
            let e = dequantize(f.dtype, raw, n).unwrap_err().to_string();
            assert!(e.contains(&raw.len().to_string()) && e.contains(f.dtype.name()), "{e}");
        }
    }
}

/// One tensor of a real model, as gguf's GGUFReader + dequantize saw it.
#[derive(serde::Deserialize)]
struct RealTensor {
    file: String,
    tensor: String,
    #[serde(rename = "type")]
    dtype: String,
    n_elements: usize,
    raw_hash: u64,
    values_hash: u64,
    head: Vec<f32>,
}

/// The hash of scripts/golden/gen_dequant.py: Σ vᵢ·wᵢ mod 2⁶⁴ with odd weights, so any single
/// changed value changes it.
fn weighted_hash(values: impl Iterator<Item = u64>) -> u64 {
    values.enumerate().fold(0u64, |acc, (i, v)| {
        let w = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        acc.wrapping_add(v.wrapping_mul(w))
    })
}

/// Checks one real tensor of a model fetched (and sha256-verified) by scripts/fetch-models.sh.
fn check_real_tensor(t: &RealTensor) {
    let Some(path) = lowbit_testdata::model(&t.file) else { return };
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let info = file.tensor_info(&t.tensor).unwrap_or_else(|| panic!("{}: no tensor {}", path.display(), t.tensor));
    let raw = file.tensor_data(info);
    let raw_hash = weighted_hash(raw.iter().map(|&b| u64::from(b)));
    assert_eq!(raw_hash, t.raw_hash, "{}: {} is not the build the fixture was made from", path.display(), t.tensor);
    assert_eq!(info.dtype.name(), t.dtype, "{}", t.tensor);
    let ours = dequantize(info.dtype, raw, t.n_elements).unwrap_or_else(|e| panic!("{}: {e}", t.tensor));
    assert_eq!(first_mismatch(&ours[..t.head.len()], &t.head), None, "{} {}: first values", t.file, t.tensor);
    let hash = weighted_hash(ours.iter().map(|x| u64::from(x.to_bits())));
    assert_eq!(hash, t.values_hash, "{} {}: dequantized values differ from gguf's", t.file, t.tensor);
}

#[test]
fn real_model_tensors_match_gguf_py() {
    let tensors: Vec<RealTensor> =
        serde_json::from_str(include_str!("data/dequant/real_tensors.json")).expect("real_tensors.json parses");
    for t in &tensors {
        check_real_tensor(t);
    }
}
