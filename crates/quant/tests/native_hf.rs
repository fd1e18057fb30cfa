//! Native directories made from a Hugging Face directory (the sharded tiny Llama fixture), in a group
//! format, in NF4 and palettized: they carry the source's config.json, keep every tensor under the same canonical
//! name, and read back exactly what the reference quantizer produced (plain tensors bit for bit).

use std::path::PathBuf;

use lowbit_formats::native::{group, nf4, PaletteFormat, Storage};
use lowbit_formats::source::ModelSource;
use lowbit_quant::imatrix::{Entry, Importance};
use lowbit_quant::native_export::{export, NativeScheme};
use lowbit_quant::palette::palettize;
use lowbit_quant::rtn::RtnScheme;
use lowbit_quant::ternary::{self, TernaryRule, TernaryScheme};

/// Exports the fixture per `scheme`, checks the round trip, and returns the directory and the name of
/// a quantized tensor.
fn round_trip(scheme: NativeScheme, tag: &str) -> (PathBuf, String) {
    let src_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../formats/tests/data/hf_tiny");
    let source = ModelSource::open(std::path::Path::new(src_dir)).unwrap();
    let out = std::env::temp_dir().join(format!("lowbit-native-hf-{tag}-{}", std::process::id()));
    export(&source, &out, &scheme, None, None, &|_, _| {}).unwrap();
    assert!(out.join("config.json").is_file());
    let native = ModelSource::open(&out).unwrap();
    let ModelSource::Native(m) = &native else { panic!("not a native directory") };
    assert_eq!(m.quantization_config().metadata, "config.json");
    assert_eq!(native.config().unwrap(), source.config().unwrap());
    assert_eq!(native.tensor_names(), source.tensor_names());
    let mut quantized = None;
    for name in source.tensor_names() {
        let (shape, values) = source.tensor_f32(name).unwrap();
        let (back_shape, back) = native.tensor_f32(name).unwrap();
        assert_eq!(back_shape, shape, "{name}");
        let want = match (&m.spec(name).unwrap().storage, scheme) {
            (Storage::Group { .. }, NativeScheme::Rtn(s)) => {
                let f = s.format_for(name, &shape).unwrap();
                group::quantize(f, &values, shape[0], shape[1]).unwrap().view().dequantize()
            }
            (Storage::Nf4 { .. }, NativeScheme::Nf4) => {
                nf4::quantize(&values, shape[0], shape[1]).unwrap().view().dequantize()
            }
            (Storage::Palette { .. }, NativeScheme::Palette { format, seed }) => {
                palettize(format, &values, shape[0], shape[1], None, seed).unwrap().view().dequantize()
            }
            (Storage::Group { .. } | Storage::Trits { .. }, NativeScheme::Ternary(t)) => {
                let f = t.format_for(name, &shape).unwrap();
                let (rows, cols) = (shape[0], shape[1]);
                match (t.is_ternary(name, &shape), t.rule) {
                    (false, _) => group::quantize(f, &values, rows, cols).unwrap().view().dequantize(),
                    (true, TernaryRule::Exact) => ternary::quantize_exact(f, &values, rows, cols, None).unwrap().1,
                    (true, TernaryRule::Absmean) => {
                        ternary::quantize_absmean(f, &values, rows, cols, ternary::absmean_scale(&values)).unwrap().1
                    }
                }
            }
            (Storage::Plain { dtype }, _) => {
                assert_eq!(dtype, "F32", "{name}: only 1-D tensors stay plain here");
                values
            }
            (storage, _) => panic!("{name}: {storage:?} from {scheme:?}"),
        };
        assert_eq!(back, want, "{name}");
        if !matches!(m.spec(name).unwrap().storage, Storage::Plain { .. }) {
            quantized = Some(name.to_string());
        }
    }
    (out, quantized.expect("a quantized tensor"))
}

