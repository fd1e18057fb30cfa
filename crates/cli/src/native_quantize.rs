//! `lowbit quantize MODEL -o DIR --method rtn|gptq|awq|awq-gptq --bits B [--group G] [--sym|--asym]` or
//! `--method nf4`: a native directory. The calibrated methods take a calibration set (`--calib`, see `calibration`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::experts::{is_mxfp4_scales, ExpertStack};
use lowbit_formats::native::group::GroupMatrix;
use lowbit_formats::native::nf4;
use lowbit_formats::native::PaletteFormat;
use lowbit_formats::source::ModelSource;
use lowbit_model::{CalibrationFactory, Model};
use lowbit_quant::act_scales;
use lowbit_quant::awq::AwqOptions;
use lowbit_quant::gptq::GptqOptions;
use lowbit_quant::grid::{Quantized, Target};
use lowbit_quant::imatrix::{Importance, MIN_EXPERT_TOKENS};
use lowbit_quant::layerwise::{self, Plan};
use lowbit_quant::native_export::{self, NativeScheme, Prepared};
use lowbit_quant::profile::Profile;
use lowbit_quant::rtn::RtnScheme;
use lowbit_quant::ternary::{TernaryRule, TernaryScheme};

use crate::table::{thousands, Table};

#[derive(clap::Args, Clone)]
pub struct NativeArgs {
    /// Quantization method, writing a lowbit native directory: `rtn` (round to nearest, group-wise), `gptq`
    /// (GPTQ on a calibration set, into the same group formats), `awq` (AWQ's activation-aware scales and clip
    /// search, then round to nearest), `awq-gptq` (AWQ's scales, then GPTQ) or `nf4` (bitsandbytes' NF4 in
    /// blocks of 64 with double-quantized scales), `palette` (k-means look-up tables), `palette-gptq` (GPTQ onto a
    /// k-means palette per row, on a calibration set), or ternary: `absmean`
    /// (BitNet b1.58's per-tensor rule), `ternary` (the exact fit per group) or `ptbitnet` (AWQ's scales then GPTQ
    /// onto the ternary grid, on a calibration set). With --type: gptq, awq or awq-gptq into GGUF types.
    #[arg(long)]
    pub method: Option<String>,
    /// A device profile instead of --method: `snapdragon-x` (4-bit laptop build), `iphone` (2-bit palettes) or
    /// `ternary` (1.58-bit MLP/experts),
    /// each a set of per-tensor rules (`lowbit inspect MODEL --target PROFILE` predicts its size).
    #[arg(long, conflicts_with = "method")]
    pub target: Option<String>,
    /// Bits per weight with --method: 8 (per output channel unless --group), 4, 3 or 2 (nf4: 4 only; palette:
    /// bits per index, 4, 3 or 2).
    #[arg(long, requires = "method")]
    pub bits: Option<u8>,
    /// Columns per group with --method (a multiple of 32; default 128, or per channel for 8 bits;
    /// nf4: 64 only).
    #[arg(long, requires = "method")]
    pub group: Option<usize>,
    /// Symmetric codes (the default).
    #[arg(long, conflicts_with = "asym", requires = "method")]
    sym: bool,
    /// Asymmetric codes with a zero point per group.
    #[arg(long, requires = "method")]
    asym: bool,
    /// Bits of the token embedding and output projection (8: per output channel), kept wider than --bits.
    #[arg(long, requires = "method")]
    pub embedding_bits: Option<u8>,
    /// Mixed precision: blocks whose matrices are kept at 8 bits per output channel (comma-separated indices).
    #[arg(long, value_delimiter = ',', requires = "method")]
    pub wide_blocks: Vec<usize>,
    /// Palette: output channels sharing one look-up table (default 8; 0: one table per tensor).
    #[arg(long, requires = "method")]
    pub palette_rows: Option<usize>,
    /// Palette: divide each output channel by its own scale (its largest |w|) before clustering.
    #[arg(long, requires = "method")]
    pub channel_scale: bool,
    /// Ternary methods: store the ternary matrices five trits per byte (1.6 bits per weight, unpacked to 2-bit
    /// codes at load) rather than four 2-bit codes per byte.
    #[arg(long, requires = "method")]
    pub trits: bool,
    /// Static int8 activations: one step per matrix input, calibrated on the calibration set (rtn, gptq),
    /// instead of a step per block of 32 computed at run time.
    #[arg(long, requires = "method")]
    static_acts: bool,
    /// GPTQ: sweep columns by descending Hessian diagonal (with static groups).
    #[arg(long)]
    pub act_order: bool,
    /// GPTQ: damping, as a fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    damp: f64,
    /// AWQ: calibration windows the scales are searched on (the first of the set).
    #[arg(long, default_value_t = 4)]
    awq_samples: usize,
    /// AWQ: no clip search (round to nearest over each group's whole range).
    #[arg(long)]
    no_clip: bool,
    /// GPTQ into GGUF types (--type): fit the block scales unweighted instead of with the calibration
    /// importance (mean x² per input column, as llama-imatrix collects it).
    #[arg(long)]
    pub no_importance: bool,
    #[command(flatten)]
    pub calib: crate::calibration::CalibArgs,
}

