//! `lowbit quantize MODEL -o DIR --method M --bits B --accept`: build, validate under the acceptance rule, and
//! fall back until a build passes: more calibration samples, then mixed precision (the parts of the model the
//! build is most sensitive to kept at 8 bits, their number doubling until the rule passes or `--max-size` is
//! reached), then INT8. Each attempt is a directory in DIR with its validation_report.json; DIR's
//! quantization_summary.json records every attempt and the one chosen: the smallest that passes, or the best
//! with the criteria it fails (docs/validation.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::sensitivity::part_sensitivity;
use lowbit_eval::validate::{Rule, ValidationReport};
use lowbit_formats::source::ModelSource;
use lowbit_model::Part;
use serde::Serialize;

use crate::load::Runtime;
use crate::native_quantize::NativeArgs;
use crate::table::{thousands, Table};
use crate::validate_cmd::{self, Settings};

/// What quantization_summary.json is called in the output directory.
pub const SUMMARY_FILE: &str = "quantization_summary.json";

/// Calibration windows, and tokens of each, that part sensitivity is measured on.
const SENSITIVITY_WINDOWS: usize = 2;
const SENSITIVITY_TOKENS: usize = 256;

#[derive(clap::Args)]
pub struct AcceptArgs {
    /// Validate the build under the acceptance rule and fall back until one passes: more calibration samples,
    /// the most sensitive blocks at 8 bits, INT8. OUT becomes a directory of attempts with
    /// quantization_summary.json (group formats: --method rtn|gptq|awq|awq-gptq --bits B).
    #[arg(long)]
    pub accept: bool,
    /// With --accept: the largest build mixed precision may reach, in bytes (K, M, G: powers of 1024).
    #[arg(long, requires = "accept", value_parser = parse_bytes)]
    pub max_size: Option<u64>,
    /// With --accept: how many times the calibration samples grow on the "more calibration" attempt.
    #[arg(long, requires = "accept", default_value_t = 4)]
    pub more_samples: usize,
    #[command(flatten)]
    pub validation: Settings,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{s:?}: a byte count, optionally with K, M or G")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?}: a byte count, optionally with K, M or G"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// Which step of the chain an attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fallback {
    Requested,
    MoreCalibration,
    MixedPrecision,
    Int8,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::Requested => "requested",
            Fallback::MoreCalibration => "more-calibration",
            Fallback::MixedPrecision => "mixed-precision",
            Fallback::Int8 => "int8",
        })
    }
}

/// One build and its validation.
#[derive(Serialize)]
struct Attempt {
    name: String,
    fallback: Fallback,
    method: String,
    bits: u8,
    /// Calibration windows (calibrated methods).
    samples: Option<usize>,
    /// Parts kept at 8 bits.
    wide: Vec<Part>,
    path: PathBuf,
    /// The attempt whose matrices this one took where their formats agree (mixed precision of GPTQ and RTN
    /// builds: only the widened parts are rounded anew, to nearest).
    reused_from: Option<String>,
    /// Bytes of the build's files.
    bytes: u64,
    quantize_seconds: f64,
    validate_seconds: f64,
    pass: bool,
    /// Criteria of the rule that fail, and `max_size` when the build is over `--max-size`.
    failed: Vec<&'static str>,
    ppl_ratio: f64,
    mean_kld: f64,
    same_top1: f64,
    speedup: f64,
    size_ratio: f64,
    degenerate: usize,
    mean_overlap: f64,
}

impl Attempt {
    /// Whether a wider build could fix what fails: perplexity or generation (more bits make size and speed
    /// worse, not better).
    fn quality_fails(&self) -> bool {
        self.failed.iter().any(|c| !matches!(*c, "speed" | "size" | "max_size"))
    }
}

#[derive(Serialize)]
struct Sensitivity {
    /// The attempt whose parts were measured.
    of: String,
    windows: usize,
    tokens: usize,
    /// Mean KL-divergence with each part alone taken from that build, most sensitive first.
    parts: Vec<PartSensitivity>,
}

#[derive(Serialize)]
struct PartSensitivity {
    part: Part,
    mean_kld: f64,
}

