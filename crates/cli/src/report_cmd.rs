//! `lowbit report DIR`: every validated build found in DIR (`*/validation_report.json`,
//! `*.validation_report.json`, DIR's own) and DIR's quantization_summary.json, as one HTML page
//! (`report_page`), written to DIR/report.html.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::accept::SUMMARY_FILE;
use crate::report_page::{Build, Original, Page};

#[derive(clap::Args)]
pub struct Args {
    /// A directory of builds with their validation reports (as `quantize --accept` writes it).
    dir: PathBuf,
    /// Where the page goes (default: DIR/report.html).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
}

/// The fields of validation_report.json the page shows (docs/validation.md).
#[derive(Deserialize)]
struct Report {
    original: String,
    quality: Quality,
    speed: Speed,
    size: Size,
    criteria: Vec<Criterion>,
    pass: bool,
}

#[derive(Deserialize)]
struct Quality {
    original_ppl: f64,
    ppl: f64,
    mean_kld: f64,
}

#[derive(Deserialize)]
struct Speed {
    fp16: Median,
    quantized: Median,
}

#[derive(Deserialize)]
struct Median {
    median: f64,
}

#[derive(Deserialize)]
struct Size {
    fp16_bytes: u64,
    bytes: u64,
}

#[derive(Deserialize)]
struct Criterion {
    name: String,
    value: f64,
    pass: bool,
}

/// The fields of quantization_summary.json the page shows.
#[derive(Deserialize)]
struct Summary {
    chosen: String,
    verdict: String,
    sensitivity: Option<Sensitivity>,
}

#[derive(Deserialize)]
struct Sensitivity {
    of: String,
    parts: Vec<PartSensitivity>,
}

#[derive(Deserialize)]
struct PartSensitivity {
    part: serde_json::Value,
    mean_kld: f64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a report lowbit wrote", path.display()))
}

/// (build name, its report) for every report in `dir`, by name.
fn find_reports(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let name_of = |p: &Path| p.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let mut found = Vec::new();
    let own = dir.join("validation_report.json");
    if own.is_file() {
        found.push((name_of(dir), own));
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = name_of(&path);
        if path.is_dir() && path.join("validation_report.json").is_file() {
            found.push((name, path.join("validation_report.json")));
        } else if let Some(stem) = name.strip_suffix(".validation_report.json") {
            found.push((stem.to_string(), path));
        }
    }
    found.sort();
    Ok(found)
}

/// "12" for a block, "emb" for the embedding.
fn part_label(part: &serde_json::Value) -> String {
    match part.get("block").and_then(|b| b.as_u64()) {
        Some(b) => b.to_string(),
        None => part.as_str().map_or("?".into(), |s| if s == "embedding" { "emb".into() } else { s.to_string() }),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let reports = find_reports(&args.dir)?;
    anyhow::ensure!(
        !reports.is_empty(),
        "{}: no validation reports (run `lowbit validate` on its builds, or `lowbit quantize --accept`)",
        args.dir.display()
    );
    let summary_path = args.dir.join(SUMMARY_FILE);
    let summary: Option<Summary> = if summary_path.is_file() { Some(read_json(&summary_path)?) } else { None };
    let mut builds = Vec::new();
    let mut original = None;
    for (name, path) in &reports {
        let r: Report = read_json(path)?;
        original.get_or_insert_with(|| Original {
            name: Path::new(&r.original).file_name().map_or(r.original.clone(), |n| n.to_string_lossy().into_owned()),
            fp16_bytes: r.size.fp16_bytes,
            ppl: r.quality.original_ppl,
            fp16_tokens_per_second: r.speed.fp16.median,
        });
        builds.push(Build {
            chosen: summary.as_ref().is_some_and(|s| &s.chosen == name),
            name: name.clone(),
            bytes: r.size.bytes,
            ppl: r.quality.ppl,
            mean_kld: r.quality.mean_kld,
            tokens_per_second: r.speed.quantized.median,
            pass: r.pass,
            criteria: r.criteria.into_iter().map(|c| (c.name, c.value, c.pass)).collect(),
        });
    }
    let original = original.expect("at least one report");
    let title = format!("lowbit builds of {}", original.name);
    let page = Page {
        title,
        original,
        builds,
        sensitivity: summary.as_ref().and_then(|s| s.sensitivity.as_ref()).map(|s| {
            let mut parts: Vec<(String, f64)> = s.parts.iter().map(|p| (part_label(&p.part), p.mean_kld)).collect();
            // Model order: blocks ascending, then the embedding.
            parts.sort_by_key(|(label, _)| label.parse::<usize>().unwrap_or(usize::MAX));
            (s.of.clone(), parts)
        }),
        verdict: summary.map(|s| s.verdict),
    };
    let out = args.out.unwrap_or_else(|| args.dir.join("report.html"));
    lowbit_formats::write_atomic(&out, crate::report_page::render(&page).as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{} builds -> {}", reports.len(), out.display());
    Ok(())
}
