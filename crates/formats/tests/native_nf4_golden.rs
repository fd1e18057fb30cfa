//! NF4 with double quantization against an independent numpy implementation of its documented layout
//! (scripts/golden/gen_native_nf4.py): bitsandbytes' dynamic map and NF4 thresholds, then codes,
//! 8-bit block scales, chunk scales, mean, block scales and dequantized values, bit for bit, on a
//! matrix with two chunks of blocks (256 and a short 32), an all-zero block, a negative extreme, an
//! outlier and values exactly at every NF4 midpoint and one ulp either side.

use lowbit_formats::native::nf4::{dynamic_map, nf4_midpoints, quantize};
use serde_json::Value;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// Equal lengths and elements, or a panic naming the first difference (not two dumps of 9 KB).
fn same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}: element {i} is {:?}, numpy has {:?}", got[i], want[i]);
    }
}

#[test]
fn matches_numpy_bit_for_bit() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/native_nf4_golden.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let s = |k: &str| hex(fx[k].as_str().unwrap());
    same(&bits(dynamic_map()), &bits(&f32s(&s("dynamic_map"))), "dynamic map");
    same(&bits(&nf4_midpoints()), &bits(&f32s(&s("nf4_midpoints"))), "NF4 midpoints");

    let rows = fx["rows"].as_u64().unwrap() as usize;
    let cols = fx["cols"].as_u64().unwrap() as usize;
    let exps = fx["input_row_exponent"].as_array().unwrap();
    let mut input: Vec<f32> = s("input_i8")
        .iter()
        .enumerate()
        .map(|(i, &q)| f32::from(q as i8) * 2f32.powi(-(exps[i / cols].as_i64().unwrap() as i32)))
        .collect();
    for o in fx["input_overrides"].as_array().unwrap() {
        input[o[0].as_u64().unwrap() as usize] = f32s(&hex(o[1].as_str().unwrap()))[0];
    }

    let m = quantize(&input, rows, cols).unwrap();
    same(&m.codes, &s("codes"), "codes");
    same(&m.absmax, &s("absmax"), "8-bit block scales");
    same(&m.nested_absmax, &s("nested_absmax"), "chunk scales");
    same(&m.offset, &s("offset"), "offset");
    let v = m.view();
    let scales: Vec<f32> = (0..rows * cols / 64).map(|b| v.block_scale(b)).collect();
    same(&bits(&scales), &bits(&f32s(&s("block_scales"))), "block scales");
    let all = v.dequantize();
    let got: Vec<f32> = fx["dequantized_rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| all[r.as_u64().unwrap() as usize * cols..][..cols].to_vec())
        .collect();
    same(&bits(&got), &bits(&f32s(&s("dequantized"))), "dequantized rows");
}
