//! Part sensitivity on SmolLM2: a build that differs from the original in one projection of one block is
//! sensitive there and nowhere else, and both models come back from the measurement as they went in.

use lowbit_eval::sensitivity::part_sensitivity;
use lowbit_formats::source::ModelSource;
use lowbit_model::{DenseF32, F32Factory, Logits, Model, Part, Proj};

#[test]
fn only_the_changed_block_is_sensitive() {
    let Some(path) = lowbit_testdata::model(lowbit_testdata::SMOLLM2) else { return };
    let source = ModelSource::open(&path).unwrap();
    let mut original = Model::load(&source, &F32Factory).unwrap();
    let mut build = Model::load(&source, &F32Factory).unwrap();
    let (changed, p) = (3, Proj::Down);
    let (_, down) = source.tensor_f32(&p.tensor_name(changed)).unwrap();
    let proj = build.projection(changed, p).unwrap();
    let (rows, cols) = (proj.out_features(), proj.in_features());
    // Every weight's sign flipped: a gross error confined to one matrix.
    let flipped: Vec<f32> = down.iter().map(|v| -v).collect();
    build.set_projection(changed, p, Box::new(DenseF32::new(flipped.into(), rows, cols))).unwrap();

    let windows: Vec<Vec<u32>> = (0..2).map(|w| (0..24).map(|i| (i * 977 + w * 131 + 13) % 20_000).collect()).collect();
    let before = |m: &Model| {
        let mut cache = m.new_cache(24).unwrap();
        m.forward(&windows[0], &mut cache, Logits::Last).unwrap()
    };
    let (original_logits, build_logits) = (before(&original), before(&build));
    let mut seen = Vec::new();
    let kld =
        part_sensitivity(&mut original, &mut build, &windows, &mut |done, total| seen.push((done, total))).unwrap();

    let parts = original.n_blocks() + 1;
    assert_eq!(kld.len(), parts);
    assert_eq!(kld.last().unwrap().0, Part::Embedding);
    for (part, k) in &kld {
        match *part == Part::Block(changed) {
            true => assert!(*k > 0.01, "{part}: {k}"),
            false => assert_eq!(*k, 0.0, "{part}"),
        }
    }
    assert_eq!(seen.last(), Some(&(parts, parts)));
    assert_eq!(before(&original), original_logits, "the original came back changed");
    assert_eq!(before(&build), build_logits, "the build came back changed");
}
