//! A native directory made from a Hugging Face directory (the sharded tiny Llama fixture): it carries
//! the source's config.json, keeps every tensor under the same canonical name, and reads back exactly
//! what the reference quantizer produced (plain tensors bit for bit).

use lowbit_formats::native::group::quantize;
use lowbit_formats::native::Storage;
use lowbit_formats::source::ModelSource;
use lowbit_quant::native_export::export;
use lowbit_quant::rtn::RtnScheme;

#[test]
fn hf_source_round_trips() {
    let src_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../formats/tests/data/hf_tiny");
    let source = ModelSource::open(std::path::Path::new(src_dir)).unwrap();
    let out = std::env::temp_dir().join(format!("lowbit-native-hf-{}", std::process::id()));
    let scheme = RtnScheme::new(4, Some(32), false).unwrap();
    export(&source, &out, &scheme, &|_, _| {}).unwrap();
    assert!(out.join("config.json").is_file());
    let native = ModelSource::open(&out).unwrap();
    let ModelSource::Native(m) = &native else { panic!("not a native directory") };
    assert_eq!(m.quantization_config().metadata, "config.json");
    assert_eq!(native.config().unwrap(), source.config().unwrap());
    assert_eq!(native.tensor_names(), source.tensor_names());
    let mut quantized = 0;
    for name in source.tensor_names() {
        let (shape, values) = source.tensor_f32(name).unwrap();
        let (back_shape, back) = native.tensor_f32(name).unwrap();
        assert_eq!(back_shape, shape, "{name}");
        match &m.spec(name).unwrap().storage {
            Storage::Group { .. } => {
                let f = scheme.format_for(&shape).unwrap();
                let want = quantize(f, &values, shape[0], shape[1]).unwrap().view().dequantize();
                assert_eq!(back, want, "{name}");
                quantized += 1;
            }
            Storage::Plain { dtype } => {
                assert_eq!(dtype, "F32", "{name}: only 1-D tensors stay plain here");
                assert_eq!(back, values, "{name}");
            }
        }
    }
    assert!(quantized > 0);

    // A config that disagrees with the stored tensors is refused with the tensor's name.
    let qpath = out.join("quantization_config.json");
    let good = std::fs::read_to_string(&qpath).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    let spec = json["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["storage"]["kind"] == "group").unwrap();
    let name = spec["name"].as_str().unwrap().to_string();
    spec["shape"][0] = (spec["shape"][0].as_u64().unwrap() + 1).into();
    std::fs::write(&qpath, serde_json::to_string(&json).unwrap()).unwrap();
    let err = ModelSource::open(&out).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("codes"), "{err}");
    std::fs::write(&qpath, good.replace("lowbit-native", "other")).unwrap();
    assert!(ModelSource::open(&out).unwrap_err().to_string().contains("is not \"lowbit-native\""));
    std::fs::remove_dir_all(&out).unwrap();
}
