//! `lowbit inspect`: what a model is made of.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lowbit_formats::config::{AttentionKind, ModelConfig};
use lowbit_formats::layout::{logical_tensors, released_tensors};
use lowbit_formats::params::{self, ParamCount};
use lowbit_formats::source::ModelSource;
use lowbit_quant::native_export::NativeScheme;
use lowbit_quant::profile::{Profile, TensorClass};
use lowbit_quant::rtn::RtnScheme;
use serde::Serialize;

use crate::table::{thousands, Table};

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file, Hugging Face directory, lowbit output directory, or a bare config.json.
    model: PathBuf,
    /// Leave out the per-tensor table.
    #[arg(long)]
    summary: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// For a bare config.json: the build a device profile (`lowbit quantize --target`) makes, rule by rule,
    /// with its run-time memory against the profile's budget. `snapdragon-x`, `iphone` or `ternary`.
    #[arg(long)]
    target: Option<String>,
}

/// (bits, group) of the round-to-nearest builds whose size inspect predicts for a bare config (and NF4's).
const PREDICTED_SCHEMES: [(u8, Option<usize>); 5] =
    [(8, None), (4, Some(128)), (4, Some(32)), (3, Some(128)), (2, Some(64))];

#[derive(Serialize)]
struct TensorRow {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    bytes: u64,
}

