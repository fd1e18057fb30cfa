//! The mix rules against llama.cpp's own record of its choices for models lowbit has no weights of (Llama-3.1-70B,
//! whose attn_v gets the 70B bonus; Qwen3 0.6B and 14B; Gemma-3-4B): llama.cpp's tests/snapshots, condensed by
//! scripts/golden/gen_llamacpp_type_snapshots.py. Those models' row lengths are all multiples of 256, so only
//! `ne[0]` of ffn_down (n_ff) and of the rest (n_embd) matters for fallbacks, and the tensor lists are rebuilt from
//! the hyperparameters.

use std::collections::BTreeMap;

use lowbit_formats::DType;
use lowbit_quant::tensor_types::{choose_types, ModelFacts, TensorDesc};
use lowbit_quant::FileType;
use serde::Deserialize;

#[derive(Deserialize)]
struct Snapshot {
    arch: String,
    params: BTreeMap<String, u64>,
    tied: bool,
    ftypes: BTreeMap<String, Section>,
}

#[derive(Deserialize)]
struct Section {
    default: String,
    /// type → tensor name without "blk.N." → the layers N (−1 outside the blocks).
    overrides: BTreeMap<String, BTreeMap<String, Vec<i64>>>,
}

const PER_LAYER: [&str; 7] = [
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

/// The quantizable tensors of a standard dense model: (name, ne).
fn tensors(s: &Snapshot) -> Vec<(String, Vec<u64>)> {
    let p = |k: &str| s.params[k];
    let mut out = vec![("token_embd.weight".to_string(), vec![p("n_embd"), p("n_vocab")])];
    if !s.tied {
        out.push(("output.weight".to_string(), vec![p("n_embd"), p("n_vocab")]));
    }
    for l in 0..p("n_layer") {
        for part in PER_LAYER {
            let ne =
                if part == "ffn_down.weight" { vec![p("n_ff"), p("n_embd")] } else { vec![p("n_embd"), p("n_ff")] };
            out.push((format!("blk.{l}.{part}"), ne));
        }
    }
    out
}

#[test]
fn mixes_choose_the_types_llama_cpp_recorded() {
    let snapshots: BTreeMap<String, Snapshot> =
        serde_json::from_str(include_str!("data/llamacpp_type_snapshots.json")).unwrap();
    assert_eq!(snapshots.len(), 4);
    let mut failures = Vec::new();
    for (model, s) in &snapshots {
        let facts = ModelFacts {
            arch: s.arch.clone(),
            n_layer: s.params["n_layer"] as u32,
            n_head: s.params["n_head"] as u32,
            n_head_kv: s.params["n_head_kv"] as u32,
            n_expert: 0,
        };
        let list = tensors(s);
        let descs: Vec<TensorDesc> = list.iter().map(|(name, ne)| TensorDesc { name, ne, dtype: DType::F32 }).collect();
        assert_eq!(s.ftypes.len(), FileType::ALL.len(), "{model}: a file type is missing from the snapshot");
        for (ftype_name, section) in &s.ftypes {
            let ftype = FileType::parse(ftype_name).unwrap();
            assert!(section.default.eq_ignore_ascii_case(ftype.default_type().name()), "{model} {ftype_name}");
            let mut want: BTreeMap<String, String> =
                list.iter().map(|(name, _)| (name.clone(), section.default.to_uppercase())).collect();
            for (kind, parts) in &section.overrides {
                for (part, layers) in parts {
                    for &l in layers {
                        let name = if l < 0 { part.clone() } else { format!("blk.{l}.{part}") };
                        assert!(want.insert(name.clone(), kind.to_uppercase()).is_some(), "{model}: unknown {name}");
                    }
                }
            }
            let ours = choose_types(&facts, &descs, ftype, false, false).unwrap();
            for ((name, _), got) in list.iter().zip(ours) {
                if !got.name().eq_ignore_ascii_case(&want[name]) {
                    failures.push(format!("{model} {ftype_name} {name}: ours {got}, llama.cpp {}", want[name]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} choices differ:\n{}", failures.len(), failures.join("\n"));
}