impl NativeArgs {
    /// Refuses the flags of native directories, for GPTQ into GGUF types (`--type` gives the storage).
    pub fn check_gguf(&self) -> anyhow::Result<()> {
        let native = [
            ("--bits", self.bits.is_some()),
            ("--group", self.group.is_some()),
            ("--sym", self.sym),
            ("--asym", self.asym),
            ("--embedding-bits", self.embedding_bits.is_some()),
            ("--wide-blocks", !self.wide_blocks.is_empty()),
            ("--static-acts", self.static_acts),
            ("--palette-rows", self.palette_rows.is_some()),
            ("--channel-scale", self.channel_scale),
        ];
        match native.iter().find(|(_, set)| *set) {
            Some((flag, _)) => {
                anyhow::bail!("{flag} applies to native directories; with --type the type gives the storage")
            }
            None => Ok(()),
        }
    }
}

impl NativeArgs {
    /// Whether the output is a native directory (--method or --target).
    pub fn native(&self) -> bool {
        self.method.is_some() || self.target.is_some()
    }
}

/// The profile --target names.
pub fn target(name: &str) -> anyhow::Result<Profile> {
    Profile::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Profile::ALL.iter().map(|t| t.name()).collect();
        anyhow::anyhow!("--target {name}: one of {}", names.join(", "))
    })
}

