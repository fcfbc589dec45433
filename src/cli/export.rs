//! `oxray export`: a checkpoint's policy in a format that runs without oxray
//! (TorchScript: `torch.jit.load("policy.pt").act(obs, True)`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use oxray_trainers::export::export_torchscript;

use super::train::say;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// A scripted module with `forward(obs)` (action distribution inputs,
    /// or a Q-network's Q-values), `act(obs, deterministic)` and `value(obs)`.
    Torchscript,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint directory (or a run directory / its checkpoints/, whose
    /// latest checkpoint is used).
    checkpoint: PathBuf,
    #[arg(long, value_enum, default_value = "torchscript")]
    format: Format,
    /// Where to write the module.
    #[arg(short, long, default_value = "policy.pt")]
    output: PathBuf,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    match args.format {
        Format::Torchscript => {
            let parameters = export_torchscript(&args.checkpoint, &args.output)?;
            say(format_args!(
                "wrote {} (TorchScript; parameters {})",
                args.output.display(),
                parameters.join(", ")
            ));
        }
    }
    Ok(())
}
