//! Command-line surface of `oxray`. Each subcommand lives in its own module with
//! its clap arguments and a `run` function, so the commands stay independent.

mod envs;

use clap::{Parser, Subcommand};

/// oxray: a fast reinforcement-learning rollout and training cluster.
#[derive(Debug, Parser)]
#[command(name = "oxray", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, replay and benchmark the built-in environments.
    #[command(subcommand)]
    Envs(envs::EnvsCommand),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Envs(command) => envs::run(command),
        }
    }
}
