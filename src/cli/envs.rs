//! `oxray envs`: list, replay and benchmark environments.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// List the registered environment ids.
    List,
}

pub fn run(command: EnvsCommand) -> anyhow::Result<()> {
    match command {
        EnvsCommand::List => anyhow::bail!("environment registry not built yet"),
    }
}
