//! `lowbit quantize`: write a model in another storage format.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::config::Arch;
use lowbit_formats::gguf::GgufFile;
use lowbit_formats::gguf_convert::convert_gpt_oss;
use lowbit_formats::source::ModelSource;
use lowbit_quant::gguf_export::ImatrixInput;
use lowbit_quant::FileType;
use lowbit_runtime::tokenizer::Tokenizer;

use crate::table::{thousands, Table};

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF model, or a Hugging Face GPT-OSS directory with --type (any model with --method and no --type).
    model: PathBuf,
    /// Output file (a directory with --method and no --type).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Output container (only `gguf` so far).
    #[arg(long, default_value = "gguf")]
    format: String,
    /// llama-quantize's file type: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L,
    /// Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, TQ1_0, TQ2_0, MXFP4_MOE (aliases Q3_K, Q4_K, Q5_K: the _M mixes;
    /// MXFP4: MXFP4_MOE). Tensors get llama.cpp's types for it; rows a type cannot hold fall back as llama.cpp does.
    /// With --method gptq|awq|awq-gptq: the calibrated method into those types (the mixes' imatrix choices; block
    /// types only).
    #[arg(long = "type", required_unless_present_any = ["method", "target"], conflicts_with = "target")]
    ftype: Option<String>,
    /// One type for every quantized matrix, as llama-quantize --pure (no mix rules).
    #[arg(long)]
    pure: bool,
    #[command(flatten)]
    native: crate::native_quantize::NativeArgs,
    #[command(flatten)]
    importance: crate::importance::ImportanceArgs,
    #[command(flatten)]
    accept: crate::accept::AcceptArgs,
}

