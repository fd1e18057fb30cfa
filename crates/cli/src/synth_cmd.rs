//! `lowbit synth`: a synthetic checkpoint with exactly the tensor names, shapes and dtypes a model's release
//! has (`lowbit_formats::layout`), random weights of realistic scale, and the release's side files, for
//! measuring memory and speed of a model whose weights cannot be downloaded (GPT-OSS-20B).
//!
//! Values: BF16 matrices, biases and embeddings uniform with standard deviation 0.02 (the initializer range
//! of the config), norms uniform in [0.9, 1.1], attention sinks uniform in [−1, 1]; MXFP4 experts random
//! 4-bit codes with E8M0 scales of 2^−7 ± 1, which puts their standard deviation near 0.02 too. Every tensor
//! has its own seeded stream, so a checkpoint is reproducible byte for byte from (config, layers, seed).
//! Tensors are generated and written one piece at a time: memory stays at a few MB whatever the size.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::config::ModelConfig;
use lowbit_formats::hf_config::read_json;
use lowbit_formats::layout::{released_tensors, TensorSpec};
use lowbit_formats::native::write::{SafetensorsWriter, StagedDir};
use lowbit_formats::DType;
use lowbit_quant::calib_data::SplitMix64;
use lowbit_runtime::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// The released config.json (its directory's chat_template.jinja and generation_config.json are copied).
    config: PathBuf,
    /// Output directory (a Hugging Face model directory).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Keep only the first N layers (disk or time short); the config says N layers.
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// How a tensor's values are drawn.
enum Fill {
    /// BF16 uniform in [center − half, center + half].
    Uniform { center: f32, half: f32 },
    /// Random bytes (MXFP4 codes).
    Bytes,
    /// E8M0 exponents in 2^−8..2^−6.
    Scales,
}

fn fill_of(t: &TensorSpec) -> Fill {
    // A uniform of half-width a has standard deviation a/√3.
    let std = |s: f32| Fill::Uniform { center: 0.0, half: s * 3f32.sqrt() };
    match t.dtype {
        DType::U8 if t.hf_name.ends_with("_scales") => Fill::Scales,
        DType::U8 => Fill::Bytes,
        _ if t.hf_name.ends_with("layernorm.weight") || t.hf_name.ends_with("norm.weight") => {
            Fill::Uniform { center: 1.0, half: 0.1 }
        }
        _ if t.hf_name.ends_with("sinks") => Fill::Uniform { center: 0.0, half: 1.0 },
        _ => std(0.02),
    }
}

/// Writes `bytes` bytes of tensor `t` to `out` from its own stream.
fn produce(t: &TensorSpec, seed: u64, bytes: u64, out: &mut dyn Write, bar: &ProgressBar) -> std::io::Result<()> {
    let name_hash =
        t.hf_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = SplitMix64(seed ^ name_hash);
    let fill = fill_of(t);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        match fill {
            Fill::Bytes => buf[..n].chunks_mut(8).for_each(|c| c.copy_from_slice(&rng.next().to_le_bytes()[..c.len()])),
            Fill::Scales => buf[..n].iter_mut().for_each(|b| *b = 119 + (rng.next() % 3) as u8),
            Fill::Uniform { center, half } => buf[..n].chunks_exact_mut(2).for_each(|c| {
                let unit = (rng.next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                let v = center + half * (2.0 * unit - 1.0);
                c.copy_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }),
        }
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
        left -= n as u64;
    }
    Ok(())
}

/// The config with only its first `layers` layers.
fn truncated_config(mut json: serde_json::Value, layers: usize) -> anyhow::Result<serde_json::Value> {
    let have = json["num_hidden_layers"].as_u64().context("config.json: num_hidden_layers")? as usize;
    anyhow::ensure!((1..=have).contains(&layers), "--layers {layers}: the model has 1..={have}");
    json["num_hidden_layers"] = layers.into();
    if let Some(types) = json.get_mut("layer_types").and_then(|v| v.as_array_mut()) {
        types.truncate(layers);
    }
    Ok(json)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut json = read_json(&args.config)?;
    if let Some(layers) = args.layers {
        json = truncated_config(json, layers)?;
    }
    let config = ModelConfig::from_hf_json(&args.config, &json)?;
    let specs = released_tensors(&config)
        .with_context(|| format!("{}: no known release layout for {}", args.config.display(), config.arch.name()))?;
    let total: u64 = specs.iter().map(|t| t.bytes().unwrap_or(0)).sum();
    let source_dir = args.config.parent().unwrap_or(Path::new("."));

    let staged = StagedDir::new(&args.out)?;
    let bar = ProgressBar::new(total)
        .with_style(ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes}  {msg}  [{elapsed} < {eta}]")?);
    let mut writer = SafetensorsWriter::new();
    for t in &specs {
        let bytes = t.bytes().with_context(|| format!("{}: size overflows", t.hf_name))?;
        let (bar, seed) = (&bar, args.seed);
        writer.add(
            vec![(t.hf_name.clone(), t.dtype, t.shape.clone())],
            Box::new(move |out| {
                bar.set_message(t.hf_name.clone());
                produce(t, seed, bytes, out, bar)
                    .map_err(|cause| lowbit_formats::FormatError::Io { path: PathBuf::from(&t.hf_name), cause })
            }),
        )?;
    }
    writer.write(&staged.path().join("model.safetensors"))?;
    bar.finish_and_clear();

    std::fs::write(staged.path().join("config.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    let template = match std::fs::read_to_string(source_dir.join("chat_template.jinja")) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading chat_template.jinja"),
    };
    if let Ok(generation) = std::fs::read(source_dir.join("generation_config.json")) {
        std::fs::write(staged.path().join("generation_config.json"), generation)?;
    }
    Tokenizer::o200k_harmony(template)?.save_hf_dir(staged.path())?;
    staged.commit()?;
    println!(
        "{} -> {} ({} layers, {} tensors, {} tensor bytes, seed {})",
        args.config.display(),
        args.out.display(),
        config.n_layers,
        specs.len(),
        crate::table::thousands(total),
        args.seed
    );
    Ok(())
}
