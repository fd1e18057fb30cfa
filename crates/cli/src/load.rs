//! Opening a model path (GGUF file, Hugging Face directory, lowbit output) with its tokenizer.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::source::ModelSource;
use lowbit_model::{F32Factory, GroupFactory, LinearFactory, Model};
use lowbit_runtime::tokenizer::Tokenizer;

pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_seconds: f64,
}

pub fn tokenizer_for(source: &ModelSource) -> anyhow::Result<Tokenizer> {
    let tok = match source {
        ModelSource::Gguf(file) => Tokenizer::from_gguf(file)?,
        ModelSource::Hf(_) => Tokenizer::from_hf_dir(source.path())?,
        ModelSource::Native(m) => match m.metadata_gguf() {
            Some(file) => Tokenizer::from_gguf(file)?,
            None => Tokenizer::from_hf_dir(source.path())?,
        },
        ModelSource::ConfigOnly { path, .. } => {
            anyhow::bail!("{}: a bare config.json has no weights to run", path.display())
        }
    };
    Ok(tok)
}

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let spinner = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner.set_message(format!("loading {}", path.display()));
    let start = Instant::now();
    let source = ModelSource::open(path)?;
    let tokenizer = tokenizer_for(&source).with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    let group_factory = GroupFactory::new(&source);
    let factory: &dyn LinearFactory = match source {
        ModelSource::Native(_) => &group_factory,
        _ => &F32Factory,
    };
    let model = Model::load(&source, factory).with_context(|| format!("loading {}", path.display()))?;
    let load_seconds = start.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    Ok(Loaded { model, tokenizer, load_seconds })
}
