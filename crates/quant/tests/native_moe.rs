//! GPT-OSS quantized expert by expert into a native directory (round to nearest), from both tiny fixtures of
//! ../shared/fixtures/gpt-oss-tiny (transformers' f32 experts stored `[experts, in, out]`, and MXFP4 halves):
//! every expert reads back as the reference quantizer's rounding of that expert's Linear weight (so no
//! transposition or expert is mixed up), routers and biases stay wide, and the int8 build's logits stay within
//! 5% of the f32 reference's largest logit at every position but one.

use std::path::Path;

use lowbit_formats::experts::ExpertStack;
use lowbit_formats::native::{group, Storage};
use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, GroupFactory, Logits, Model};
use lowbit_quant::native_export::{export, NativeScheme};
use lowbit_quant::rtn::RtnScheme;

fn fixture(variant: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/gpt-oss-tiny").join(variant)
}

fn logits(model: &Model) -> Vec<f32> {
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 512).collect();
    let mut cache = model.new_cache(tokens.len()).unwrap();
    model.forward(&tokens, &mut cache, Logits::From(0)).unwrap()
}

fn check(variant: &str, bits: u8) -> Vec<f32> {
    let source = ModelSource::open(&fixture(variant)).unwrap();
    let scheme = RtnScheme::new(bits, Some(32), true).unwrap();
    let out = std::env::temp_dir().join(format!("lowbit-native-moe-{variant}-{bits}-{}", std::process::id()));
    export(&source, &out, &NativeScheme::Rtn(scheme), None, None, &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    let ModelSource::Native(m) = &native else { panic!("not a native directory") };
    for block in 0..2 {
        for stack in ["ffn_gate_up_exps", "ffn_down_exps"] {
            let name = format!("blk.{block}.{stack}.weight");
            let first = if variant == "tiny_mxfp4" { format!("blk.{block}.{stack}.blocks") } else { name.clone() };
            let src = ExpertStack::of(&source, &first).unwrap().unwrap();
            let back = ExpertStack::of(&native, &name).unwrap().unwrap();
            assert_eq!((back.experts, back.rows, back.cols), (src.experts, src.rows, src.cols), "{name}");
            assert_eq!(m.spec(&name).unwrap().shape, [src.experts, src.rows, src.cols]);
            let f = scheme.format_for(&name, &[src.experts, src.rows, src.cols]).unwrap();
            for e in 0..src.experts {
                let want = group::quantize(f, &src.expert_f32(&source, e).unwrap(), src.rows, src.cols).unwrap();
                assert_eq!(back.expert_f32(&native, e).unwrap(), want.view().dequantize(), "{name} expert {e}");
            }
        }
        for wide in ["ffn_gate_inp.weight", "ffn_gate_inp.bias", "ffn_gate_up_exps.bias", "ffn_down_exps.bias"] {
            let storage = &m.spec(&format!("blk.{block}.{wide}")).unwrap().storage;
            assert!(matches!(storage, Storage::Plain { .. }), "{wide}: {storage:?}");
        }
    }
    let reference = logits(&Model::load(&source, &F32Factory).unwrap());
    let quantized = logits(&Model::load(&native, &GroupFactory::new(&native)).unwrap());
    std::fs::remove_dir_all(&out).unwrap();
    // Per position: int8 weights and activations move logits by a few percent, except where the small change
    // flips which experts a token's router picks (a random 4-expert model flips now and then: tiny_mxfp4's
    // position 4 at int8, 1.28 of 4.1).
    let mag = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let errors: Vec<f32> = reference
        .chunks(512)
        .zip(quantized.chunks(512))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / mag)
        .collect();
    println!("{variant} int{bits}: max |logit error| per position, relative to max |logit| {mag:.2}: {errors:.3?}");
    errors
}

/// At most `flips` positions beyond `bound` (relative error).
fn within(errors: &[f32], bound: f32, flips: usize) -> bool {
    errors.iter().filter(|&&e| e > bound).count() <= flips
}

