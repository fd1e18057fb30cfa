//! `lowbit compare`: the greedy answers of an original and its build, side by side, with the generation
//! check's figures for each (docs/validation.md).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::sanity::TextFigures;
use lowbit_eval::validate::{answers, Generation};

use crate::load::Runtime;

#[derive(clap::Args)]
pub struct Args {
    /// The original model; runs in f32.
    original: PathBuf,
    /// The quantized build.
    quantized: PathBuf,
    /// A prompt (repeatable).
    #[arg(long, short = 'p', required_unless_present = "prompts")]
    prompt: Vec<String>,
    /// Prompts, one per line.
    #[arg(long, conflicts_with = "prompt")]
    prompts: Option<PathBuf>,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Tokens generated per prompt.
    #[arg(long, short = 'n', default_value_t = 64)]
    max_tokens: usize,
    /// Print the answers and their figures as JSON.
    #[arg(long)]
    json: bool,
    /// How the quantized build runs.
    #[command(flatten)]
    runtime: crate::load::RuntimeArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let texts = match &args.prompts {
        Some(path) => crate::validate_cmd::read_prompts(Some(path))?,
        None => args.prompt.clone(),
    };
    let original = crate::load::load(&args.original, Runtime::F32)?;
    let quantized = crate::load::load(&args.quantized, args.runtime.runtime)?;
    let tok = &original.tokenizer;
    crate::load::ensure_same_tokenizer(&quantized.tokenizer, tok, "the build and the original")?;
    let chat = args.chat.then_some(args.system.as_deref());
    let mut prompts = Vec::with_capacity(texts.len());
    for text in texts {
        let ids = crate::generate_cmd::encode_prompt(tok, &args.original, &text, chat)?;
        prompts.push((text, ids));
    }
    let bar = ProgressBar::new(prompts.len() as u64)
        .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} prompts  [{elapsed} < {eta}]")?);
    let g = answers(&original.model, &quantized.model, tok, &prompts, args.max_tokens, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&g)?);
    } else {
        print_side_by_side(&g);
    }
    Ok(())
}

fn print_side_by_side(g: &Generation) {
    let verdict = |f: &TextFigures| match f.degenerate {
        Some(d) => format!("{d:?}").to_lowercase(),
        None => "text".to_string(),
    };
    for s in &g.samples {
        println!("== {}", s.prompt);
        for (who, f) in [("original ", &s.original), ("quantized", &s.quantized)] {
            println!("{who} | {}", f.text.trim().replace('\n', "\n          | "));
            println!(
                "          [{}; {} tokens, repeat rate {:.2}, PPL under the original {:.1}]",
                verdict(f),
                f.tokens,
                f.repeat_rate,
                f.original_ppl
            );
        }
        println!("overlap {:.2}, same first {} tokens\n", s.overlap, s.shared_prefix);
    }
    println!(
        "{} prompts: {} degenerate answers (original {}), mean overlap {:.2}",
        g.prompts, g.degenerate, g.degenerate_original, g.mean_overlap
    );
}
