//! Opening a model path (GGUF file, Hugging Face directory, lowbit output) with its tokenizer.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::source::ModelSource;
use lowbit_kernels::quant::ActRounding;
use lowbit_model::{F32Factory, GroupFactory, LinearFactory, Model, NativeFactory};
use lowbit_runtime::tokenizer::Tokenizer;

/// How weights are held while the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Formats with integer kernels stay packed and multiply int8-quantized activations
    /// (llama.cpp's method); the rest is dequantized to f32.
    Native,
    /// As native, with activations rounded as llama.cpp rounds them (one int8 scale per 256 values for
    /// k-quant and ternary weights instead of per 32): for comparing with llama.cpp's figures on one file.
    #[value(name = "native-llama")]
    #[serde(rename = "native-llama")]
    NativeLlama,
    /// Every weight dequantized to f32, f32 activations: the reference.
    F32,
}

#[derive(clap::Args, Clone, Copy)]
pub struct RuntimeArgs {
    /// native: packed weights on integer kernels; native-llama: the same with llama.cpp's activation
    /// rounding; f32: everything dequantized (the reference).
    #[arg(long, value_enum, default_value_t = Runtime::Native)]
    pub runtime: Runtime,
}

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

/// A model's size on disk: the file, or the sum of a directory's files (0 when unreadable).
pub fn bytes_on_disk(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(dir) => dir.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

pub fn load(path: &Path, runtime: Runtime) -> anyhow::Result<Loaded> {
    let spinner = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}")?);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner.set_message(format!("loading {}", path.display()));
    let start = Instant::now();
    let source = ModelSource::open(path)?;
    let tokenizer = tokenizer_for(&source).with_context(|| format!("loading the tokenizer of {}", path.display()))?;
    let group_factory = GroupFactory::new(&source);
    let native = NativeFactory::default();
    let llama = NativeFactory { rounding: ActRounding::LlamaCpp };
    let factory: &dyn LinearFactory = match (&source, runtime) {
        // A native directory's group matrices have no f32 form to hand a factory: they always run natively.
        (ModelSource::Native(_), _) => &group_factory,
        (_, Runtime::Native) => &native,
        (_, Runtime::NativeLlama) => &llama,
        (_, Runtime::F32) => &F32Factory,
    };
    let model = Model::load(&source, factory).with_context(|| format!("loading {}", path.display()))?;
    let load_seconds = start.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    Ok(Loaded { model, tokenizer, load_seconds })
}

/// Fails unless `model` splits text into the same tokens as `reference`: models compared token by token (a
/// build and its original) must share a tokenizer. `what` says what the model is to the reference.
pub fn ensure_same_tokenizer(model: &Tokenizer, reference: &Tokenizer, what: &str) -> anyhow::Result<()> {
    let probe = "The quick brown fox, 1905.";
    anyhow::ensure!(
        model.encode(probe, false)? == reference.encode(probe, false)?,
        "{what} tokenizes text differently: they cannot be compared token by token"
    );
    Ok(())
}

/// llama.cpp's perplexity chunking for text tokenized by `tok`: chunks of `ctx`, at most `chunks` of them, BOS
/// in front of each where the tokenizer adds one.
pub fn chunking(tok: &Tokenizer, ctx: usize, chunks: Option<usize>) -> lowbit_eval::PerplexityOptions {
    lowbit_eval::PerplexityOptions { ctx, max_chunks: chunks, bos: if tok.adds_bos() { tok.bos_id() } else { None } }
}
