//! The group-wise integer formats against an independent numpy implementation of their documented
//! layout (scripts/golden/gen_native_group.py): codes, scales, zero points and dequantized values,
//! bit for bit, for every bit width, symmetric and asymmetric, groups that divide the row and a
//! short last group (576 columns in groups of 128), all-zero groups, underflowing scales and ties.

use lowbit_formats::native::group::{quantize, GroupFormat};
use serde_json::Value;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn matches_numpy_bit_for_bit() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/native_group_golden.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let rows = fixture["rows"].as_u64().unwrap() as usize;
    let cols = fixture["cols"].as_u64().unwrap() as usize;
    let input = f32s(&hex(fixture["input"].as_str().unwrap()));
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let f = GroupFormat::new(
            case["bits"].as_u64().unwrap() as u8,
            case["group"].as_u64().unwrap() as usize,
            case["sym"].as_bool().unwrap(),
        )
        .unwrap();
        let name = f.name();
        let m = quantize(f, &input, rows, cols).unwrap();
        assert_eq!(m.codes, hex(case["codes"].as_str().unwrap()), "{name}: codes");
        assert_eq!(m.scales, hex(case["scales"].as_str().unwrap()), "{name}: scales");
        assert_eq!(m.zeros, hex(case["zeros"].as_str().unwrap()), "{name}: zeros");
        let want = f32s(&hex(case["dequantized"].as_str().unwrap()));
        let all = m.view().dequantize();
        let got: Vec<f32> = case["dequantized_rows"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| all[r.as_u64().unwrap() as usize * cols..][..cols].to_vec())
            .collect();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}: dequantized value {i}: {g} vs {w}");
        }
    }
}
