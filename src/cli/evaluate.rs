//! `oxray evaluate`: roll out a checkpoint's policy and print the mean, min
//! and max episode return and length; `--output DIR` also records the
//! episodes for offline training (BC).

use std::path::PathBuf;

use clap::Args;
use oxray_trainers::evaluate::{evaluate, Evaluation};

use super::train::say;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A checkpoint directory (or a run directory / its checkpoints/, whose
    /// latest checkpoint is used).
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    episodes: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sample actions from the policy instead of taking its most likely one.
    #[arg(long)]
    explore: bool,
    /// Record the episodes played into a new JSON Lines file in this
    /// directory (RLlib's offline `output`), for `algorithm: BC` to learn
    /// from through `offline_data.input_`.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
}

pub fn run_evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let evaluation = evaluate(
        &args.checkpoint,
        args.episodes as usize,
        args.seed,
        args.explore,
        args.output.as_deref(),
    )?;
    let (r_mean, r_min, r_max) = Evaluation::stats(&evaluation.returns);
    let (l_mean, l_min, l_max) = Evaluation::stats(&evaluation.lengths);
    let episodes = evaluation.returns.len();
    let plural = if episodes == 1 { "" } else { "s" };
    say(format_args!(
        "{}: {episodes} episode{plural}",
        evaluation.env
    ));
    say(format_args!(
        "return  mean {r_mean:.2}  min {r_min:.2}  max {r_max:.2}"
    ));
    say(format_args!(
        "length  mean {l_mean:.1}  min {l_min}  max {l_max}"
    ));
    if let Some(file) = &evaluation.recorded {
        say(format_args!("recorded: {}", file.display()));
    }
    Ok(())
}