fn scheme(args: &NativeArgs) -> anyhow::Result<NativeScheme> {
    if let Some(name) = &args.target {
        return Ok(NativeScheme::Profile { profile: target(name)?, seed: args.calib.seed });
    }
    let palette = matches!(args.method.as_deref(), Some("palette" | "palette-gptq"));
    anyhow::ensure!(
        palette || (args.palette_rows.is_none() && !args.channel_scale),
        "--palette-rows and --channel-scale apply to --method palette"
    );
    anyhow::ensure!(
        !args.trits || matches!(args.method.as_deref(), Some("absmean" | "ternary" | "ptbitnet")),
        "--trits packs ternary matrices: it applies to --method absmean, ternary and ptbitnet"
    );
    match args.method.as_deref() {
        Some(m @ ("rtn" | "gptq" | "awq" | "awq-gptq")) => {
            let bits = args.bits.with_context(|| format!("--method {m} needs --bits (8, 4, 3 or 2)"))?;
            let group = args.group.or(if bits == 8 { None } else { Some(128) });
            let scheme = RtnScheme::new(bits, group, !args.asym)?.with_wide_blocks(&args.wide_blocks)?;
            Ok(NativeScheme::Rtn(match args.embedding_bits {
                Some(b) => scheme.with_embedding_bits(b)?,
                None => scheme,
            }))
        }
        Some("nf4") => {
            anyhow::ensure!(args.bits.is_none_or(|b| b == 4), "--method nf4 is 4 bits; drop --bits");
            anyhow::ensure!(
                args.group.is_none_or(|g| g == nf4::BLOCK),
                "--method nf4 has blocks of {} weights; drop --group",
                nf4::BLOCK
            );
            anyhow::ensure!(!args.asym, "--method nf4 has no zero point; drop --asym");
            anyhow::ensure!(args.wide_blocks.is_empty(), "--wide-blocks applies to the group formats, not nf4");
            Ok(NativeScheme::Nf4)
        }
        Some(m @ ("palette" | "palette-gptq")) => {
            let bits = args.bits.with_context(|| format!("--method {m} needs --bits (4, 3 or 2)"))?;
            anyhow::ensure!(
                args.group.is_none() && !args.asym,
                "--method palette: drop --group and --asym (see --palette-rows)"
            );
            anyhow::ensure!(
                args.wide_blocks.is_empty() && args.embedding_bits.is_none(),
                "--wide-blocks and --embedding-bits apply to the group formats, not palettes"
            );
            // GPTQ rounds row by row: onto a palette per row.
            let gptq = m == "palette-gptq";
            anyhow::ensure!(
                !gptq || (args.palette_rows.is_none_or(|r| r == 1) && !args.channel_scale),
                "--method palette-gptq rounds onto a palette per row: drop --palette-rows and --channel-scale"
            );
            let rows = match args.palette_rows.unwrap_or(if gptq { 1 } else { DEFAULT_PALETTE_ROWS }) {
                0 => None,
                n => Some(n),
            };
            let format = PaletteFormat::new(bits, rows, args.channel_scale)?;
            Ok(NativeScheme::Palette { format, seed: args.calib.seed })
        }
        Some(m @ ("absmean" | "ternary" | "ptbitnet")) => {
            anyhow::ensure!(args.bits.is_none(), "--method {m} is ternary (1.58 bits); drop --bits");
            anyhow::ensure!(
                !args.asym && args.wide_blocks.is_empty() && args.embedding_bits.is_none(),
                "--method {m}: drop --asym, --wide-blocks and --embedding-bits (the embedding stays at 8 bits)"
            );
            let rule = if m == "absmean" { TernaryRule::Absmean } else { TernaryRule::Exact };
            anyhow::ensure!(
                rule == TernaryRule::Exact || args.group.is_none(),
                "--method absmean has one scale per tensor; drop --group"
            );
            let group = args.group.unwrap_or(DEFAULT_TERNARY_GROUP);
            lowbit_quant::ternary::format(group)?;
            Ok(NativeScheme::Ternary(TernaryScheme { rule, group, packed: args.trits }))
        }
        Some(other) => {
            anyhow::bail!(
                "--method {other}: rtn, gptq, awq, awq-gptq, nf4, palette, absmean, ternary and ptbitnet exist"
            )
        }
        None => anyhow::bail!("--method is required"),
    }
}

/// Columns per ternary scale unless --group says otherwise: 16 bits per 128 ternary weights (0.125 bits each).
const DEFAULT_TERNARY_GROUP: usize = 128;

/// Output channels per palette unless --palette-rows says otherwise: a 2-bit table of 4 f16 entries per 8 rows
/// of 576 columns costs 0.014 bits per weight.
const DEFAULT_PALETTE_ROWS: usize = 8;

