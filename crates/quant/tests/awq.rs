//! AWQ on the tiny Hugging Face fixtures (Llama with grouped-query attention, Qwen2 with q/k/v biases, Gemma 3 with
//! its norm offset and post-norms): folding scales into the model leaves its function unchanged, and the scale
//! search finds what plain rounding loses on an outlying input channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lowbit_formats::native::GroupFormat;
use lowbit_formats::source::ModelSource;
use lowbit_model::{DenseF32, F32Factory, Logits, Model, Proj, Site};
use lowbit_quant::awq::{self, AwqOptions, BlockWeights, SiteScales};
use lowbit_quant::grid::Target;
use lowbit_testdata::Rng;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/data/hf_forward").join(name)
}

fn tokens(vocab: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % vocab) as u32).collect()
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(tokens.len()).unwrap();
    model.forward(tokens, &mut cache, Logits::From(0)).unwrap()
}

fn block_weights(source: &ModelSource, block: usize) -> BlockWeights {
    Proj::ALL
        .into_iter()
        .map(|p| {
            let (shape, w) = source.tensor_f32(&p.tensor_name(block)).unwrap();
            (p, (shape[0], shape[1], w.into()))
        })
        .collect()
}

fn install(model: &mut Model, block: usize, weights: &BlockWeights) {
    for (p, (rows, cols, w)) in weights {
        model.set_projection(block, *p, Box::new(DenseF32::new(w.clone(), *rows, *cols))).unwrap();
    }
}

/// Random scales in [0.25, 4) for every site; o's repeat one value per v channel over the query heads reading it.
fn random_scales(model: &Model, rng: &mut Rng) -> Vec<SiteScales> {
    let c = &model.config;
    let (hd, group) = (c.head_dim, c.n_heads / c.n_kv_heads);
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| 4f32.powf(2.0 * rng.unit() - 1.0)).collect() };
    let kv = draw(c.kv_dim());
    let o: Vec<f32> = (0..c.q_dim()).map(|i| kv[(i / hd / group) * hd + i % hd]).collect();
    let widths = [draw(c.hidden_size), o, draw(c.hidden_size), draw(c.intermediate_size)];
    Site::BLOCK
        .into_iter()
        .zip(widths)
        .map(|(site, scales)| SiteScales { site, tensors: Vec::new(), alpha: 0.5, rtn_error: 0.0, error: 0.0, scales })
        .collect()
}

fn folding_keeps_the_function(name: &str) {
    let source = ModelSource::open(&fixture(name)).unwrap();
    let mut model = Model::load(&source, &F32Factory).unwrap();
    let input = tokens(model.config.vocab_size, 12);
    let before = logits(&model, &input);
    let mut rng = Rng::new(7);
    let mut changed = BTreeMap::new();
    for block in 0..model.n_blocks() {
        let mut weights = block_weights(&source, block);
        let scales = random_scales(&model, &mut rng);
        changed.extend(awq::apply(&mut model, block, &scales, &mut weights).unwrap());
        install(&mut model, block, &weights);
    }
    let after = logits(&model, &input);
    let worst = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let range = before.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(worst <= 1e-4 * range.max(1.0), "{name}: logits moved by {worst} (largest {range})");
    // Scales far from 1 change what is stored: the norms, and v's bias where the model has one.
    assert!(changed.contains_key("blk.0.attn_norm.weight") && changed.contains_key("blk.1.ffn_norm.weight"));
    assert_eq!(changed.contains_key("blk.0.attn_v.bias"), model.config.qkv_bias, "{name}");
}

#[test]
fn folding_keeps_llama_with_grouped_query_attention() {
    folding_keeps_the_function("llama");
}

#[test]
fn folding_keeps_qwen2_with_biases() {
    folding_keeps_the_function("qwen2");
}

#[test]
fn folding_keeps_gemma3_with_its_norm_offset() {
    folding_keeps_the_function("gemma3");
}

/// One input channel of the MLP made 40 times larger (its norm weight, as real models' outlier channels are): the
/// search picks a scale that protects it, and the MLP's output error falls well below plain rounding's.
#[test]
fn the_search_protects_an_outlying_channel() {
    let source = ModelSource::open(&fixture("llama")).unwrap();
    let mut model = Model::load(&source, &F32Factory).unwrap();
    model.site_norm_mut(0, Site::MlpIn).unwrap()[5] *= 40.0;
    let weights = block_weights(&source, 0);
    let format = GroupFormat::new(3, 32, true).unwrap();
    let targets: BTreeMap<Proj, Target> = Proj::ALL.into_iter().map(|p| (p, Target::Group(format))).collect();
    let x = model.embed(&tokens(model.config.vocab_size, 48)).unwrap();
    let mut cache = model.new_cache(48).unwrap();
    let opts = AwqOptions::default();
    let found = awq::search_block(&mut model, 0, &[(&x, 48)], &weights, &targets, None, &opts, &mut cache).unwrap();
    assert_eq!(found.len(), 4);
    let mlp = found.iter().find(|f| f.site == Site::MlpIn).unwrap();
    assert!(mlp.alpha > 0.0, "α = 0: {mlp:?}");
    assert!(mlp.error < 0.7 * mlp.rtn_error, "{} vs round to nearest {}", mlp.error, mlp.rtn_error);
    let protected = mlp.scales[5];
    assert!(mlp.scales.iter().enumerate().all(|(i, &s)| i == 5 || s < protected), "{:?}", mlp.scales);
    // The search ran on the original weights and left them in place.
    let fresh = Model::load(&source, &F32Factory).unwrap();
    let probe = vec![0.5f32; model.config.hidden_size];
    for p in [Proj::Gate, Proj::Up] {
        let (mut a, mut b) = (vec![0f32; 128], vec![0f32; 128]);
        model.projection(0, p).unwrap().forward(&probe, 1, &mut a);
        fresh.projection(0, p).unwrap().forward(&probe, 1, &mut b);
        assert_eq!(a, b, "{p:?}");
    }
}