#[derive(Serialize)]
struct Summary {
    model: PathBuf,
    rule: Rule,
    max_size: Option<u64>,
    attempts: Vec<Attempt>,
    sensitivity: Option<Sensitivity>,
    /// Why the chain stopped where it did.
    stopped: String,
    chosen: String,
    path: PathBuf,
    pass: bool,
    /// "passed: ..." or "failed: CRITERIA ...": the chosen build's verdict in words.
    verdict: String,
}

struct Chain<'a> {
    model: &'a Path,
    out: &'a Path,
    accept: &'a AcceptArgs,
    attempts: Vec<Attempt>,
}

impl Chain<'_> {
    /// Builds `args` as the next attempt (taking the matrices it shares with attempt `reuse`, if given), validates
    /// it and records it; returns its index.
    fn attempt(&mut self, fallback: Fallback, args: &NativeArgs, reuse: Option<usize>) -> anyhow::Result<usize> {
        let method = args.method.clone().unwrap_or_default();
        let bits = args.bits.unwrap_or_default();
        let mut wide: Vec<Part> = args.wide_blocks.iter().map(|&b| Part::Block(b)).collect();
        if args.embedding_bits == Some(8) {
            wide.push(Part::Embedding);
        }
        let calibrated = method != "rtn";
        let samples = if calibrated { format!("-s{}", args.calib.samples) } else { String::new() };
        let wide_parts = if wide.is_empty() { String::new() } else { format!("-{}wide", wide.len()) };
        let name = format!("{}-{method}-int{bits}{samples}{wide_parts}", self.attempts.len() + 1);
        let path = self.out.join(&name);
        eprintln!("== attempt {}: {name} ({fallback})", self.attempts.len() + 1);
        let start = Instant::now();
        let reused_from = reuse.map(|i| self.attempts[i].name.clone());
        let base = reuse.map(|i| self.attempts[i].path.clone());
        crate::native_quantize::build(self.model, &path, args, None, base.as_deref())?;
        let quantize_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let report_path = validate_cmd::default_report_path(&path);
        let v = validate_cmd::validate(self.model, &path, Runtime::Native, &self.accept.validation, &report_path)?;
        validate_cmd::print_report(&v.report);
        let bytes = crate::load::bytes_on_disk(&path);
        let mut failed = v.report.failed();
        if self.accept.max_size.is_some_and(|max| bytes > max) {
            failed.push("max_size");
        }
        let r: &ValidationReport = &v.report;
        self.attempts.push(Attempt {
            name,
            fallback,
            method,
            bits,
            samples: calibrated.then_some(args.calib.samples),
            wide,
            path,
            reused_from,
            bytes,
            quantize_seconds,
            validate_seconds: start.elapsed().as_secs_f64(),
            pass: failed.is_empty(),
            failed,
            ppl_ratio: r.quality.ppl_ratio,
            mean_kld: r.quality.mean_kld,
            same_top1: r.quality.same_top1,
            speedup: r.speed.speedup,
            size_ratio: r.size.ratio,
            degenerate: r.generation.degenerate,
            mean_overlap: r.generation.mean_overlap,
        });
        Ok(self.attempts.len() - 1)
    }

    fn passed(&self) -> bool {
        self.attempts.iter().any(|a| a.pass)
    }

    /// The attempt to measure part sensitivity on and build mixed precision from: the lowest KLD so far.
    fn best_quality(&self) -> usize {
        (0..self.attempts.len())
            .min_by(|&a, &b| self.attempts[a].mean_kld.total_cmp(&self.attempts[b].mean_kld))
            .unwrap_or(0)
    }

    /// Part sensitivity of attempt `i`, most sensitive first, on the first calibration windows of `args`.
    fn sensitivity(&self, i: usize, args: &NativeArgs) -> anyhow::Result<Sensitivity> {
        let source = ModelSource::open(self.model)?;
        let calib = crate::calibration::load(&source, &args.calib)?;
        let windows: Vec<Vec<u32>> = calib
            .samples
            .iter()
            .take(SENSITIVITY_WINDOWS)
            .map(|w| w[..w.len().min(SENSITIVITY_TOKENS)].to_vec())
            .collect();
        let mut original = crate::load::load(self.model, Runtime::F32)?.model;
        let mut build = crate::load::load(&self.attempts[i].path, Runtime::Native)?.model;
        let bar = ProgressBar::new(1)
            .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} parts  sensitivity  [{elapsed} < {eta}]")?);
        let mut parts = part_sensitivity(&mut original, &mut build, &windows, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(Sensitivity {
            of: self.attempts[i].name.clone(),
            windows: windows.len(),
            tokens: windows.iter().map(Vec::len).sum(),
            parts: parts.into_iter().map(|(part, mean_kld)| PartSensitivity { part, mean_kld }).collect(),
        })
    }
}