fn parse_type(s: &str) -> anyhow::Result<FileType> {
    FileType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = FileType::ALL.iter().map(|f| f.name()).collect();
        anyhow::anyhow!("unknown type {s:?}; one of {}", names.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Mixture-of-experts weights are quantized expert by expert from a Hugging Face directory, into a native
    // directory or (with --type) GGUF; a GGUF mixture of experts re-quantizes with --type alone.
    let per_expert =
        ["rtn", "gptq", "awq", "awq-gptq", "nf4", "palette", "palette-gptq", "absmean", "ternary", "ptbitnet"];
    let native_moe = (args.native.method.as_deref().is_some_and(|m| per_expert.contains(&m))
        || args.native.target.is_some())
        && args.ftype.is_none();
    let gguf_types =
        args.ftype.is_some() && args.native.method.as_deref().is_none_or(|m| ["gptq", "awq", "awq-gptq"].contains(&m));
    let source = ModelSource::open(&args.model)?;
    if source.config()?.moe.is_some() {
        if !native_moe && !gguf_types {
            anyhow::bail!(
                "{}: mixture-of-experts models (GPT-OSS) are quantized with --method {} or a --target into a native directory, or with --type [--method gptq|awq|awq-gptq] into GGUF",
                args.model.display(),
                per_expert.join(", ")
            );
        }
        if source.gguf().is_some() && (native_moe || args.native.method.is_some()) {
            anyhow::bail!(
                "{}: a GGUF mixture of experts re-quantizes with --type alone; the per-expert methods read its Hugging Face directory",
                args.model.display()
            );
        }
    }
    drop(source);
    if args.accept.accept {
        anyhow::ensure!(args.native.target.is_none(), "--accept chooses its own build: drop --target");
        anyhow::ensure!(
            args.ftype.is_none() && args.importance.imatrix.is_none() && args.importance.save_imatrix.is_none(),
            "--accept builds native directories: drop --type, --imatrix and --save-imatrix"
        );
        return crate::accept::run(&args.model, &args.out, &args.native, &args.accept);
    }
    if let (Some(plan), Some(t)) = (crate::native_quantize::plan(&args.native)?, args.ftype.as_deref()) {
        anyhow::ensure!(args.format == "gguf", "--format {}: --type writes gguf", args.format);
        anyhow::ensure!(
            args.importance.imatrix.is_none() && args.importance.save_imatrix.is_none(),
            "the calibrated methods weight their block scales with their own calibration statistics; drop --imatrix/--save-imatrix"
        );
        let ftype = parse_type(t)?;
        args.native.check_gguf()?;
        let source = ModelSource::open(&args.model)?;
        let converted = Converted::of(&source, &args.out)?;
        let gguf = converted.as_ref().map(|c| &c.file).or(source.gguf()).context("no GGUF to export")?;
        return crate::gguf_calibrated::run(&source, gguf, &args.out, ftype, args.pure, &args.native, plan);
    }
    if !args.native.native() && args.format != "gguf" {
        anyhow::bail!("--format {}: only gguf output exists so far", args.format);
    }
    let ftype = match args.native.native() {
        true => None,
        false => Some(parse_type(args.ftype.as_deref().unwrap_or_default())?),
    };
    let weighted = args.importance.imatrix.is_some() || args.importance.save_imatrix.is_some();
    anyhow::ensure!(
        !weighted || args.native.method.as_deref().is_none_or(|m| matches!(m, "rtn" | "palette" | "ternary")),
        "--imatrix and --save-imatrix apply to GGUF --type, --method rtn|palette|ternary and --target"
    );
    let imatrix = crate::importance::prepare(&args.importance, &args.model, &args.native.calib)?;
    let Some(ftype) = ftype else {
        return crate::native_quantize::run(&args.model, &args.out, &args.native, imatrix.map(|i| i.matrix).as_ref());
    };
    let source = ModelSource::open(&args.model)?;
    let converted = Converted::of(&source, &args.out)?;
    let gguf = converted.as_ref().map(|c| &c.file).or(source.gguf()).context("no GGUF to export")?;
    let bar = ProgressBar::new(gguf.tensors().len() as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tensors  {msg}  [{elapsed} < {eta}]")?);
    let imatrix = imatrix.as_ref().map(|i| ImatrixInput { matrix: &i.matrix, file: &i.file });
    let summary = lowbit_quant::gguf_export::export(gguf, &args.out, ftype, args.pure, imatrix.as_ref(), &|i, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish_and_clear();
    let written = std::fs::metadata(&args.out)?.len();
    let pure = if args.pure { " --pure" } else { "" };
    let pure = if imatrix.is_some() { format!("{pure} --imatrix") } else { pure.to_string() };
    println!("{} -> {} ({ftype}{pure}, {} bytes)", args.model.display(), args.out.display(), thousands(written));
    let mut t = Table::new(&["storage", "tensors", "bytes"], &[false, true, true]);
    for c in &summary.per_type {
        t.row(vec![c.dtype.name().into(), c.tensors.to_string(), thousands(c.bytes)]);
    }
    t.row(vec!["total".into(), summary.tensors.to_string(), thousands(summary.bytes)]);
    print!("{}", t.render());
    Ok(())
}

/// A Hugging Face GPT-OSS directory converted to GGUF as llama.cpp's converter would (every float kept, MXFP4 experts
/// repacked), beside the output while the export re-quantizes it, as llama-quantize follows the converter; removed
/// when dropped.
struct Converted {
    file: GgufFile,
    path: PathBuf,
}

impl Converted {
    /// `None` for a GGUF source, which is exported as it is.
    fn of(source: &ModelSource, out: &Path) -> anyhow::Result<Option<Converted>> {
        if source.gguf().is_some() {
            return Ok(None);
        }
        let model = source.path();
        if source.config()?.arch != Arch::GptOss || !matches!(source, ModelSource::Hf(_)) {
            anyhow::bail!(
                "{}: GGUF output is made from a GGUF model or a Hugging Face GPT-OSS directory so far",
                model.display()
            );
        }
        let template = crate::load::tokenizer_for(source).ok().and_then(|t| t.chat_template().map(str::to_string));
        let vocab = Tokenizer::o200k_harmony_gguf(template)?;
        let file_name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let path = out.with_file_name(format!(".{file_name}.converted.gguf"));
        let name = model.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let n = source.tensor_names().len() as u64;
        let bar = ProgressBar::new(n).with_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} tensors  converting {msg}  [{elapsed} < {eta}]",
        )?);
        let done = convert_gpt_oss(source, &vocab, &name, &path, &|i, t| {
            bar.set_position(i as u64);
            bar.set_message(t.to_string());
        })
        .with_context(|| format!("converting {} to GGUF", model.display()))?;
        bar.finish_and_clear();
        println!(
            "{} -> GGUF as llama.cpp converts it: {} tensors, {} bytes",
            model.display(),
            done.tensors,
            thousands(done.bytes)
        );
        match GgufFile::open(&path) {
            Ok(file) => Ok(Some(Converted { file, path })),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e.into())
            }
        }
    }
}

impl Drop for Converted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
