//! Command-line surface of `oxray`. Each subcommand lives in its own module with
//! its clap arguments and a `run` function, so the commands stay independent.

mod bench;
mod bench_cluster;
mod bench_head;
mod bench_scheduling;
mod cluster;
mod envs;
mod evaluate;
mod export;
mod interrupt;
mod job;
mod microbenchmark;
mod microbenchmark_compare;
mod python;
mod state;
mod symmetric_run;
mod tensorboard;
mod tls;
mod train;

use clap::{Parser, Subcommand};
pub use interrupt::Interrupted;

/// oxray: a fast reinforcement-learning rollout and training cluster.
#[derive(Debug, Parser)]
#[command(name = "oxray", version, about)]
pub struct Cli {
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, replay and benchmark the built-in environments.
    #[command(subcommand)]
    Envs(envs::EnvsCommand),
    /// Train an algorithm from a YAML experiment config.
    Train(train::TrainArgs),
    /// Roll out a checkpoint's policy and report episode returns.
    Evaluate(evaluate::EvaluateArgs),
    /// Write a checkpoint's policy as a standalone TorchScript module.
    Export(export::ExportArgs),
    /// Start the head of a cluster, or a node joining one.
    Start(cluster::StartArgs),
    /// Stop the oxray processes this machine started.
    Stop,
    /// Show the cluster's nodes, actors, tasks and objects.
    Status(cluster::StatusArgs),
    /// One row per node, job, actor, task, object, placement group or
    /// worker (`ray list`).
    List(state::ListArgs),
    /// Counts of tasks, actors or objects by name and state (`ray summary`).
    Summary(state::SummaryArgs),
    /// Submit drivers to the cluster and watch or stop them (`ray job`).
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Measure core throughput the way `ray microbenchmark` does.
    Microbenchmark(microbenchmark::Args),
    /// Run by every task of one `srun`: task 0 starts the head, waits for
    /// --min-nodes and runs CMD; the others join and wait for it to finish.
    #[command(name = "symmetric-run")]
    SymmetricRun(symmetric_run::SymmetricRunArgs),
    /// Benchmark the collective layer (`oxray bench allreduce`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Serve the training results in TensorBoard (installed on first use).
    Tensorboard(tensorboard::TensorboardArgs),
    /// Certificates for mutual TLS between the cluster's processes.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        // Before any thread starts: the processes this one starts inherit it.
        if !matches!(self.command, Command::Tls(_)) {
            self.tls.apply()?;
        }
        match self.command {
            Command::Envs(command) => envs::run(command),
            Command::Train(args) => train::run_train(args),
            Command::Evaluate(args) => evaluate::run_evaluate(args),
            Command::Export(args) => export::run_export(args),
            Command::Microbenchmark(args) => microbenchmark::run(args),
            Command::SymmetricRun(args) => symmetric_run::run(args),
            Command::Bench(command) => bench::run(command),
            Command::Start(args) => cluster::start(args),
            Command::Stop => cluster::stop(),
            Command::Status(args) => cluster::status(args),
            Command::Tensorboard(args) => tensorboard::run(args),
            Command::List(args) => state::list(args),
            Command::Summary(args) => state::summary(args),
            Command::Job(command) => job::run(command),
            Command::Tls(command) => tls::run(command),
        }
    }
}