/// The calibrated method `--method` names, or `None` for the others.
pub fn plan(args: &NativeArgs) -> anyhow::Result<Option<Plan>> {
    let gptq = GptqOptions { damp: args.damp, act_order: args.act_order };
    let awq = AwqOptions { samples: args.awq_samples, clip: !args.no_clip, ..AwqOptions::default() };
    let plan = match args.method.as_deref() {
        Some("gptq" | "palette-gptq") => Plan { awq: None, gptq: Some(gptq) },
        Some("awq") => Plan { awq: Some(awq), gptq: None },
        // PT-BitNet-style: stage 1 AWQ's channel scales searched against the ternary rounding, stage 2 GPTQ onto
        // the ternary grid (crate docs/ternary.md).
        Some("awq-gptq" | "ptbitnet") => Plan { awq: Some(AwqOptions { clip: false, ..awq }), gptq: Some(gptq) },
        _ => return Ok(None),
    };
    anyhow::ensure!(plan.gptq.is_some() || !args.act_order, "--act-order applies to GPTQ (--method gptq, awq-gptq)");
    anyhow::ensure!(plan.awq.is_some() || !args.no_clip, "--no-clip applies to AWQ (--method awq)");
    anyhow::ensure!(args.awq_samples > 0, "--awq-samples must be at least 1");
    Ok(Some(plan))
}

/// The calibrated method `plan` on every matrix `target_for` gives a target, into native formats.
fn calibrated_native(
    source: &ModelSource,
    target_for: &dyn Fn(&str, &[usize]) -> Option<Target>,
    args: &NativeArgs,
    plan: Plan,
) -> anyhow::Result<Prepared> {
    let (result, details) = calibrated(source, args, plan, target_for)?;
    let (mut tensors, mut palettes) = (BTreeMap::new(), BTreeMap::new());
    for (name, q) in result.tensors {
        match q {
            Quantized::Group(m) => {
                tensors.insert(name, m);
            }
            Quantized::Palette(m) => {
                palettes.insert(name, m);
            }
            Quantized::Gguf { .. } => anyhow::bail!("{name}: GGUF blocks for a native directory"),
        }
    }
    let method = args.method.clone().unwrap_or_default();
    Ok(Prepared { method, tensors, palettes, values: result.values, act_scales: BTreeMap::new(), details })
}

/// The calibrated method `plan` on every matrix `target_for` gives a target, on the calibration set of `args`, with a
/// progress bar; also the record of what was done (calibration data, options, timings, per-tensor figures).
pub fn calibrated(
    source: &ModelSource,
    args: &NativeArgs,
    plan: Plan,
    target_for: &dyn Fn(&str, &[usize]) -> Option<Target>,
) -> anyhow::Result<(layerwise::LayerwiseResult, serde_json::Value)> {
    let calib = crate::calibration::load(source, &args.calib)?;
    let mut model = Model::load(source, &CalibrationFactory)?;
    let bar = ProgressBar::new(1)
        .with_style(ProgressStyle::with_template("{bar:30} {percent:>3}%  {msg}  [{elapsed} < {eta}]")?);
    let result = layerwise::quantize_model(&mut model, source, &calib.samples, target_for, plan, &|p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.what.to_string());
    })?;
    bar.finish_and_clear();
    let mut details = serde_json::json!({
        "data": calib.record,
        "plan": plan,
        "seconds": result.seconds,
        "awq": result.awq,
        "tensors": result.reports,
    });
    if !result.coverage.is_empty() {
        details["expert_coverage"] = serde_json::json!({
            "rule": format!(
                "an expert routed fewer than {MIN_EXPERT_TOKENS} calibration tokens is rounded to nearest, not by GPTQ"
            ),
            "tensors": result.coverage,
        });
    }
    Ok((result, details))
}