/// Rewrites the quantization config of `dir` with `edit` applied to the spec of tensor `name`.
fn edit_spec(dir: &std::path::Path, name: &str, edit: impl Fn(&mut serde_json::Value)) {
    let qpath = dir.join("quantization_config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&qpath).unwrap()).unwrap();
    edit(json["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["name"] == name).unwrap());
    std::fs::write(&qpath, serde_json::to_string(&json).unwrap()).unwrap();
}

#[test]
fn hf_source_round_trips_in_a_group_format() {
    let (out, name) = round_trip(NativeScheme::Rtn(RtnScheme::new(4, Some(32), false).unwrap()), "int4");
    // A config that disagrees with the stored tensors is refused with the tensor's name.
    let qpath = out.join("quantization_config.json");
    let good = std::fs::read_to_string(&qpath).unwrap();
    edit_spec(&out, &name, |spec| spec["shape"][0] = (spec["shape"][0].as_u64().unwrap() + 1).into());
    let err = ModelSource::open(&out).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("codes"), "{err}");
    std::fs::write(&qpath, good.replace("lowbit-native", "other")).unwrap();
    assert!(ModelSource::open(&out).unwrap_err().to_string().contains("is not \"lowbit-native\""));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn hf_source_round_trips_in_nf4() {
    let (out, name) = round_trip(NativeScheme::Nf4, "nf4");
    let ModelSource::Native(m) = ModelSource::open(&out).unwrap() else { panic!("not a native directory") };
    let q = m.quantization_config();
    assert_eq!((q.method.as_str(), q.bits, q.group), ("nf4", 4, Some(64)));
    // Wrong shapes, and block sizes this reader does not know, are refused with the tensor's name.
    let qpath = out.join("quantization_config.json");
    let good = std::fs::read_to_string(&qpath).unwrap();
    edit_spec(&out, &name, |spec| spec["shape"][1] = (spec["shape"][1].as_u64().unwrap() + 64).into());
    let err = ModelSource::open(&out).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("codes"), "{err}");
    std::fs::write(&qpath, &good).unwrap();
    edit_spec(&out, &name, |spec| spec["storage"]["block"] = 128.into());
    let err = ModelSource::open(&out).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("blocks of 128"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn hf_source_round_trips_palettized() {
    for (bits, rows, channel_scale) in [(2, Some(8), false), (3, None, true), (4, Some(1), true)] {
        let format = PaletteFormat::new(bits, rows, channel_scale).unwrap();
        let (out, name) = round_trip(NativeScheme::Palette { format, seed: 3 }, &format.name());
        let ModelSource::Native(m) = ModelSource::open(&out).unwrap() else { panic!("not a native directory") };
        assert_eq!(m.quantization_config().method, "palette");
        // A palette table of the wrong size is refused with the tensor's name.
        edit_spec(&out, &name, |spec| spec["storage"]["bits"] = (bits as u64 % 4 + 2).into());
        let err = ModelSource::open(&out).unwrap_err().to_string();
        assert!(err.contains(&name), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Ternary builds: every matrix but the embedding holds only {−α, 0, α} per group (the exact fit per group, or
/// one absmean scale per tensor), the embedding 8 bits per channel; packed as trits, the same values in
/// ceil(cols/5) bytes per row.
#[test]
fn hf_source_round_trips_ternary() {
    for (rule, packed) in [(TernaryRule::Exact, false), (TernaryRule::Absmean, false), (TernaryRule::Exact, true)] {
        let scheme = TernaryScheme { rule, group: 64, packed };
        let (out, name) = round_trip(NativeScheme::Ternary(scheme), &scheme.name());
        let native = ModelSource::open(&out).unwrap();
        let (shape, values) = native.tensor_f32(&name).unwrap();
        assert!(scheme.is_ternary(&name, &shape), "{name}");
        let ModelSource::Native(m) = &native else { panic!("not a native directory") };
        let scales = shape[0] * shape[1].div_ceil(64) * 2;
        let (storage, codes) = if packed {
            (Storage::Trits { group: 64 }, shape[0] * shape[1].div_ceil(5))
        } else {
            (Storage::Group { bits: 2, group: 64, sym: true }, shape[0] * shape[1] / 4)
        };
        assert_eq!(m.spec(&name).unwrap().storage, storage, "{name}");
        assert_eq!(m.stored_bytes(&name).unwrap(), codes + scales, "{name}");
        assert_eq!(NativeScheme::Ternary(scheme).stored_bytes(&name, &shape), (codes + scales) as u64, "{name}");
        let group = if rule == TernaryRule::Exact { 64 } else { shape[1] };
        for g in values.chunks(group) {
            let alpha = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(g.iter().all(|&v| v == 0.0 || v.abs() == alpha), "{name}: {g:?}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Palettes weighted by importance: the covered matrix is clustered with its columns' weights.
#[test]
fn importance_weights_the_palettes() {
    let src_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../formats/tests/data/hf_tiny");
    let source = ModelSource::open(std::path::Path::new(src_dir)).unwrap();
    let format = PaletteFormat::new(2, Some(4), false).unwrap();
    let covered = "blk.0.attn_q.weight";
    let (shape, values) = source.tensor_f32(covered).unwrap();
    let w: Vec<f32> = (0..shape[1]).map(|i| if i % 4 == 0 { 100.0 } else { 1.0 }).collect();
    let mut m = Importance::default();
    m.entries.insert(covered.into(), Entry { sum2: w.iter().map(|x| x * 8.0).collect(), counts: vec![8] });
    let out = std::env::temp_dir().join(format!("lowbit-native-hf-palette-imatrix-{}", std::process::id()));
    export(&source, &out, &NativeScheme::Palette { format, seed: 0 }, None, Some(&m), &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    let weighted = palettize(format, &values, shape[0], shape[1], Some(&w), 0).unwrap().view().dequantize();
    assert_ne!(weighted, palettize(format, &values, shape[0], shape[1], None, 0).unwrap().view().dequantize());
    assert_eq!(native.tensor_f32(covered).unwrap().1, weighted);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn importance_weights_each_matrix_it_covers() {
    let src_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../formats/tests/data/hf_tiny");
    let source = ModelSource::open(std::path::Path::new(src_dir)).unwrap();
    let scheme = RtnScheme::new(3, Some(32), true).unwrap();
    let covered = "blk.0.attn_q.weight";
    let (shape, values) = source.tensor_f32(covered).unwrap();
    let f = scheme.format_for(covered, &shape).unwrap();
    // Uneven weights: every fourth column matters a hundred times more.
    let w: Vec<f32> = (0..shape[1]).map(|i| if i % 4 == 0 { 100.0 } else { 1.0 }).collect();
    let mut m = Importance::default();
    m.entries.insert(covered.into(), Entry { sum2: w.iter().map(|x| x * 8.0).collect(), counts: vec![8] });
    let out = std::env::temp_dir().join(format!("lowbit-native-hf-imatrix-{}", std::process::id()));
    export(&source, &out, &NativeScheme::Rtn(scheme), None, Some(&m), &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    let weighted = group::quantize_weighted(f, &values, shape[0], shape[1], &w).unwrap().view().dequantize();
    assert_ne!(weighted, group::quantize(f, &values, shape[0], shape[1]).unwrap().view().dequantize());
    assert_eq!(native.tensor_f32(covered).unwrap().1, weighted);
    // Matrices without an entry are plain round to nearest.
    let other = "blk.0.attn_k.weight";
    let (shape, values) = source.tensor_f32(other).unwrap();
    let plain = group::quantize(scheme.format_for(other, &shape).unwrap(), &values, shape[0], shape[1]).unwrap();
    assert_eq!(native.tensor_f32(other).unwrap().1, plain.view().dequantize());
    std::fs::remove_dir_all(&out).unwrap();
    // An entry for a tensor the model lacks, or of another width, is refused before anything is written.
    for (name, cols) in [("blk.9.attn_q.weight", shape[1]), (covered, shape[1] + 32)] {
        let mut bad = Importance::default();
        bad.entries.insert(name.into(), Entry { sum2: vec![1.0; cols], counts: vec![1] });
        let e = export(&source, &out, &NativeScheme::Rtn(scheme), None, Some(&bad), &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains(name), "{e}");
        assert!(!out.exists());
    }
}
