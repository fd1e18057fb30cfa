//! `lowbit quantize MODEL -o DIR --method rtn --bits B [--group G] [--sym|--asym]`: a native directory.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::source::ModelSource;
use lowbit_quant::native_export;
use lowbit_quant::rtn::RtnScheme;

use crate::table::{thousands, Table};

#[derive(clap::Args)]
pub struct NativeArgs {
    /// Quantization method, writing a lowbit native directory: `rtn` (round to nearest, group-wise).
    #[arg(long)]
    pub method: Option<String>,
    /// Bits per weight with --method: 8 (per output channel unless --group), 4, 3 or 2.
    #[arg(long, requires = "method")]
    bits: Option<u8>,
    /// Columns per group with --method (a multiple of 32; default 128, or per channel for 8 bits).
    #[arg(long, requires = "method")]
    group: Option<usize>,
    /// Symmetric codes (the default).
    #[arg(long, conflicts_with = "asym", requires = "method")]
    sym: bool,
    /// Asymmetric codes with a zero point per group.
    #[arg(long, requires = "method")]
    asym: bool,
}

fn scheme(args: &NativeArgs) -> anyhow::Result<RtnScheme> {
    match args.method.as_deref() {
        Some("rtn") => {}
        Some(other) => anyhow::bail!("--method {other}: only rtn exists so far"),
        None => anyhow::bail!("--method is required"),
    }
    let bits = args.bits.context("--method rtn needs --bits (8, 4, 3 or 2)")?;
    let group = args.group.or(if bits == 8 { None } else { Some(128) });
    Ok(RtnScheme::new(bits, group, !args.asym)?)
}

pub fn run(model: &Path, out: &Path, args: &NativeArgs) -> anyhow::Result<()> {
    let scheme = scheme(args)?;
    let source = ModelSource::open(model)?;
    let n = source.tensor_names().len();
    let bar = ProgressBar::new(n as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tensors  {msg}  [{elapsed} < {eta}]")?);
    let summary = native_export::export(&source, out, &scheme, &|i, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    let mut bytes = 0;
    for entry in std::fs::read_dir(out)? {
        bytes += entry?.metadata()?.len();
    }
    println!("{} -> {} ({}, {} bytes)", model.display(), out.display(), scheme.name(), thousands(bytes));
    let mut t = Table::new(&["storage", "tensors"], &[false, true]);
    for (s, n) in &summary.per_storage {
        t.row(vec![s.clone(), n.to_string()]);
    }
    print!("{}", t.render());
    Ok(())
}
