//! `--imatrix FILE` / `--save-imatrix FILE`: an importance matrix weighting the scale search of GGUF types and
//! `--method rtn`, read from a file (llama-imatrix's GGUF or legacy `.dat`, or lowbit's) or collected from the
//! calibration data as llama-imatrix collects it (`--samples` consecutive chunks of `--seq-len` tokens) and saved.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::source::ModelSource;
use lowbit_model::{CalibrationFactory, Model};
use lowbit_quant::imatrix::Importance;

use crate::calibration::CalibArgs;
use crate::table::thousands;

#[derive(clap::Args, Clone)]
pub struct ImportanceArgs {
    /// An importance matrix (llama-imatrix's GGUF or legacy .dat file, or one lowbit saved) weighting the
    /// quantizers' scale search: GGUF --type and --method rtn.
    #[arg(long, conflicts_with = "save_imatrix")]
    pub imatrix: Option<PathBuf>,
    /// Collect an importance matrix from the calibration data (--calib; --samples consecutive chunks of --seq-len
    /// tokens, as llama-imatrix reads its text), save it here in llama-imatrix's GGUF format, and use it.
    #[arg(long)]
    pub save_imatrix: Option<PathBuf>,
}

/// An importance matrix and the name the quantized file records for it.
pub struct Loaded {
    pub matrix: Importance,
    pub file: String,
}

/// The importance matrix `args` ask for, if any: read, or collected on `model`'s calibration chunks and saved.
pub fn prepare(args: &ImportanceArgs, model: &Path, calib: &CalibArgs) -> anyhow::Result<Option<Loaded>> {
    if let Some(path) = &args.imatrix {
        let matrix = Importance::read(path)?;
        let file = path.display().to_string();
        println!("imatrix {file}: {} entries, {} chunks", matrix.entries.len(), matrix.chunk_count);
        return Ok(Some(Loaded { matrix, file }));
    }
    let Some(out) = &args.save_imatrix else { return Ok(None) };
    let source = ModelSource::open(model)?;
    let chunks = crate::calibration::load_chunks(&source, calib)?;
    let net = Model::load(&source, &CalibrationFactory)?;
    let bar = ProgressBar::new(chunks.samples.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} chunks  importance matrix  [{elapsed} < {eta}]",
    )?);
    let dataset = crate::calibration::path(calib).display().to_string();
    let matrix = Importance::collect(&net, &chunks.samples, vec![dataset], &|i| bar.set_position(i as u64 + 1))?;
    bar.finish_and_clear();
    matrix.write(out).with_context(|| format!("writing {}", out.display()))?;
    let tokens = chunks.samples.iter().map(Vec::len).sum::<usize>();
    println!(
        "imatrix -> {}: {} entries, {} chunks of {} tokens ({} tokens)",
        out.display(),
        matrix.entries.len(),
        matrix.chunk_count,
        matrix.chunk_size,
        thousands(tokens as u64)
    );
    Ok(Some(Loaded { matrix, file: out.display().to_string() }))
}