/// The matrices of the build at `base` that `rtn` stores in the same format (see [`build`]).
fn reused(source: &ModelSource, base: &Path, rtn: RtnScheme, args: &NativeArgs) -> anyhow::Result<Prepared> {
    let method = args.method.clone().unwrap_or_default();
    anyhow::ensure!(
        matches!(method.as_str(), "gptq" | "rtn"),
        "reusing a build's matrices applies to gptq and rtn (AWQ's scales live in the norms too)"
    );
    let base_source = ModelSource::open(base)?;
    let mut tensors = BTreeMap::new();
    for source_name in source.tensor_names().into_iter().filter(|n| !is_mxfp4_scales(source, n)) {
        // An expert stack by its canonical weight name and `[experts, rows, cols]`; the base holds its experts'
        // rows one after another.
        let (name, shape) = match ExpertStack::of(source, source_name)? {
            Some(stack) => (stack.name, vec![stack.experts, stack.rows, stack.cols]),
            None => (source_name.to_string(), source.tensor(source_name)?.shape.clone()),
        };
        let (Some(format), Some(v)) = (rtn.format_for(&name, &shape), base_source.group_view(&name)) else {
            continue;
        };
        let (rows, cols) = (shape[..shape.len() - 1].iter().product::<usize>(), shape[shape.len() - 1]);
        if v.format == format && (v.rows, v.cols) == (rows, cols) {
            let (codes, scales, zeros) = (v.codes.to_vec(), v.scales.to_vec(), v.zeros.to_vec());
            tensors.insert(name, GroupMatrix { format, rows: v.rows, cols: v.cols, codes, scales, zeros });
        }
    }
    let details = serde_json::json!({
        "reused_from": base.display().to_string(),
        "reused_tensors": tensors.len(),
        "others": "round to nearest from the model",
    });
    Ok(Prepared {
        method,
        tensors,
        palettes: BTreeMap::new(),
        values: BTreeMap::new(),
        act_scales: BTreeMap::new(),
        details,
    })
}

/// Calibrates static activation steps and adds them to `prepared` (or to a plain RTN export).
fn static_acts(source: &ModelSource, args: &NativeArgs, prepared: Option<Prepared>) -> anyhow::Result<Prepared> {
    let calib = crate::calibration::load(source, &args.calib)?;
    let model = Model::load(source, &CalibrationFactory)?;
    let bar = ProgressBar::new(calib.samples.len() as u64).with_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} windows  activation ranges  [{elapsed} < {eta}]",
    )?);
    let steps = act_scales::calibrate(&model, &calib.samples, &|i| bar.set_position(i as u64 + 1))?;
    bar.finish_and_clear();
    let mut p = prepared.unwrap_or_else(|| Prepared {
        method: "rtn".into(),
        tensors: BTreeMap::new(),
        palettes: BTreeMap::new(),
        values: BTreeMap::new(),
        act_scales: BTreeMap::new(),
        details: serde_json::json!({ "data": calib.record }),
    });
    p.details["activations"] =
        serde_json::json!("static int8, one step per matrix input: least squared error over the calibration set, first token of each window left out");
    p.act_scales = steps;
    Ok(p)
}

/// `importance` weights RTN's scale search (--imatrix / --save-imatrix; the caller allows it with rtn only).
pub fn run(model: &Path, out: &Path, args: &NativeArgs, importance: Option<&Importance>) -> anyhow::Result<()> {
    build(model, out, args, importance, None)
}