/// `args` with `parts` kept at 8 bits.
fn widened(args: &NativeArgs, parts: &[Part]) -> NativeArgs {
    let mut wide = args.clone();
    wide.wide_blocks = parts.iter().filter_map(|p| if let Part::Block(b) = p { Some(*b) } else { None }).collect();
    wide.wide_blocks.sort_unstable();
    if parts.contains(&Part::Embedding) {
        wide.embedding_bits = Some(8);
    }
    wide
}

pub fn run(model: &Path, out: &Path, native: &NativeArgs, accept: &AcceptArgs) -> anyhow::Result<()> {
    let method = native.method.as_deref().unwrap_or_default();
    anyhow::ensure!(
        matches!(method, "rtn" | "gptq" | "awq" | "awq-gptq") && native.bits.is_some(),
        "--accept falls back through the group formats: --method rtn, gptq, awq or awq-gptq with --bits"
    );
    anyhow::ensure!(accept.more_samples >= 1, "--more-samples must be at least 1");
    accept.validation.check()?;
    if out.exists() {
        anyhow::ensure!(
            out.is_dir() && std::fs::read_dir(out)?.next().is_none(),
            "{}: --accept writes its attempts into a new or empty directory",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut chain = Chain { model, out, accept, attempts: Vec::new() };
    let mut args = native.clone();
    let mut sensitivity = None;
    let first = chain.attempt(Fallback::Requested, &args, None)?;
    let mut stopped = String::new();

    if !chain.passed() && chain.attempts[first].quality_fails() && method != "rtn" && accept.more_samples > 1 {
        let mut more = args.clone();
        more.calib.samples *= accept.more_samples;
        let i = chain.attempt(Fallback::MoreCalibration, &more, None)?;
        if chain.attempts[i].mean_kld < chain.attempts[first].mean_kld {
            args = more;
        }
    }
    let wider_helps = |chain: &Chain| !chain.passed() && chain.attempts.last().is_some_and(Attempt::quality_fails);
    if wider_helps(&chain) && args.bits != Some(8) {
        let base = chain.best_quality();
        let s = chain.sensitivity(base, &args)?;
        let order: Vec<Part> = s.parts.iter().map(|p| p.part).collect();
        sensitivity = Some(s);
        // AWQ's scales live in the norms as well as the matrices: its mixed builds are made anew.
        let reuse = matches!(method, "gptq" | "rtn").then_some(base);
        let mut k = 1;
        while k < order.len() {
            let i = chain.attempt(Fallback::MixedPrecision, &widened(&args, &order[..k]), reuse)?;
            if chain.attempts[i].pass {
                break;
            }
            if chain.attempts[i].failed.contains(&"max_size") {
                stopped = format!("mixed precision stopped at {k} parts at 8 bits: over --max-size");
                break;
            }
            if !chain.attempts[i].quality_fails() {
                stopped = format!("mixed precision stopped at {k} parts at 8 bits: only size or speed fail");
                break;
            }
            k *= 2;
        }
    }
    if wider_helps(&chain) && args.bits != Some(8) && stopped.is_empty() {
        let mut int8 = native.clone();
        (int8.method, int8.bits, int8.group) = (Some("rtn".into()), Some(8), None);
        (int8.wide_blocks, int8.embedding_bits) = (Vec::new(), None);
        chain.attempt(Fallback::Int8, &int8, None)?;
    }
    if stopped.is_empty() {
        stopped = match chain.attempts.last() {
            Some(a) if a.pass => format!("{} passes", a.name),
            Some(a) if !a.quality_fails() => {
                format!("{} fails only on size or speed, which wider builds worsen", a.name)
            }
            _ => "every fallback was tried".into(),
        };
    }

    let chosen = choose(&chain.attempts);
    let c = &chain.attempts[chosen];
    let verdict = match c.pass {
        true => format!("passed: {} ({}), {} bytes", c.name, c.fallback, thousands(c.bytes)),
        false => format!(
            "failed: {} (best attempt {}, {}); the fallback reached {}",
            c.failed.join(", "),
            c.name,
            c.fallback,
            chain.attempts.last().map_or(String::new(), |a| format!("{} ({})", a.name, a.fallback))
        ),
    };
    print_attempts(&chain.attempts, chosen);
    let summary = Summary {
        model: model.to_path_buf(),
        rule: Rule::default(),
        max_size: accept.max_size,
        stopped,
        chosen: c.name.clone(),
        path: c.path.clone(),
        pass: c.pass,
        verdict: verdict.clone(),
        sensitivity,
        attempts: chain.attempts,
    };
    let path = out.join(SUMMARY_FILE);
    lowbit_formats::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{verdict}\nbuild: {}\nsummary: {}", summary.path.display(), path.display());
    anyhow::ensure!(summary.pass, "no attempt passes the acceptance rule ({})", summary.verdict);
    Ok(())
}

/// The smallest attempt that passes; when none does, one within `--max-size` if any is, failing the fewest
/// criteria, then with the lowest KLD.
fn choose(attempts: &[Attempt]) -> usize {
    let passing = (0..attempts.len()).filter(|&i| attempts[i].pass).min_by_key(|&i| attempts[i].bytes);
    passing.unwrap_or_else(|| {
        let over = |a: &Attempt| a.failed.contains(&"max_size");
        (0..attempts.len())
            .min_by(|&a, &b| {
                let (a, b) = (&attempts[a], &attempts[b]);
                (over(a), a.failed.len()).cmp(&(over(b), b.failed.len())).then(a.mean_kld.total_cmp(&b.mean_kld))
            })
            .unwrap_or(0)
    })
}

fn print_attempts(attempts: &[Attempt], chosen: usize) {
    let mut t = Table::new(
        &["attempt", "fallback", "bytes", "PPL ratio", "mean KLD", "speedup", "size ratio", "result"],
        &[false, false, true, true, true, true, true, false],
    );
    for (i, a) in attempts.iter().enumerate() {
        let result = match a.pass {
            true => "pass".to_string(),
            false => format!("fails {}", a.failed.join(", ")),
        };
        t.row(vec![
            format!("{}{}", a.name, if i == chosen { " *" } else { "" }),
            a.fallback.to_string(),
            thousands(a.bytes),
            format!("{:.4}", a.ppl_ratio),
            format!("{:.5}", a.mean_kld),
            format!("{:.2}", a.speedup),
            format!("{:.2}", a.size_ratio),
            result,
        ]);
    }
    print!("{}", t.render());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(bytes: u64, failed: &[&'static str], mean_kld: f64) -> Attempt {
        Attempt {
            name: String::new(),
            fallback: Fallback::Requested,
            method: "gptq".into(),
            bits: 4,
            samples: None,
            wide: Vec::new(),
            path: PathBuf::new(),
            reused_from: None,
            bytes,
            quantize_seconds: 0.0,
            validate_seconds: 0.0,
            pass: failed.is_empty(),
            failed: failed.to_vec(),
            ppl_ratio: 1.0,
            mean_kld,
            same_top1: 1.0,
            speedup: 2.0,
            size_ratio: 4.0,
            degenerate: 0,
            mean_overlap: 1.0,
        }
    }

    #[test]
    fn the_smallest_pass_or_the_best_failure_within_budget_is_chosen() {
        let passing = [attempt(90, &["perplexity"], 0.1), attempt(120, &[], 0.01), attempt(100, &[], 0.05)];
        assert_eq!(choose(&passing), 2);
        let failing = [
            attempt(90, &["perplexity", "answers_like_original"], 0.3),
            attempt(100, &["perplexity"], 0.2),
            attempt(110, &["perplexity"], 0.1),
            attempt(130, &["max_size"], 0.01),
        ];
        assert_eq!(choose(&failing), 2, "fewest failures, then lowest KLD; over budget last");
        assert!(!attempt(1, &["speed", "size"], 0.0).quality_fails());
        assert!(!attempt(1, &["speed", "max_size"], 0.0).quality_fails());
        assert!(attempt(1, &["speed", "degenerate_generations"], 0.0).quality_fails());
    }

    #[test]
    fn byte_counts_with_units() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("80M"), Ok(80 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("3kb"), Ok(3 << 10));
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }
}
