//! The calibration seam: running the model one block and one site at a time (as the calibration driver does)
//! gives exactly the inputs the whole forward pass shows an observer, site by site, on the real models.

use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, Logits, Model, Observer, Site};

/// Every observation, in order: (block, site, tokens, the inputs).
#[derive(Default)]
struct Record(Vec<(usize, Site, usize, Vec<f32>)>);

impl Observer for Record {
    fn observe(&mut self, block: usize, site: Site, x: &[f32], n: usize) {
        self.0.push((block, site, n, x.to_vec()));
    }
}

fn check(model_file: &str) {
    let Some(path) = lowbit_testdata::model(model_file) else { return };
    let source = ModelSource::open(&path).unwrap();
    let model = Model::load(&source, &F32Factory).unwrap();
    let tokens: Vec<u32> = (0..37).map(|i| (i * 977 + 13) % 20_000).collect();
    let n = tokens.len();

    let mut whole = Record::default();
    let mut cache = model.new_cache(64).unwrap();
    model.forward_observed(&tokens, &mut cache, Logits::From(0), &mut whole).unwrap();

    let mut stepwise = Record::default();
    let mut scratch = model.new_cache(64).unwrap();
    let mut x = model.embed(&tokens).unwrap();
    let add = |x: &mut [f32], y: Vec<f32>| x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    for block in 0..model.n_blocks() {
        let mut see = |site, v: &[f32]| stepwise.observe(block, site, v, n);
        let h = model.site_input(block, Site::AttnIn, &x, n).unwrap();
        see(Site::AttnIn, &h);
        let heads = model.attention_heads_of(block, &h, n, &mut scratch).unwrap();
        see(Site::AttnOut, &heads);
        add(&mut x, model.attention_output_of(block, &heads, n).unwrap());
        let h = model.site_input(block, Site::MlpIn, &x, n).unwrap();
        see(Site::MlpIn, &h);
        let act = model.mlp_hidden_of(block, &h, n).unwrap();
        see(Site::MlpOut, &act);
        add(&mut x, model.mlp_output_of(block, &act, n).unwrap());
    }
    stepwise.0.push((model.n_blocks(), Site::Head, n, model.head_input(&x)));

    assert_eq!(whole.0.len(), 4 * model.n_blocks() + 1);
    for (a, b) in whole.0.iter().zip(&stepwise.0) {
        assert_eq!((a.0, a.1, a.2), (b.0, b.1, b.2));
        assert!(a.3 == b.3, "{model_file}: block {} {:?} differs", a.0, a.1);
    }
    let sites: Vec<Site> = whole.0.iter().take(4).map(|o| o.1).collect();
    assert_eq!(sites, Site::BLOCK);
    let widths: Vec<usize> = whole.0.iter().take(4).map(|o| o.3.len() / n).collect();
    let c = &model.config;
    assert_eq!(widths, [c.hidden_size, c.q_dim(), c.hidden_size, c.intermediate_size]);
}

#[test]
fn smollm2_blockwise_matches_forward() {
    check(lowbit_testdata::SMOLLM2);
}

#[test]
fn gemma3_blockwise_matches_forward() {
    check(lowbit_testdata::GEMMA3);
}
