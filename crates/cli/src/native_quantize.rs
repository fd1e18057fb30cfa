//! `lowbit quantize MODEL -o DIR --method rtn --bits B [--group G] [--sym|--asym]` or `--method nf4`: a
//! native directory.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::native::nf4;
use lowbit_formats::source::ModelSource;
use lowbit_quant::native_export::{self, NativeScheme};
use lowbit_quant::rtn::RtnScheme;

use crate::table::{thousands, Table};

#[derive(clap::Args)]
pub struct NativeArgs {
    /// Quantization method, writing a lowbit native directory: `rtn` (round to nearest, group-wise) or
    /// `nf4` (bitsandbytes' NF4 in blocks of 64 with double-quantized scales).
    #[arg(long)]
    pub method: Option<String>,
    /// Bits per weight with --method: 8 (per output channel unless --group), 4, 3 or 2 (nf4: 4 only).
    #[arg(long, requires = "method")]
    bits: Option<u8>,
    /// Columns per group with --method (a multiple of 32; default 128, or per channel for 8 bits;
    /// nf4: 64 only).
    #[arg(long, requires = "method")]
    group: Option<usize>,
    /// Symmetric codes (the default).
    #[arg(long, conflicts_with = "asym", requires = "method")]
    sym: bool,
    /// Asymmetric codes with a zero point per group.
    #[arg(long, requires = "method")]
    asym: bool,
}

fn scheme(args: &NativeArgs) -> anyhow::Result<NativeScheme> {
    match args.method.as_deref() {
        Some("rtn") => {
            let bits = args.bits.context("--method rtn needs --bits (8, 4, 3 or 2)")?;
            let group = args.group.or(if bits == 8 { None } else { Some(128) });
            Ok(NativeScheme::Rtn(RtnScheme::new(bits, group, !args.asym)?))
        }
        Some("nf4") => {
            anyhow::ensure!(args.bits.is_none_or(|b| b == 4), "--method nf4 is 4 bits; drop --bits");
            anyhow::ensure!(
                args.group.is_none_or(|g| g == nf4::BLOCK),
                "--method nf4 has blocks of {} weights; drop --group",
                nf4::BLOCK
            );
            anyhow::ensure!(!args.asym, "--method nf4 has no zero point; drop --asym");
            Ok(NativeScheme::Nf4)
        }
        Some(other) => anyhow::bail!("--method {other}: rtn and nf4 exist so far"),
        None => anyhow::bail!("--method is required"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(method: &str, bits: Option<u8>, group: Option<usize>, asym: bool) -> NativeArgs {
        NativeArgs { method: Some(method.into()), bits, group, sym: false, asym }
    }

    #[test]
    fn nf4_takes_only_its_own_geometry() {
        assert_eq!(scheme(&args("nf4", None, None, false)).unwrap(), NativeScheme::Nf4);
        assert_eq!(scheme(&args("nf4", Some(4), Some(64), false)).unwrap(), NativeScheme::Nf4);
        for (bits, group, asym, word) in
            [(Some(3), None, false, "--bits"), (None, Some(128), false, "--group"), (None, None, true, "--asym")]
        {
            let err = scheme(&args("nf4", bits, group, asym)).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
        let rtn = scheme(&args("rtn", Some(4), None, false)).unwrap();
        assert_eq!(rtn, NativeScheme::Rtn(RtnScheme::new(4, Some(128), true).unwrap()));
        assert!(scheme(&args("gptq", Some(4), None, false)).is_err());
    }
}
