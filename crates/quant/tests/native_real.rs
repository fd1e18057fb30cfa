//! Native directories of the real SmolLM2 model: quantized to INT8 (per channel), INT4 g128 and NF4,
//! opened again, run natively (`GroupFactory`), and scored against the source run in f32 on the same
//! tokens. Checks that the directory carries everything needed to run (config, tokenizer, every
//! tensor), that the files shrink as the formats say, and that quality is sane: INT8 nearly lossless,
//! INT4 g128 clearly worse than INT8 yet far from a broken model (which scores KLD > 5), and NF4 — 4
//! bits too, but in blocks of 64 with values spaced for normally distributed weights — better than
//! INT4 g128.

use std::path::{Path, PathBuf};

use lowbit_eval::{perplexity, PerplexityOptions};
use lowbit_formats::native::{NativeTensor, Storage};
use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, GroupFactory, Model};
use lowbit_quant::native_export::{export, NativeScheme};
use lowbit_quant::rtn::RtnScheme;
use lowbit_runtime::tokenizer::Tokenizer;

fn corpus() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/wiki.test.raw");
    std::fs::read_to_string(path).expect("../shared/data/wiki.test.raw must be beside the repository")
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lowbit-native-real-{}-{name}", std::process::id()))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn smollm2_int8_int4_and_nf4_directories_run() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let source = ModelSource::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(source.gguf().unwrap()).unwrap();
    let reference = Model::load(&source, &F32Factory).unwrap();
    let tokens = tok.encode(&corpus()[..20_000], tok.adds_bos()).unwrap();
    let opts = PerplexityOptions { ctx: 512, max_chunks: Some(1), bos: tok.adds_bos().then(|| tok.bos_id()).flatten() };
    let params: usize = source.tensor_names().iter().map(|n| source.tensor(n).unwrap().n_elements()).sum();

    let mut klds = Vec::new();
    for (scheme, bits_per_weight) in [
        (NativeScheme::Rtn(RtnScheme::new(8, None, true).unwrap()), 8.0),
        (NativeScheme::Rtn(RtnScheme::new(4, Some(128), true).unwrap()), 4.0),
        (NativeScheme::Nf4, 4.0),
    ] {
        let dir = out_dir(&scheme.name());
        let summary = export(&source, &dir, &scheme, None, None, &|_, _| {}).unwrap();
        let native = ModelSource::open(&dir).unwrap();
        let ModelSource::Native(m) = &native else { panic!("{} did not open as a native directory", dir.display()) };

        // Everything needed to run again: the same config and tokenizer, every tensor in its format.
        assert_eq!(native.config().unwrap(), source.config().unwrap());
        let text = "The quick brown fox, in 1905: naïve café.";
        let native_tok = Tokenizer::from_gguf(m.metadata_gguf().unwrap()).unwrap();
        assert_eq!(native_tok.encode(text, true).unwrap(), tok.encode(text, true).unwrap());
        assert_eq!(native.tensor_names(), source.tensor_names());
        let quantized = m.specs().iter().filter(|s| !matches!(s.storage, Storage::Plain { .. })).count();
        assert_eq!(quantized, 211, "every matrix, the embedding included");
        let embd = m.tensor("token_embd.weight").unwrap();
        match scheme {
            NativeScheme::Nf4 => assert!(matches!(embd, NativeTensor::Nf4(_))),
            NativeScheme::Rtn(_) => assert!(matches!(embd, NativeTensor::Group(_))),
            _ => unreachable!("not among these schemes"),
        }

        // Size: the codes plus f16 scales, against the F16 file the same tensors would make.
        let bytes = dir_bytes(&dir);
        let f16_bytes = 2 * params as u64;
        assert!(summary.tensor_bytes as f64 <= params as f64 * (bits_per_weight + 0.15) / 8.0, "{}", scheme.name());
        eprintln!("{}: {bytes} bytes, {:.2}x smaller than F16", scheme.name(), f16_bytes as f64 / bytes as f64);
        if bits_per_weight == 4.0 {
            assert!(f16_bytes as f64 / bytes as f64 >= 3.5, "{} is {bytes} bytes", scheme.name());
        }

        let model = Model::load(&native, &GroupFactory::new(&native)).unwrap();
        let r = perplexity(&model, Some(&reference), &tokens, &opts, |_| {}).unwrap();
        let cmp = r.reference.unwrap();
        let (kld, top1) = (cmp.mean_kld, cmp.same_top1);
        eprintln!("{}: PPL {:.3} vs {:.3}, KLD {kld:.4}, top-1 {top1:.3}", scheme.name(), r.ppl, cmp.reference_ppl);
        klds.push((cmp.ppl_ratio, kld, top1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let [(int8_ratio, int8_kld, int8_top1), (int4_ratio, int4_kld, int4_top1), (nf4_ratio, nf4_kld, nf4_top1)] =
        klds[..]
    else {
        unreachable!()
    };
    assert!(int8_ratio < 1.03 && int8_kld < 0.02 && int8_top1 > 0.9, "INT8: {:?}", klds[0]);
    assert!(int4_kld > 5.0 * int8_kld, "INT4 should cost clearly more than INT8: {klds:?}");
    assert!(int4_ratio < 3.0 && int4_kld < 1.5 && int4_top1 > 0.4, "INT4 g128: {:?}", klds[1]);
    assert!(nf4_kld > 2.0 * int8_kld, "NF4 is still 4 bits: {klds:?}");
    assert!(nf4_kld < 0.8 * int4_kld && nf4_ratio < int4_ratio && nf4_top1 > int4_top1, "NF4 vs INT4 g128: {klds:?}");
}