/// As [`run`]; with `reuse`, the matrices an earlier build of the same model (GPTQ or RTN, not AWQ, whose scales
/// live in the norms too) holds in the format this scheme gives them are taken as they are, and only the rest
/// (the parts mixed precision widened) is rounded to nearest from the model.
pub fn build(
    model: &Path,
    out: &Path,
    args: &NativeArgs,
    importance: Option<&Importance>,
    reuse: Option<&Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!args.no_importance, "--no-importance applies to GPTQ into GGUF types (--type)");
    let scheme = scheme(args)?;
    let source = ModelSource::open(model)?;
    let config = source.config()?;
    let blocks = config.n_layers;
    if let Some(b) = args.wide_blocks.iter().find(|&&b| b >= blocks) {
        anyhow::bail!("--wide-blocks {b}: the model has blocks 0 to {}", blocks.saturating_sub(1));
    }
    let plan = plan(args)?;
    let mut prepared = match (reuse, plan, scheme) {
        (Some(base), _, NativeScheme::Rtn(rtn)) => Some(reused(&source, base, rtn, args)?),
        (None, Some(plan), NativeScheme::Rtn(rtn)) => {
            Some(calibrated_native(&source, &|name, shape| rtn.format_for(name, shape).map(Target::Group), args, plan)?)
        }
        (None, Some(plan), NativeScheme::Palette { format, seed }) => {
            // A palette per row (palette-gptq's only layout) never spans two experts of a stack.
            let target = |name: &str, shape: &[usize]| {
                lowbit_quant::rtn::quantized_cols(name, shape).map(|_| Target::Palette { format, seed })
            };
            Some(calibrated_native(&source, &target, args, plan)?)
        }
        (None, Some(plan), NativeScheme::Ternary(t)) => {
            let target = |name: &str, shape: &[usize]| match t.format_for(name, shape) {
                Some(f) if f.bits == 2 => Some(Target::Ternary { group: f.group }),
                other => other.map(Target::Group),
            };
            Some(calibrated_native(&source, &target, args, plan)?)
        }
        _ => None,
    };
    if args.static_acts {
        anyhow::ensure!(
            matches!(scheme, NativeScheme::Rtn(_)),
            "--static-acts applies to the group formats (rtn, gptq, awq, awq-gptq)"
        );
        prepared = Some(static_acts(&source, args, prepared)?);
    }
    let n = source.tensor_names().len();
    let bar = ProgressBar::new(n as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tensors  {msg}  [{elapsed} < {eta}]")?);
    let summary = native_export::export(&source, out, &scheme, prepared.as_ref(), importance, &|i, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    let bytes = crate::load::bytes_on_disk(out);
    let method = prepared.as_ref().map_or(String::new(), |p| format!("{} ", p.method));
    let method = if importance.is_some() { format!("{method}imatrix-weighted ") } else { method };
    println!("{} -> {} ({method}{}, {} bytes)", model.display(), out.display(), scheme.name(), thousands(bytes));
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
        NativeArgs {
            method: Some(method.into()),
            target: None,
            bits,
            group,
            sym: false,
            asym,
            embedding_bits: None,
            wide_blocks: Vec::new(),
            palette_rows: None,
            channel_scale: false,
            trits: false,
            static_acts: false,
            act_order: false,
            damp: 0.01,
            awq_samples: 4,
            no_clip: false,
            no_importance: false,
            calib: crate::calibration::CalibArgs { calib: None, samples: 128, seq_len: 512, seed: 0 },
        }
    }

    #[test]
    fn nf4_and_palette_take_only_their_own_options() {
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
        assert!(scheme(&args("gptq", None, None, false)).is_err());
        let palette = |bits, rows: Option<usize>, scale| {
            let mut a = args("palette", bits, None, false);
            (a.palette_rows, a.channel_scale) = (rows, scale);
            scheme(&a)
        };
        let f = |bits, rows, scale| PaletteFormat::new(bits, rows, scale).unwrap();
        assert_eq!(
            palette(Some(2), None, false).unwrap(),
            NativeScheme::Palette { format: f(2, Some(8), false), seed: 0 }
        );
        assert_eq!(
            palette(Some(4), Some(0), true).unwrap(),
            NativeScheme::Palette { format: f(4, None, true), seed: 0 }
        );
        assert!(palette(None, None, false).unwrap_err().to_string().contains("--bits"));
        assert!(palette(Some(8), None, false).is_err());
        let mut grouped = args("palette", Some(2), Some(64), false);
        assert!(scheme(&grouped).unwrap_err().to_string().contains("--group"));
        (grouped.method, grouped.group, grouped.channel_scale) = (Some("rtn".into()), None, true);
        assert!(scheme(&grouped).unwrap_err().to_string().contains("--method palette"));
        assert!(scheme(&args("awq-later", Some(4), None, false)).is_err());
    }
}
