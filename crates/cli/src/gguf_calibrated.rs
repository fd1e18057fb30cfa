//! `lowbit quantize MODEL -o OUT.gguf --type T --method gptq|awq|awq-gptq [--act-order] [--no-importance]`: a
//! calibrated method into llama.cpp's block types, a GGUF file llama.cpp loads. A GPT-OSS directory calibrates as it
//! is and writes its converted GGUF file (llama.cpp's layout), its experts rounded one by one.
//!
//! Every tensor gets the type llama.cpp's mix gives it with an importance matrix. The block projections (and an
//! untied output matrix) are rounded onto their type's blocks, whose scales are fitted by llama.cpp's
//! importance-weighted quantizer with the calibration set's mean x² per column (by GPTQ, which then chooses the codes,
//! or by round to nearest after AWQ's scales); the norms and biases AWQ folds its scales into are written changed; the
//! rest (the token embedding, other norms) as llama-quantize writes them without an imatrix entry, as llama-imatrix
//! records none for them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit_formats::gguf::GgufFile;
use lowbit_formats::quantize::{quantize, RowBlocks};
use lowbit_formats::source::ModelSource;
use lowbit_model::Proj;
use lowbit_quant::gguf_export::{export_prequantized, planned_types, Prequantized};
use lowbit_quant::grid::{Quantized, Target};
use lowbit_quant::layerwise::Plan;
use lowbit_quant::FileType;

use crate::native_quantize::NativeArgs;
use crate::table::{thousands, Table};

/// Calibrates on `source` and writes `gguf` (the same model as a GGUF file: `source` itself, or a GPT-OSS directory
/// converted) to `out` with the calibrated tensors.
pub fn run(
    source: &ModelSource,
    gguf: &GgufFile,
    out: &Path,
    ftype: FileType,
    pure: bool,
    args: &NativeArgs,
    plan: Plan,
) -> anyhow::Result<()> {
    let model = source.path();
    let types = planned_types(gguf, ftype, pure, true)?;
    let n_layers = source.config()?.n_layers;
    let experts = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];
    let mut rounded: Vec<String> = (0..n_layers)
        .flat_map(|l| {
            Proj::ALL.map(|p| p.tensor_name(l)).into_iter().chain(experts.map(|e| format!("blk.{l}.{e}.weight")))
        })
        .collect();
    // A tied output matrix is also the token embedding, whose rows the calibrated rounding would fit to the head alone.
    rounded.push("output.weight".into());
    let mut targets = HashMap::new();
    for (t, &dtype) in gguf.tensors().iter().zip(&types) {
        if !rounded.contains(&t.name) {
            continue;
        }
        anyhow::ensure!(
            RowBlocks::has_grid(dtype),
            "the calibrated methods round onto block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K, TQ1_0, TQ2_0); {ftype} gives {} {dtype}",
            t.name
        );
        targets.insert(t.name.clone(), Target::Gguf { dtype, weighted: !args.no_importance });
    }
    // The model rounds a fused gate/up expert stack, which the file splits (llama.cpp's GPT-OSS layout): one type
    // serves both halves.
    for l in 0..n_layers {
        let [gate, up] = ["ffn_gate_exps", "ffn_up_exps"].map(|e| targets.get(&format!("blk.{l}.{e}.weight")).copied());
        if let (Some(g), Some(u)) = (gate, up) {
            anyhow::ensure!(g == u, "block {l}: {ftype} gives the gate and up experts different types");
            targets.insert(format!("blk.{l}.ffn_gate_up_exps.weight"), g);
        }
    }
    let (result, details) =
        crate::native_quantize::calibrated(source, args, plan, &|name, _| targets.get(name).copied())?;
    let mut prequantized = BTreeMap::new();
    for (name, q) in result.tensors {
        let Quantized::Gguf { dtype, bytes } = q else { anyhow::bail!("{name}: a native group matrix for GGUF") };
        match name.strip_suffix(".ffn_gate_up_exps.weight") {
            // Rows interleave gate and up; each half takes its own.
            Some(block) => {
                let gate = format!("{block}.ffn_gate_exps.weight");
                let t = gguf.tensor_info(&gate).with_context(|| format!("{gate}: not in the model"))?;
                let row = dtype.storage_bytes(t.dims[0])? as usize;
                for (half, first) in [(gate, 0), (format!("{block}.ffn_up_exps.weight"), 1)] {
                    let bytes = bytes.chunks_exact(row).skip(first).step_by(2).flatten().copied().collect();
                    prequantized.insert(half, Prequantized { dtype, bytes });
                }
            }
            None => {
                prequantized.insert(name, Prequantized { dtype, bytes });
            }
        }
    }
    let rounded_count = prequantized.len();
    for (name, values) in result.values {
        let k =
            gguf.tensors().iter().position(|t| t.name == name).with_context(|| format!("{name}: not in the model"))?;
        let dtype = types[k];
        let bytes = quantize(dtype, &values, values.len().max(1), None).with_context(|| format!("tensor {name}"))?;
        prequantized.insert(name, Prequantized { dtype, bytes });
    }
    let bar = ProgressBar::new(gguf.tensors().len() as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} tensors  {msg}  [{elapsed} < {eta}]")?);
    let summary = export_prequantized(gguf, out, ftype, pure, None, &prequantized, &|i, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    let written = std::fs::metadata(out)?.len();
    let method = args.method.as_deref().unwrap_or_default().to_uppercase();
    let how = if args.act_order { format!("{method}, act-order") } else { method };
    let how = if args.no_importance { format!("{how}, unweighted blocks") } else { how };
    println!("{} -> {} ({ftype}, {how}, {} bytes)", model.display(), out.display(), thousands(written));
    println!("calibration: {}", details["data"]);
    println!("seconds: {}", details["seconds"]);
    let mut t = Table::new(&["storage", "tensors", "bytes", "calibrated"], &[false, true, true, true]);
    for c in &summary.per_type {
        let calibrated = prequantized.values().filter(|p| p.dtype == c.dtype).count();
        t.row(vec![c.dtype.name().into(), c.tensors.to_string(), thousands(c.bytes), calibrated.to_string()]);
    }
    t.row(vec!["total".into(), summary.tensors.to_string(), thousands(summary.bytes), rounded_count.to_string()]);
    print!("{}", t.render());
    Ok(())
}
