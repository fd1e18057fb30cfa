//! `lowbit validate`: a quantized build against its original under the acceptance rule, written to
//! validation_report.json (docs/validation.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::validate::{self, Models, Stage, ValidateOptions, ValidationReport, DEFAULT_PROMPTS};
use lowbit_eval::BenchOptions;
use lowbit_formats::source::ModelSource;
use lowbit_model::{F16Factory, Model};
use serde::Serialize;

use crate::load::Runtime;
use crate::table::Table;

#[derive(clap::Args)]
pub struct Args {
    /// The original model (GGUF file, Hugging Face directory or lowbit output directory); runs in f32.
    original: PathBuf,
    /// The quantized build.
    quantized: PathBuf,
    #[command(flatten)]
    settings: Settings,
    /// Where the report goes (default: validation_report.json in the build's directory, or beside a
    /// build file as NAME.validation_report.json).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How the quantized build runs.
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

/// What a validation measures on: the corpus, the prompts and the size of each test.
#[derive(clap::Args, Clone)]
pub struct Settings {
    /// Text the perplexities and KL-divergence are measured on.
    #[arg(long, default_value = "../shared/data/wiki.test.raw")]
    corpus: PathBuf,
    /// Chunks of the corpus scored.
    #[arg(long, default_value_t = 12)]
    chunks: usize,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Prompts for the generation check, one per line (default: 20 built-in plain-text prompts).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Decode steps of the speed test (llama-bench's tg).
    #[arg(long, default_value_t = 128)]
    speed_tokens: usize,
    /// Timed repetitions of the speed test, after one warm-up.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
}

impl Settings {
    /// Refuses a missing corpus or an empty prompts file before any work starts.
    pub fn check(&self) -> anyhow::Result<()> {
        std::fs::metadata(&self.corpus)
            .with_context(|| format!("the corpus {} (set it with --corpus)", self.corpus.display()))?;
        read_prompts(self.prompts.as_deref()).map(drop)
    }
}

/// What validation_report.json holds: the inputs and the report.
#[derive(Serialize)]
struct Output<'a> {
    original: String,
    quantized: String,
    corpus: String,
    /// The prompts file, or "built-in".
    prompts: String,
    runtime: Runtime,
    seconds: f64,
    #[serde(flatten)]
    report: &'a ValidationReport,
}

/// A validation written to its report file.
pub struct Validated {
    pub report: ValidationReport,
    pub json: String,
    pub path: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = args.report.clone().unwrap_or_else(|| default_report_path(&args.quantized));
    let v = validate(&args.original, &args.quantized, args.runtime.runtime, &args.settings, &path)?;
    if args.json {
        println!("{}", v.json);
    } else {
        print_report(&v.report);
        println!("report: {}", v.path.display());
    }
    if !v.report.pass {
        anyhow::bail!("the build fails the acceptance rule: {}", v.report.failed().join(", "));
    }
    Ok(())
}

/// Validates `quantized` (run as `runtime`) against `original` and writes the report to `report_path`.
pub fn validate(
    original_path: &Path,
    quantized_path: &Path,
    runtime: Runtime,
    settings: &Settings,
    report_path: &Path,
) -> anyhow::Result<Validated> {
    let start = Instant::now();
    let text = std::fs::read_to_string(&settings.corpus)
        .with_context(|| format!("reading the corpus {} (set it with --corpus)", settings.corpus.display()))?;
    let prompts = read_prompts(settings.prompts.as_deref())?;

    let original = crate::load::load(original_path, Runtime::F32)?;
    let quantized = crate::load::load(quantized_path, runtime)?;
    let tok = &original.tokenizer;
    crate::load::ensure_same_tokenizer(&quantized.tokenizer, tok, "the build and the original")?;
    let (original_source, quantized_source) = (ModelSource::open(original_path)?, ModelSource::open(quantized_path)?);
    let size = validate::size(&original_source, &quantized_source)?;
    let fp16 = Model::load(&original_source, &F16Factory)
        .with_context(|| format!("building the FP16 build of {}", original_path.display()))?;

    let corpus = tok.encode(&text, tok.adds_bos())?;
    let opts = ValidateOptions {
        rule: validate::Rule::default(),
        perplexity: crate::load::chunking(tok, settings.ctx, Some(settings.chunks)),
        speed: BenchOptions { prompt: 0, gen: settings.speed_tokens, repetitions: settings.repetitions, seed: 42 },
        max_tokens: settings.max_tokens,
    };
    let bar =
        ProgressBar::new(1).with_style(ProgressStyle::with_template("{msg:32} {bar:30} {pos}/{len} [{elapsed}]")?);
    let models = Models { original: &original.model, quantized: &quantized.model, fp16: &fp16, tokenizer: tok };
    let report = validate::validate(&models, &corpus, &prompts, size, &opts, &mut |stage| {
        let (msg, done, total) = match stage {
            Stage::Perplexity { done, total } => ("perplexity and KL-divergence".to_string(), done, total),
            Stage::Speed { model, run, of } => (format!("decode speed, {model}"), run, of),
            Stage::Generation { done, total } => ("generation check".to_string(), done, total),
        };
        bar.set_message(msg);
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();

    let out = Output {
        original: original_path.display().to_string(),
        quantized: quantized_path.display().to_string(),
        corpus: settings.corpus.display().to_string(),
        prompts: settings.prompts.as_ref().map_or("built-in".to_string(), |p| p.display().to_string()),
        runtime,
        seconds: start.elapsed().as_secs_f64(),
        report: &report,
    };
    let json = serde_json::to_string_pretty(&out)?;
    lowbit_formats::write_atomic(report_path, json.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    Ok(Validated { report, json, path: report_path.to_path_buf() })
}

/// Non-empty lines of `path`, or the built-in prompts.
pub fn read_prompts(path: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading the prompts {}", p.display()))?,
        None => DEFAULT_PROMPTS.to_string(),
    };
    let prompts: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    anyhow::ensure!(
        !prompts.is_empty(),
        "{} has no prompts (one per line)",
        path.map_or("".into(), |p| p.display().to_string())
    );
    Ok(prompts)
}

pub fn default_report_path(build: &Path) -> PathBuf {
    if build.is_dir() {
        return build.join("validation_report.json");
    }
    let stem = build.file_stem().map_or("build".into(), |s| s.to_string_lossy().into_owned());
    build.with_file_name(format!("{stem}.validation_report.json"))
}

pub fn print_report(r: &ValidationReport) {
    let q = &r.quality;
    println!(
        "PPL {:.4} (original {:.4}), mean KLD {:.5}, p99 KLD {:.4}, same top-1 {:.1}% over {} chunks of {}",
        q.ppl,
        q.original_ppl,
        q.mean_kld,
        q.p99_kld,
        100.0 * q.same_top1,
        q.chunks,
        q.ctx
    );
    println!(
        "decode {:.1} tokens/s against FP16 {:.1} ({} threads); {} bytes against FP16 {} (mostly {}, {:.2} bits per weight)",
        r.speed.quantized.median,
        r.speed.fp16.median,
        r.speed.threads,
        r.size.bytes,
        r.size.fp16_bytes,
        r.size.storage,
        r.size.bits
    );
    let g = &r.generation;
    println!(
        "{} prompts: {} degenerate answers (original {}), mean overlap with the original {:.2}, mean shared start {:.1} tokens",
        g.prompts, g.degenerate, g.degenerate_original, g.mean_overlap, g.mean_shared_prefix
    );
    let mut t = Table::new(&["criterion", "value", "must be", "limit", "result"], &[false, true, false, true, false]);
    for c in &r.criteria {
        t.row(vec![
            c.what.clone(),
            format!("{:.4}", c.value),
            c.must_be.to_string(),
            format!("{:.4}", c.limit),
            if c.pass { "pass" } else { "FAIL" }.to_string(),
        ]);
    }
    print!("{}", t.render());
    println!("{}", if r.pass { "PASS" } else { "FAIL" });
}
