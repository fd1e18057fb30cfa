//! `lowbit quantize`: write a model in another storage format.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::source::ModelSource;
use lowbit_formats::DType;

use crate::table::{thousands, Table};

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF model (any model with --method).
    model: PathBuf,
    /// Output file (a directory with --method).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Output container (only `gguf` so far).
    #[arg(long, default_value = "gguf")]
    format: String,
    /// Storage type of the matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
    /// Q4_K, Q5_K, Q6_K (rows a type cannot hold fall back as llama.cpp does; norms stay F32).
    #[arg(long = "type", required_unless_present = "method")]
    dtype: Option<String>,
    #[command(flatten)]
    native: crate::native_quantize::NativeArgs,
}

fn parse_type(s: &str) -> anyhow::Result<DType> {
    let all = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q2K,
        DType::Q3K,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ];
    all.into_iter().find(|d| d.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|d| d.name()).collect();
        anyhow::anyhow!("unknown type {s:?}; one of {}", names.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.native.method.is_some() {
        return crate::native_quantize::run(&args.model, &args.out, &args.native);
    }
    if args.format != "gguf" {
        anyhow::bail!("--format {}: only gguf output exists so far", args.format);
    }
    let target = parse_type(args.dtype.as_deref().unwrap_or_default())?;
    let source = ModelSource::open(&args.model)?;
    let Some(gguf) = source.gguf() else {
        anyhow::bail!("{}: GGUF output is made from a GGUF model so far", args.model.display());
    };
    let bar = ProgressBar::new(gguf.tensors().len() as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tensors  {msg}  [{elapsed} < {eta}]")?);
    let summary = lowbit_quant::gguf_export::export(gguf, &args.out, target, &|i, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish_and_clear();
    let written = std::fs::metadata(&args.out)?.len();
    println!("{} -> {} ({} bytes)", args.model.display(), args.out.display(), thousands(written));
    let mut t = Table::new(&["storage", "tensors"], &[false, true]);
    for (d, n) in &summary.per_type {
        t.row(vec![d.name().into(), n.to_string()]);
    }
    print!("{}", t.render());
    Ok(())
}
