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

/// Per position, the largest |logit error| relative to the largest reference logit; printed under `what`.
fn position_errors(what: &str, reference: &[f32], quantized: &[f32]) -> Vec<f32> {
    let mag = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let errors: Vec<f32> = reference
        .chunks(512)
        .zip(quantized.chunks(512))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / mag)
        .collect();
    println!("{what}: max |logit error| per position, relative to max |logit| {mag:.2}: {errors:.3?}");
    errors
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
    position_errors(&format!("{variant} int{bits}"), &reference, &quantized)
}

/// NF4 expert by expert: each expert of a stack whose rows are whole blocks of 64 is its own NF4 matrix (own
/// offset and chunk scales), reading back as the reference quantizer's NF4 of that expert; stacks of other widths,
/// the router and the biases stay wide; the model runs from the directory close to the f32 reference.
#[test]
fn nf4_quantizes_each_expert_on_its_own() {
    use lowbit_formats::native::nf4;
    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let out = std::env::temp_dir().join(format!("lowbit-native-moe-nf4-{}", std::process::id()));
    export(&source, &out, &NativeScheme::Nf4, None, None, &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    let ModelSource::Native(m) = &native else { panic!("not a native directory") };
    for block in 0..2 {
        // gate/up rows are 64 wide (one NF4 block); down's are 96, which NF4's blocks of 64 do not divide.
        let name = format!("blk.{block}.ffn_gate_up_exps.weight");
        assert!(matches!(m.spec(&name).unwrap().storage, Storage::Nf4 { .. }), "{name}");
        let src = ExpertStack::named(&source, &name).unwrap();
        let back = ExpertStack::named(&native, &name).unwrap();
        assert_eq!((back.experts, back.rows, back.cols), (src.experts, src.rows, src.cols));
        for e in 0..src.experts {
            let want = nf4::quantize(&src.expert_f32(&source, e).unwrap(), src.rows, src.cols).unwrap();
            assert_eq!(back.expert_f32(&native, e).unwrap(), want.view().dequantize(), "{name} expert {e}");
        }
        for wide in ["ffn_down_exps.weight", "ffn_gate_inp.weight", "ffn_gate_up_exps.bias", "ffn_down_exps.bias"] {
            let storage = &m.spec(&format!("blk.{block}.{wide}")).unwrap().storage;
            assert!(matches!(storage, Storage::Plain { .. }), "{wide}: {storage:?}");
        }
    }
    let reference = logits(&Model::load(&source, &F32Factory).unwrap());
    let quantized = logits(&Model::load(&native, &GroupFactory::new(&native)).unwrap());
    std::fs::remove_dir_all(&out).unwrap();
    let errors = position_errors("tiny_mxfp4 nf4", &reference, &quantized);
    // As int4-g32's (a mean of 0.33): this random model's logits move a third of their largest at 4 bits.
    let mean = errors.iter().sum::<f32>() / errors.len() as f32;
    assert!(mean < 0.45, "mean {mean}: {errors:?}");
}

/// Palettes expert by expert: each expert of a stack is palettized on its own (its rows' palettes never shared
/// with another expert), reading back as the reference palettizer's output for that expert; the router and biases
/// stay wide; the model runs from the directory on the look-up-table kernels close to the f32 reference.
#[test]
fn palettes_are_made_expert_by_expert() {
    use lowbit_formats::native::PaletteFormat;
    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let out = std::env::temp_dir().join(format!("lowbit-native-moe-lut-{}", std::process::id()));
    let format = PaletteFormat::new(4, Some(8), true).unwrap();
    export(&source, &out, &NativeScheme::Palette { format, seed: 3 }, None, None, &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    let ModelSource::Native(m) = &native else { panic!("not a native directory") };
    for block in 0..2 {
        for stack in ["ffn_gate_up_exps", "ffn_down_exps"] {
            let name = format!("blk.{block}.{stack}.weight");
            assert!(matches!(m.spec(&name).unwrap().storage, Storage::Palette { .. }), "{name}");
            let src = ExpertStack::named(&source, &name).unwrap();
            let back = ExpertStack::named(&native, &name).unwrap();
            assert_eq!((back.experts, back.rows, back.cols), (src.experts, src.rows, src.cols));
            for e in 0..src.experts {
                let values = src.expert_f32(&source, e).unwrap();
                let want = lowbit_quant::palette::palettize(format, &values, src.rows, src.cols, None, 3).unwrap();
                assert_eq!(back.expert_f32(&native, e).unwrap(), want.view().dequantize(), "{name} expert {e}");
            }
        }
        for wide in ["ffn_gate_inp.weight", "ffn_gate_up_exps.bias", "ffn_down_exps.bias"] {
            let storage = &m.spec(&format!("blk.{block}.{wide}")).unwrap().storage;
            assert!(matches!(storage, Storage::Plain { .. }), "{wide}: {storage:?}");
        }
    }
    let reference = logits(&Model::load(&source, &F32Factory).unwrap());
    let quantized = logits(&Model::load(&native, &GroupFactory::new(&native)).unwrap());
    std::fs::remove_dir_all(&out).unwrap();
    let errors = position_errors("tiny_mxfp4 lut4-g8-cs", &reference, &quantized);
    let mean = errors.iter().sum::<f32>() / errors.len() as f32;
    assert!(mean < 0.45, "mean {mean}: {errors:?}");
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

/// GPTQ expert by expert through the layer-by-layer driver: each expert's Hessian holds the rows of the tokens
/// routed to it, an expert routed fewer than `MIN_EXPERT_TOKENS` is rounded to nearest (bit for bit the plain
/// quantizer's rounding), GPTQ lowers the other experts' output error below round to nearest on the same inputs,
/// and the exported directory holds exactly the driver's rounding of every expert.
#[test]
fn gptq_rounds_each_expert_on_its_routed_tokens() {
    use lowbit_quant::gptq::GptqOptions;
    use lowbit_quant::grid::{Quantized, Target};
    use lowbit_quant::imatrix::MIN_EXPERT_TOKENS;
    use lowbit_quant::layerwise::{quantize_model, LayerwiseResult, Plan};
    use std::collections::BTreeMap;

    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let scheme = RtnScheme::new(4, Some(32), true).unwrap();
    let chunks: Vec<Vec<u32>> = (0..6).map(|c| (0..24).map(|i| (i * 97 + c * 31 + 7) % 512).collect()).collect();
    // Only the experts are rounded, so both runs give block 0's experts the same inputs.
    let experts_only = |name: &str, shape: &[usize]| {
        scheme.format_for(name, shape).filter(|_| name.contains("_exps")).map(Target::Group)
    };
    let run = |plan: Plan| -> LayerwiseResult {
        let mut model = Model::load(&source, &F32Factory).unwrap();
        quantize_model(&mut model, &source, &chunks, &experts_only, plan, &|_| {}).unwrap()
    };
    let gptq = run(Plan { awq: None, gptq: Some(GptqOptions::default()) });
    let rtn = run(Plan::default());
    let error = |r: &LayerwiseResult, name: &str| r.reports.iter().find(|t| t.name == name).unwrap().output_error;

    let (mut by_gptq, mut thin) = (0, 0);
    let (mut gptq_error, mut rtn_error) = (0.0, 0.0);
    for block in 0..2 {
        let mut per_stack = Vec::new();
        for stack in ["ffn_gate_up_exps", "ffn_down_exps"] {
            let name = format!("blk.{block}.{stack}.weight");
            let coverage = &gptq.coverage[&name];
            // Every token goes to 2 of the 4 experts.
            assert_eq!(coverage.tokens.iter().sum::<usize>(), 2 * 6 * 24, "{name}");
            let src = ExpertStack::named(&source, &name).unwrap();
            let f = scheme.format_for(&name, &[src.experts, src.rows, src.cols]).unwrap();
            let Quantized::Group(m) = &gptq.tensors[&name] else { panic!("{name}: not a group matrix") };
            let Quantized::Group(r) = &rtn.tensors[&name] else { panic!("{name}: not a group matrix") };
            let (values, rtn_values) = (m.view().dequantize(), r.view().dequantize());
            let n = src.rows * src.cols;
            for e in 0..src.experts {
                let plain = group::quantize(f, &src.expert_f32(&source, e).unwrap(), src.rows, src.cols).unwrap();
                let plain = plain.view().dequantize();
                assert_eq!(rtn_values[e * n..(e + 1) * n], plain[..], "{name} expert {e}: round to nearest");
                let fell_back = (coverage.tokens[e] as u64) < MIN_EXPERT_TOKENS;
                assert_eq!(coverage.rounded_to_nearest.contains(&e), fell_back, "{name} expert {e}");
                if fell_back {
                    assert_eq!(values[e * n..(e + 1) * n], plain[..], "{name} expert {e}: too few tokens for GPTQ");
                    thin += 1;
                } else {
                    assert!(gptq.reports.iter().any(|t| t.name == format!("{name}[{e}]") && t.gptq.is_some()));
                    by_gptq += 1;
                    if block == 0 && stack == "ffn_gate_up_exps" {
                        let expert = format!("{name}[{e}]");
                        gptq_error += error(&gptq, &expert);
                        rtn_error += error(&rtn, &expert);
                    }
                }
            }
            per_stack.push(coverage.tokens.clone());
        }
        // gate/up and down of an expert see the same tokens.
        assert_eq!(per_stack[0], per_stack[1]);
    }
    println!("{by_gptq} expert matrices by GPTQ, {thin} rounded to nearest; block 0 gate/up output error {gptq_error:.4} (round to nearest {rtn_error:.4})");
    assert!(by_gptq > 0 && thin > 0, "both rules exercised: {by_gptq} by GPTQ, {thin} to nearest");
    assert!(gptq_error < 0.8 * rtn_error, "GPTQ {gptq_error} against round to nearest {rtn_error}");

    let out = std::env::temp_dir().join(format!("lowbit-native-moe-gptq-{}", std::process::id()));
    let prepared = group_prepared("gptq", &gptq, BTreeMap::new());
    export(&source, &out, &NativeScheme::Rtn(scheme), Some(&prepared), None, &|_, _| {}).unwrap();
    let native = ModelSource::open(&out).unwrap();
    for (name, m) in &prepared.tensors {
        let back = ExpertStack::named(&native, name).unwrap();
        let values = m.view().dequantize();
        let n = back.rows * back.cols;
        for e in 0..back.experts {
            assert_eq!(back.expert_f32(&native, e).unwrap(), values[e * n..(e + 1) * n], "{name} expert {e}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// GPTQ onto a palette per row and onto the ternary grid, expert by expert: each stack comes back as one matrix of
/// its experts' rows (palettes per row, or 2-bit codes 1..3 only) with less output error on the calibration inputs
/// than rounding each expert to nearest on the same grid, is written as it is, and the model runs from the
/// directory.
#[test]
fn gptq_onto_palettes_and_ternary_per_expert() {
    use lowbit_formats::native::PaletteFormat;
    use lowbit_quant::gptq::GptqOptions;
    use lowbit_quant::grid::{Quantized, Target};
    use lowbit_quant::layerwise::{quantize_model, Plan};
    use lowbit_quant::native_export::Prepared;
    use lowbit_quant::ternary::{TernaryRule, TernaryScheme};
    use std::collections::BTreeMap;

    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let chunks: Vec<Vec<u32>> = (0..6).map(|c| (0..24).map(|i| (i * 97 + c * 31 + 7) % 512).collect()).collect();
    let palette = PaletteFormat::new(4, Some(1), false).unwrap();
    let ternary = TernaryScheme { rule: TernaryRule::Exact, group: 32, packed: false };
    let reference = logits(&Model::load(&source, &F32Factory).unwrap());
    for (target, scheme) in [
        (Target::Palette { format: palette, seed: 0 }, NativeScheme::Palette { format: palette, seed: 0 }),
        (Target::Ternary { group: 32 }, NativeScheme::Ternary(ternary)),
    ] {
        let experts_only = |_: &str, shape: &[usize]| (shape.len() == 3).then_some(target);
        let run = |plan: Plan| {
            let mut model = Model::load(&source, &F32Factory).unwrap();
            quantize_model(&mut model, &source, &chunks, &experts_only, plan, &|_| {}).unwrap()
        };
        let result = run(Plan { awq: None, gptq: Some(GptqOptions::default()) });
        // Block 0's gate/up experts that GPTQ rounded: the same inputs in both runs.
        let rtn = run(Plan::default());
        let by_gptq: Vec<&str> = result
            .reports
            .iter()
            .filter(|t| t.gptq.is_some() && t.name.starts_with("blk.0.ffn_gate_up_exps"))
            .map(|t| t.name.as_str())
            .collect();
        assert!(!by_gptq.is_empty());
        let error = |r: &lowbit_quant::layerwise::LayerwiseResult| -> f64 {
            r.reports.iter().filter(|t| by_gptq.contains(&t.name.as_str())).map(|t| t.output_error).sum()
        };
        let (gptq_error, rtn_error) = (error(&result), error(&rtn));
        println!("{}: block 0 gate/up output error {gptq_error:.6} (round to nearest {rtn_error:.6})", target.name());
        assert!(gptq_error < 0.9 * rtn_error, "{}: GPTQ {gptq_error} against {rtn_error}", target.name());
        let (mut tensors, mut palettes) = (BTreeMap::new(), BTreeMap::new());
        for (name, q) in result.tensors {
            let src = ExpertStack::named(&source, &name).unwrap();
            match q {
                Quantized::Palette(m) => {
                    assert_eq!((m.rows, m.lut.len()), (src.experts * src.rows, src.experts * src.rows * 16 * 2));
                    palettes.insert(name, m);
                }
                Quantized::Group(m) => {
                    assert_eq!(m.rows, src.experts * src.rows, "{name}");
                    assert!(m.codes.iter().all(|&b| (0..4).all(|i| b >> (2 * i) & 3 != 0)), "{name}: not ternary");
                    tensors.insert(name, m);
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(tensors.len() + palettes.len(), 4, "every stack of both blocks");
        let prepared = Prepared {
            method: "gptq".into(),
            tensors,
            palettes,
            values: BTreeMap::new(),
            act_scales: BTreeMap::new(),
            details: serde_json::json!({}),
        };
        let out = std::env::temp_dir().join(format!("lowbit-native-moe-gptq-grid-{}", std::process::id()));
        export(&source, &out, &scheme, Some(&prepared), None, &|_, _| {}).unwrap();
        let native = ModelSource::open(&out).unwrap();
        for (name, m) in &prepared.palettes {
            assert_eq!(native.tensor_f32(name).unwrap().1, m.view().dequantize(), "{name}");
        }
        for (name, m) in &prepared.tensors {
            assert_eq!(native.tensor_f32(name).unwrap().1, m.view().dequantize(), "{name}");
        }
        let quantized = logits(&Model::load(&native, &GroupFactory::new(&native)).unwrap());
        std::fs::remove_dir_all(&out).unwrap();
        let errors = position_errors(&scheme.name(), &reference, &quantized);
        assert!(errors.iter().all(|e| e.is_finite()), "{errors:?}");
    }
}

/// Static activation steps for a mixture of experts: one per stack (gate/up's from the MLP norm's output, down's
/// from all experts' hidden rows), none for the dense names the block lacks; written into the directory and used
/// by the experts at run time, the logits stay within twice the error of dynamic activations.
#[test]
fn experts_take_static_activation_steps() {
    use lowbit_quant::act_scales;
    use lowbit_quant::native_export::Prepared;
    use std::collections::BTreeMap;

    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    let windows: Vec<Vec<u32>> = (0..6).map(|c| (0..24).map(|i| (i * 97 + c * 31 + 7) % 512).collect()).collect();
    let steps = act_scales::calibrate(&model, &windows, &|_| {}).unwrap();
    for block in 0..2 {
        for stack in ["ffn_gate_up_exps", "ffn_down_exps"] {
            let step = steps[&format!("blk.{block}.{stack}.weight")];
            assert!(step.is_finite() && step > 0.0, "{stack}: {step}");
        }
        assert!(!steps.contains_key(&format!("blk.{block}.ffn_gate.weight")));
        assert!(!steps.contains_key(&format!("blk.{block}.ffn_down.weight")));
    }
    let scheme = NativeScheme::Rtn(RtnScheme::new(8, Some(32), true).unwrap());
    let reference = logits(&model);
    let mut mean_error = Vec::new();
    for act_scales in [BTreeMap::new(), steps] {
        let prepared = Prepared {
            method: "rtn".into(),
            tensors: BTreeMap::new(),
            palettes: BTreeMap::new(),
            values: BTreeMap::new(),
            act_scales: act_scales.clone(),
            details: serde_json::json!({}),
        };
        let out = std::env::temp_dir().join(format!("lowbit-native-moe-static-{}", std::process::id()));
        export(&source, &out, &scheme, Some(&prepared), None, &|_, _| {}).unwrap();
        let native = ModelSource::open(&out).unwrap();
        for (name, &step) in &act_scales {
            assert_eq!(native.act_scale(name), Some(step), "{name}");
        }
        let quantized = logits(&Model::load(&native, &GroupFactory::new(&native)).unwrap());
        std::fs::remove_dir_all(&out).unwrap();
        let what = if act_scales.is_empty() { "int8 dynamic" } else { "int8 static" };
        let errors = position_errors(what, &reference, &quantized);
        mean_error.push(errors.iter().sum::<f32>() / errors.len() as f32);
    }
    // Different (the steps are used), and within twice dynamic's error (0.049 against 0.036 when written).
    assert!(mean_error[1] != mean_error[0] && mean_error[1] < 2.0 * mean_error[0], "{mean_error:?}");
}

/// Calibration keeps MXFP4 experts mapped (`CalibrationFactory`): the driver rounds exactly as on the all-f32 model,
/// and leaves each block's experts as they were loaded once it is done, so the f32 copies of one block's rounded
/// experts are all it holds of them.
#[test]
fn calibration_keeps_mxfp4_experts_packed_and_rounds_the_same() {
    use lowbit_model::CalibrationFactory;
    use lowbit_quant::gptq::GptqOptions;
    use lowbit_quant::grid::Target;
    use lowbit_quant::layerwise::{quantize_model, Plan};

    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let chunks: Vec<Vec<u32>> = (0..6).map(|c| (0..24).map(|i| (i * 97 + c * 31 + 7) % 512).collect()).collect();
    let scheme = RtnScheme::new(4, Some(32), true).unwrap();
    let target = |name: &str, shape: &[usize]| scheme.format_for(name, shape).map(Target::Group);
    let plan = Plan { awq: None, gptq: Some(GptqOptions::default()) };
    let mut f32_model = Model::load(&source, &F32Factory).unwrap();
    let mut packed = Model::load(&source, &CalibrationFactory).unwrap();
    let loaded = packed.weight_bytes();
    assert!(loaded < f32_model.weight_bytes(), "{loaded} bytes with MXFP4 experts");
    let want = quantize_model(&mut f32_model, &source, &chunks, &target, plan, &|_| {}).unwrap();
    let got = quantize_model(&mut packed, &source, &chunks, &target, plan, &|_| {}).unwrap();
    assert_eq!(got.tensors.keys().collect::<Vec<_>>(), want.tensors.keys().collect::<Vec<_>>());
    for (name, q) in &got.tensors {
        assert_eq!(format!("{q:?}"), format!("{:?}", want.tensors[name]), "{name}");
    }
    // The projections hold their rounded values in f32 as they held the loaded ones; the experts are MXFP4 again.
    assert_eq!(packed.weight_bytes(), loaded);
}

/// AWQ's fold in a mixture of experts: the MLP norm divided by `s`, the router's and every expert's gate/up columns
/// multiplied by it, the block computes what it did, routing included (a router left unscaled would see `x/s` and
/// pick other experts).
#[test]
fn awq_folds_the_mlp_scale_through_the_router() {
    use lowbit_model::{DenseF32, ExpertMatrix, Site};
    use lowbit_quant::awq::{apply, BlockWeights, SiteScales};

    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let mut model = Model::load(&source, &F32Factory).unwrap();
    let d = model.config.hidden_size;
    let mut r = lowbit_testdata::Rng::new(3);
    let (n, x) = (16, r.units(16 * d));
    let output = |m: &Model| m.ffn_output_of(0, &m.site_input(0, Site::MlpIn, &x, n).unwrap(), n, &mut ()).unwrap();
    let before = output(&model);
    let scales: Vec<f32> = r.units(d).iter().map(|u| 2f32.powf(2.0 * u)).collect();
    let found = SiteScales {
        site: Site::MlpIn,
        tensors: Vec::new(),
        alpha: 0.5,
        rtn_error: 0.0,
        error: 0.0,
        scales: scales.clone(),
    };
    let changed = apply(&mut model, 0, &[found], &mut BlockWeights::new()).unwrap();
    let names: Vec<&str> = changed.keys().map(String::as_str).collect();
    assert_eq!(names, ["blk.0.ffn_gate_inp.weight", "blk.0.post_attention_norm.weight"]);
    let stack = ExpertStack::named(&source, "blk.0.ffn_gate_up_exps.weight").unwrap();
    for e in 0..stack.experts {
        let mut w = stack.expert_f32(&source, e).unwrap();
        lowbit_model::scale_columns(&mut w, &scales);
        let scaled = Box::new(DenseF32::new(w.into(), stack.rows, stack.cols));
        model.set_expert(0, ExpertMatrix::GateUp, e, scaled).unwrap();
    }
    let after = output(&model);
    let mag = before.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = before.iter().zip(&after).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst < 1e-4 * mag, "largest change {worst} of {mag}");
}

/// AWQ on GPT-OSS blocks: attention's sites as in a dense block, and one scale for the router and every expert's
/// gate/up, searched on the mixture's output; the scaled norm and router are written with the rounded experts. The
/// fixture's random weights give every channel alike activations, where AWQ has nothing to work with; real models
/// have a few channels far larger than the rest, so the MLP norm is made to give three channels 8 times the others'.
/// The AWQ directory then runs with less logit error than rounding to nearest.
#[test]
fn awq_searches_one_scale_for_the_experts_gate_up() {
    use lowbit_model::Site;
    use lowbit_quant::awq::AwqOptions;
    use lowbit_quant::grid::Target;
    use lowbit_quant::layerwise::{quantize_model, LayerwiseResult, Plan};
    use std::collections::BTreeMap;

    let source = ModelSource::open(&fixture("tiny_mxfp4")).unwrap();
    let scheme = RtnScheme::new(3, Some(32), true).unwrap();
    let chunks: Vec<Vec<u32>> = (0..6).map(|c| (0..24).map(|i| (i * 97 + c * 31 + 7) % 512).collect()).collect();
    let target = |name: &str, shape: &[usize]| scheme.format_for(name, shape).map(Target::Group);
    let with_outliers = |model: &mut Model| -> BTreeMap<String, Vec<f32>> {
        (0..2)
            .map(|block| {
                let name = model.site_norm_name(block, Site::MlpIn).unwrap();
                let norm = model.site_norm_mut(block, Site::MlpIn).unwrap();
                [3, 17, 40].into_iter().for_each(|c| norm[c] *= 8.0);
                (name, norm.clone())
            })
            .collect()
    };
    let run = |plan: Plan| -> LayerwiseResult {
        let mut model = Model::load(&source, &F32Factory).unwrap();
        with_outliers(&mut model);
        quantize_model(&mut model, &source, &chunks, &target, plan, &|_| {}).unwrap()
    };
    let awq = run(Plan { awq: Some(AwqOptions { grid: 10, samples: 3, clip: false }), gptq: None });
    let rtn = run(Plan::default());
    for block in 0..2 {
        let sites: Vec<Site> =
            awq.awq.iter().filter(|f| f.tensors[0].starts_with(&format!("blk.{block}."))).map(|f| f.site).collect();
        assert_eq!(sites, [Site::AttnIn, Site::AttnOut, Site::MlpIn], "block {block}: down takes no scale");
        for f in awq.awq.iter().filter(|f| f.tensors[0].starts_with(&format!("blk.{block}."))) {
            println!(
                "block {block} {:?}: α {} error {:.3e} (round to nearest {:.3e})",
                f.site, f.alpha, f.error, f.rtn_error
            );
            assert!(f.error <= f.rtn_error);
        }
        let gate_up = awq
            .awq
            .iter()
            .find(|f| f.site == Site::MlpIn && f.tensors[0].starts_with(&format!("blk.{block}.")))
            .unwrap();
        assert_eq!(
            gate_up.tensors,
            [format!("blk.{block}.ffn_gate_up_exps.weight"), format!("blk.{block}.ffn_gate_inp.weight")]
        );
        for changed in ["post_attention_norm.weight", "ffn_gate_inp.weight", "attn_norm.weight", "attn_v.bias"] {
            assert!(awq.values.contains_key(&format!("blk.{block}.{changed}")), "{changed}");
        }
    }
    assert!(awq.awq.iter().any(|f| f.site == Site::MlpIn && f.error < f.rtn_error), "a gate/up scale lowers the error");

    let mut reference = Model::load(&source, &F32Factory).unwrap();
    let outliers = with_outliers(&mut reference);
    // Judged on sequences the calibration did not see.
    let held_out = |model: &Model| -> Vec<f32> {
        let mut all = Vec::new();
        for c in 0..8 {
            let tokens: Vec<u32> = (0..24).map(|i| (i * 53 + c * 29 + 3) % 512).collect();
            let mut cache = model.new_cache(tokens.len()).unwrap();
            all.extend(model.forward(&tokens, &mut cache, Logits::From(0)).unwrap());
        }
        all
    };
    let reference = held_out(&reference);
    let build = |r: &LayerwiseResult, tag: &str| -> Vec<f32> {
        // Rounding to nearest leaves the norms as the source has them: the outliers go in as changed values.
        let mut values = outliers.clone();
        values.extend(r.values.clone());
        let prepared = group_prepared(tag, r, values);
        let out = std::env::temp_dir().join(format!("lowbit-native-moe-{tag}-{}", std::process::id()));
        export(&source, &out, &NativeScheme::Rtn(scheme), Some(&prepared), None, &|_, _| {}).unwrap();
        let native = ModelSource::open(&out).unwrap();
        let back = native.tensor_f32("blk.0.ffn_gate_inp.weight").unwrap().1;
        if let Some(router) = r.values.get("blk.0.ffn_gate_inp.weight") {
            // The router is written in f16, as the export writes every wide matrix.
            assert!(back.iter().zip(router).all(|(a, b)| (a - b).abs() <= 1e-3 * b.abs().max(1e-2)), "{tag}: router");
        }
        let l = held_out(&Model::load(&native, &GroupFactory::new(&native)).unwrap());
        std::fs::remove_dir_all(&out).unwrap();
        l
    };
    let mse = |l: Vec<f32>| reference.iter().zip(&l).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / l.len() as f32;
    let (awq_error, rtn_error) = (mse(build(&awq, "awq")), mse(build(&rtn, "rtn")));
    println!("mean squared logit error: AWQ {awq_error:.4}, round to nearest {rtn_error:.4}");
    assert!(awq_error <= rtn_error, "AWQ {awq_error} against round to nearest {rtn_error}");
}

/// What the export writes from a calibrated run whose every tensor is a group matrix, with `values` for the wide
/// tensors it changed.
fn group_prepared(
    method: &str,
    r: &lowbit_quant::layerwise::LayerwiseResult,
    values: std::collections::BTreeMap<String, Vec<f32>>,
) -> lowbit_quant::native_export::Prepared {
    use lowbit_quant::grid::Quantized;
    let tensors = r
        .tensors
        .iter()
        .map(|(name, q)| match q {
            Quantized::Group(m) => (name.clone(), m.clone()),
            other => panic!("{name}: {other:?}"),
        })
        .collect();
    lowbit_quant::native_export::Prepared {
        method: method.into(),
        tensors,
        palettes: Default::default(),
        values,
        act_scales: Default::default(),
        details: serde_json::json!({}),
    }
}
