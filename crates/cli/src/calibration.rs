//! `--calib FILE --samples N --seq-len L --seed S`: the calibration set of calibrated methods, tokenized by
//! the model's own tokenizer and checked before any work starts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lowbit_formats::source::ModelSource;
use lowbit_quant::calib_data::{self, CalibSet, CalibSpec, TokenizerInfo};

/// The calibration text shipped with the project's data (llama.cpp's imatrix text), used when --calib is absent.
const DEFAULT_CALIB: &str = "../shared/data/groups_merged.txt";

#[derive(clap::Args, Clone)]
pub struct CalibArgs {
    /// Calibration data: a text file, or JSON Lines of {"text": ...} or {"input_ids": [...]}
    /// [default: ../shared/data/groups_merged.txt]. Never the evaluation corpus.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Calibration windows.
    #[arg(long, default_value_t = 128)]
    pub samples: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Seed of the window sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The calibration set for the model in `source`: windows at seeded random starts.
pub fn load(source: &ModelSource, args: &CalibArgs) -> anyhow::Result<CalibSet> {
    load_with(source, args, calib_data::load)
}

/// The calibration set for the model in `source` as llama-imatrix reads its text: `--samples` consecutive chunks.
pub fn load_chunks(source: &ModelSource, args: &CalibArgs) -> anyhow::Result<CalibSet> {
    load_with(source, args, calib_data::load_chunks)
}

type Loader = fn(&Path, CalibSpec, &TokenizerInfo) -> Result<CalibSet, calib_data::CalibError>;

fn load_with(source: &ModelSource, args: &CalibArgs, loader: Loader) -> anyhow::Result<CalibSet> {
    let path = path(args);
    anyhow::ensure!(
        args.calib.is_some() || path.exists(),
        "no calibration data: pass --calib FILE (the default {DEFAULT_CALIB} does not exist here)"
    );
    let tok = crate::load::tokenizer_for(source).context("loading the tokenizer for calibration")?;
    let vocab = source.config()?.vocab_size;
    let fingerprint =
        calib_data::vocabulary_fingerprint((0..tok.vocab_size() as u32).map(|i| tok.token_text(i).unwrap_or_default()));
    let tokenize = |text: &str| tok.encode(text, false).map_err(|e| e.to_string());
    let info =
        TokenizerInfo { vocab, bos: tok.adds_bos().then(|| tok.bos_id()).flatten(), fingerprint, tokenize: &tokenize };
    let spec = CalibSpec { samples: args.samples, seq_len: args.seq_len, seed: args.seed };
    Ok(loader(&path, spec, &info)?)
}

/// The calibration file `args` name (the default when none).
pub fn path(args: &CalibArgs) -> PathBuf {
    args.calib.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CALIB))
}