#[test]
fn tiny_f32_experts_quantize_one_by_one() {
    assert!(within(&check("tiny_f32", 8), 0.05, 1));
    assert!(within(&check("tiny_f32", 4), 0.5, 4));
}

#[test]
fn tiny_mxfp4_experts_are_read_natively_and_quantize_one_by_one() {
    assert!(within(&check("tiny_mxfp4", 8), 0.05, 1));
    assert!(within(&check("tiny_mxfp4", 4), 0.5, 4));
}

/// Importance-weighted RTN expert by expert: each expert's statistics come from the tokens routed to it, an
/// expert with fewer than `MIN_EXPERT_TOKENS` is rounded unweighted, and quantization_config.json records how
/// many tokens each expert saw and which fell back.
#[test]
fn experts_are_weighted_by_their_own_routed_tokens() {
    use lowbit_quant::imatrix::{Importance, MIN_EXPERT_TOKENS};
    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    let chunks: Vec<Vec<u32>> = (0..6).map(|c| (0..24).map(|i| (i * 97 + c * 31 + 7) % 512).collect()).collect();
    let importance = Importance::collect(&model, &chunks, vec!["ids".into()], &|_| {}).unwrap();
    let scheme = RtnScheme::new(4, Some(32), true).unwrap();
    let out = std::env::temp_dir().join(format!("lowbit-native-moe-imatrix-{}", std::process::id()));
    export(&source, &out, &NativeScheme::Rtn(scheme), None, Some(&importance), &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    let qconfig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quantization_config.json")).unwrap()).unwrap();
    let coverage = &qconfig["calibration"]["expert_coverage"]["tensors"];
    let (mut weighted, mut thin) = (0, 0);
    for block in 0..2 {
        let mut per_stack = Vec::new();
        for stack in ["ffn_gate_up_exps", "ffn_down_exps"] {
            let name = format!("blk.{block}.{stack}.weight");
            let tokens: Vec<u64> =
                coverage[&name]["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
            // Every token goes to 2 of the 4 experts.
            assert_eq!(tokens.iter().sum::<u64>(), 2 * 6 * 24, "{name}");
            let src = ExpertStack::of(&source, &format!("blk.{block}.{stack}.blocks")).unwrap().unwrap();
            let back = ExpertStack::of(&native, &name).unwrap().unwrap();
            let f = scheme.format_for(&name, &[src.experts, src.rows, src.cols]).unwrap();
            let weights = importance.expert_weights(&name, src.cols, src.experts).unwrap().unwrap();
            for e in 0..src.experts {
                let values = src.expert_f32(&source, e).unwrap();
                let want = match &weights[e] {
                    Some(w) => group::quantize_weighted(f, &values, src.rows, src.cols, w).unwrap(),
                    None => group::quantize(f, &values, src.rows, src.cols).unwrap(),
                };
                assert_eq!(back.expert_f32(&native, e).unwrap(), want.view().dequantize(), "{name} expert {e}");
                assert_eq!(weights[e].is_none(), tokens[e] < MIN_EXPERT_TOKENS);
                if weights[e].is_some() {
                    weighted += 1
                } else {
                    thin += 1
                }
            }
            let unweighted: Vec<u64> =
                coverage[&name]["unweighted"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
            assert_eq!(
                unweighted,
                (0..4).filter(|&e| tokens[e] < MIN_EXPERT_TOKENS).map(|e| e as u64).collect::<Vec<_>>()
            );
            per_stack.push(tokens);
        }
        // gate/up and down of an expert see the same tokens.
        assert_eq!(per_stack[0], per_stack[1]);
    }
    println!("{weighted} expert matrices weighted, {thin} rounded unweighted");
    assert!(weighted > 0 && thin > 0, "both rules exercised: {weighted} weighted, {thin} unweighted");
    std::fs::remove_dir_all(&out).unwrap();
}