#[derive(Serialize, Default)]
struct FormatRow {
    tensors: usize,
    parameters: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct Params {
    total: u64,
    /// Multiplied with per token: everything but the input embedding and the unrouted experts.
    active: u64,
    embedding: u64,
    lm_head: u64,
    experts: u64,
}

impl From<ParamCount> for Params {
    fn from(p: ParamCount) -> Params {
        Params { total: p.total(), active: p.active(), embedding: p.embedding, lm_head: p.lm_head, experts: p.experts }
    }
}

#[derive(Serialize)]
struct Report {
    path: String,
    source: &'static str,
    architecture: &'static str,
    /// The tensors are the release's, predicted from a bare config.json (`lowbit_formats::layout`).
    released: bool,
    /// For a release's layout: the tensor bytes of native builds (`quantize --method rtn`), by scheme name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    predicted: BTreeMap<String, u64>,
    config: ConfigSummary,
    /// With --target: the profile's build.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<ProfileReport>,
    parameters: Params,
    /// Per storage type; empty for a bare config.json of a model without a known release layout.
    formats: BTreeMap<String, FormatRow>,
    tensors: Vec<TensorRow>,
}

/// A device profile's predicted build of a release (`inspect --target`).
#[derive(Serialize)]
struct ProfileReport {
    target: &'static str,
    device: &'static str,
    /// Per tensor class: the scheme and what it stores.
    rules: Vec<RuleRow>,
    /// Tensor bytes of the directory `quantize --target` writes.
    bytes: u64,
    /// What running it holds beyond the mapped file: the kernels' group parameters and tables.
    runtime_parameter_bytes: u64,
    /// The f32 KV cache lowbit allocates for `context` positions.
    context: usize,
    kv_cache_bytes: u64,
    /// Bytes the budget counts: weights and run-time state for snapdragon-x, the weights for iphone.
    counted_bytes: u64,
    /// `None`: the profile has no device budget (ternary).
    budget_bytes: Option<u64>,
    fits: Option<bool>,
}

#[derive(Serialize)]
struct RuleRow {
    class: &'static str,
    scheme: String,
    tensors: usize,
    parameters: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct ConfigSummary {
    layers: usize,
    hidden_size: usize,
    intermediate_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab_size: usize,
    context_length: usize,
    rope_theta: f32,
    sliding_layers: usize,
    tied_embeddings: bool,
    experts: Option<(usize, usize)>,
}

fn summarize(c: &ModelConfig) -> ConfigSummary {
    ConfigSummary {
        layers: c.n_layers,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        heads: c.n_heads,
        kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        vocab_size: c.vocab_size,
        context_length: c.context_length,
        rope_theta: c.rope_theta,
        sliding_layers: c.layer_attention.iter().filter(|a| matches!(a, AttentionKind::Sliding { .. })).count(),
        tied_embeddings: c.tie_embeddings,
        experts: c.moe.as_ref().map(|m| (m.n_experts, m.experts_per_token)),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let source = ModelSource::open(&args.model)?;
    let config = source.config()?;
    let counts = match &source {
        ModelSource::ConfigOnly { .. } => params::from_config(&config)?,
        _ => params::from_tensors(&source, &config)?,
    };
    // (name, shape, storage, elements, bytes) of every tensor: the file's, or the release's for a bare config.
    let mut rows = Vec::new();
    for name in source.tensor_names() {
        let t = source.tensor(name)?;
        rows.push((
            name.to_string(),
            t.shape.clone(),
            source.storage_name(name)?,
            t.n_elements() as u64,
            source.stored_bytes(name)? as u64,
        ));
    }
    let released = matches!(source, ModelSource::ConfigOnly { .. });
    if let (true, Some(specs)) = (released, released_tensors(&config)) {
        for t in specs {
            let bytes = t.bytes().ok_or_else(|| anyhow::anyhow!("{}: size overflows", t.hf_name))?;
            let elements = t.shape.iter().map(|&d| d as u64).product();
            rows.push((t.hf_name, t.shape, t.dtype.name().to_string(), elements, bytes));
        }
    }
    let released = released && !rows.is_empty();
    let mut tensors = Vec::new();
    let mut formats: BTreeMap<String, FormatRow> = BTreeMap::new();
    for (name, shape, storage, elements, bytes) in rows {
        // Hugging Face's MXFP4 matrix is two U8 tensors: 16 bytes of codes and one scale per 32 weights.
        let (storage, parameters) = match storage.as_str() {
            "U8" if name.ends_with("blocks") => ("MXFP4".to_string(), 2 * bytes),
            "U8" if name.ends_with("scales") => ("MXFP4".to_string(), 0),
            _ => (storage, elements),
        };
        let row = formats.entry(storage.clone()).or_default();
        row.tensors += 1;
        row.parameters += parameters;
        row.bytes += bytes;
        tensors.push(TensorRow { name, shape, dtype: storage, bytes });
    }
    // What `quantize --method rtn|nf4` would write, tensor for tensor, predicted from the release's layout.
    let mut predicted = BTreeMap::new();
    let logical = logical_tensors(&config).filter(|_| released);
    if let Some(logical) = &logical {
        let rtn =
            PREDICTED_SCHEMES.iter().map(|&(bits, group)| RtnScheme::new(bits, group, true).map(NativeScheme::Rtn));
        let profiles = Profile::ALL.map(|profile| Ok(NativeScheme::Profile { profile, seed: 0 }));
        for scheme in rtn.chain([Ok(NativeScheme::Nf4)]).chain(profiles) {
            let scheme = scheme?;
            let bytes = logical.iter().map(|(name, shape)| scheme.stored_bytes(name, shape)).sum::<u64>();
            predicted.insert(scheme.name(), bytes);
        }
    }
    let profile = match (&args.target, &logical) {
        (None, _) => None,
        (Some(name), Some(logical)) => Some(profile_report(crate::native_quantize::target(name)?, &config, logical)),
        (Some(_), None) => anyhow::bail!(
            "--target predicts a release's build from its bare config.json (of a known architecture); {} is not one",
            args.model.display()
        ),
    };
    let report = Report {
        released,
        predicted,
        path: args.model.display().to_string(),
        source: match source {
            ModelSource::Gguf(_) => "gguf",
            ModelSource::Hf(_) => "huggingface",
            ModelSource::Native(_) => "lowbit",
            ModelSource::ConfigOnly { .. } => "config.json",
        },
        architecture: config.arch.name(),
        config: summarize(&config),
        profile,
        parameters: counts.into(),
        formats,
        tensors,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.summary);
    }
    Ok(())
}

fn profile_report(target: Profile, config: &ModelConfig, logical: &[(String, Vec<usize>)]) -> ProfileReport {
    let scheme = NativeScheme::Profile { profile: target, seed: 0 };
    let classes = [TensorClass::Embedding, TensorClass::Attention, TensorClass::Ffn];
    let mut rules: Vec<RuleRow> = classes
        .iter()
        .map(|&c| RuleRow { class: c.name(), scheme: target.scheme(c, 0).name(), tensors: 0, parameters: 0, bytes: 0 })
        .collect();
    rules.push(RuleRow {
        class: "wide (routers, norms, biases)",
        scheme: "f16 / f32".into(),
        tensors: 0,
        parameters: 0,
        bytes: 0,
    });
    let (mut bytes, mut runtime) = (0, 0);
    for (name, shape) in logical {
        let (b, rt) = (scheme.stored_bytes(name, shape), scheme.runtime_bytes(name, shape));
        // A tensor the profile leaves wide has no run-time parameters.
        let row = if rt == 0 { 3 } else { TensorClass::of(name) as usize };
        rules[row].tensors += 1;
        rules[row].parameters += shape.iter().map(|&d| d as u64).product::<u64>();
        rules[row].bytes += b;
        (bytes, runtime) = (bytes + b, runtime + rt);
    }
    let context = target.context().min(config.context_length);
    let kv_cache_bytes = 2 * (config.n_layers * context * config.kv_dim() * 4) as u64;
    let budget = target.budget();
    let counted_bytes = match budget {
        Some((_, true)) => bytes + runtime + kv_cache_bytes,
        _ => bytes,
    };
    ProfileReport {
        target: target.name(),
        device: target.device(),
        rules,
        bytes,
        runtime_parameter_bytes: runtime,
        context,
        kv_cache_bytes,
        counted_bytes,
        budget_bytes: budget.map(|b| b.0),
        fits: budget.map(|b| counted_bytes <= b.0),
    }
}

fn print_profile(p: &ProfileReport) {
    println!("\n--target {}: {}\n", p.target, p.device);
    let mut t = Table::new(
        &["class", "scheme", "tensors", "parameters", "bytes", "bits/weight"],
        &[false, false, true, true, true, true],
    );
    for r in &p.rules {
        t.row(vec![
            r.class.into(),
            r.scheme.clone(),
            r.tensors.to_string(),
            thousands(r.parameters),
            thousands(r.bytes),
            format!("{:.3}", r.bytes as f64 * 8.0 / r.parameters.max(1) as f64),
        ]);
    }
    print!("{}", t.render());
    println!("\nfile (tensor bytes)                       {:>18}", thousands(p.bytes));
    println!("run-time group parameters and tables      {:>18}", thousands(p.runtime_parameter_bytes));
    println!("KV cache, f32, {:>6} positions           {:>18}", p.context, thousands(p.kv_cache_bytes));
    let counted = if p.counted_bytes == p.bytes { "the weights" } else { "weights + run-time state" };
    match (p.budget_bytes, p.fits) {
        (Some(budget), Some(fits)) => println!(
            "budget: {counted} {} of {} bytes: {}",
            thousands(p.counted_bytes),
            thousands(budget),
            if fits { "fits" } else { "DOES NOT FIT" }
        ),
        _ => println!("no device budget"),
    }
}

fn print_report(r: &Report, summary: bool) {
    let c = &r.config;
    println!("{} ({}, {})", r.path, r.source, r.architecture);
    println!(
        "{} layers, width {}, MLP {}, {} heads / {} kv heads of {}, vocab {}, context {}, rope base {}{}{}",
        c.layers,
        c.hidden_size,
        c.intermediate_size,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.vocab_size,
        c.context_length,
        c.rope_theta,
        if c.sliding_layers > 0 { format!(", {} sliding-window layers", c.sliding_layers) } else { String::new() },
        c.experts.map_or(String::new(), |(n, k)| format!(", {k} of {n} experts per token")),
    );
    let p = &r.parameters;
    println!();
    let mut t = Table::new(&["parameters", "count"], &[false, true]);
    t.row(vec!["total".into(), thousands(p.total)]);
    t.row(vec!["active per token (excl. input embedding)".into(), thousands(p.active)]);
    t.row(vec!["input embedding".into(), thousands(p.embedding)]);
    t.row(vec![
        if c.tied_embeddings { "output projection (tied)".into() } else { "output projection".into() },
        thousands(p.lm_head),
    ]);
    if p.experts > 0 {
        t.row(vec!["routed experts (all)".into(), thousands(p.experts)]);
    }
    print!("{}", t.render());
    if r.formats.is_empty() {
        println!("\n(no tensors: structure from config.json only)");
        return;
    }
    println!();
    if r.released {
        println!("(tensors as released, predicted from config.json: names, shapes and dtypes of the checkpoint)\n");
    }
    let mut t =
        Table::new(&["storage", "tensors", "parameters", "bytes", "bits/weight"], &[false, true, true, true, true]);
    let (mut n, mut params, mut bytes) = (0, 0, 0);
    for (name, f) in &r.formats {
        t.row(vec![
            name.clone(),
            f.tensors.to_string(),
            thousands(f.parameters),
            thousands(f.bytes),
            format!("{:.3}", f.bytes as f64 * 8.0 / f.parameters.max(1) as f64),
        ]);
        (n, params, bytes) = (n + f.tensors, params + f.parameters, bytes + f.bytes);
    }
    t.row(vec![
        "all".into(),
        n.to_string(),
        thousands(params),
        thousands(bytes),
        format!("{:.3}", bytes as f64 * 8.0 / params.max(1) as f64),
    ]);
    print!("{}", t.render());
    if !r.predicted.is_empty() {
        println!(
            "\npredicted native builds (lowbit quantize --method rtn|nf4, --target PROFILE; routers, norms and biases stay wide)\n"
        );
        let mut t = Table::new(&["scheme", "bytes", "bits/weight"], &[false, true, true]);
        for (scheme, b) in &r.predicted {
            t.row(vec![scheme.clone(), thousands(*b), format!("{:.3}", *b as f64 * 8.0 / params.max(1) as f64)]);
        }
        print!("{}", t.render());
    }
    if let Some(p) = &r.profile {
        print_profile(p);
    }
    if summary {
        return;
    }
    println!();
    let mut t = Table::new(&["tensor", "shape", "storage", "bytes"], &[false, false, false, true]);
    for row in &r.tensors {
        t.row(vec![row.name.clone(), format!("{:?}", row.shape), row.dtype.clone(), thousands(row.bytes)]);
    }
    print!("{}", t.render());
}
