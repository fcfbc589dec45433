//! `oxray train`: run an experiment config to its stop criterion, showing
//! progress, and print where the run directory is.
//!
//! The embedded single-node cluster is started only when the config asks for
//! remote EnvRunners or Learners (or `--address` names a cluster): a config
//! that samples and learns in the driver needs no worker processes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oxray_rl::metrics::{self, Metrics};
use oxray_trainers::run::{run, RunEvent, RunOptions};
use oxray_trainers::ExperimentConfig;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (YAML), e.g. configs/ppo-cartpole.yaml.
    config: PathBuf,
    /// Override a config key, e.g. `--set training.lr=1e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Results go to results/NAME/<timestamp>/ [default: the config file's name].
    #[arg(long)]
    name: Option<String>,
    /// Continue the run in RUN_DIR from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Join the cluster whose head listens at ADDR instead of starting one
    /// (default: `OXRAY_ADDRESS` if set).
    #[arg(long, value_name = "ADDR")]
    address: Option<String>,
    /// Never ship this executable to nodes through the head: every node must
    /// have it at the same path (a shared file system).
    #[arg(long)]
    no_ship: bool,
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let config = ExperimentConfig::load(&args.config, &args.set)?;
    let name = args.name.unwrap_or_else(|| {
        args.config
            .file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned())
    });
    // Inside `oxray symmetric-run` or an sbatch job the cluster is in the
    // environment.
    let address = args.address.or_else(|| std::env::var("OXRAY_ADDRESS").ok());
    let uses_actors = config.env_runners.num_env_runners > 0
        || config.evaluation.num_env_runners > 0
        || config.learners.num_learners > 0;
    if uses_actors && address.is_none() {
        check_actors_fit_cores(&config)?;
    }
    if uses_actors || address.is_some() {
        let mut options = oxray_core::InitOptions::default();
        if args.no_ship {
            options = options.ship_executable(oxray_core::ShipExecutable::Never);
        }
        if let Some(address) = &address {
            options = options.address(address);
        }
        oxray_core::init(options)?;
    }
    let mut progress = Progress::new();
    let outcome = run(
        RunOptions {
            config,
            name,
            results_dir: PathBuf::from("results"),
            resume: args.resume,
        },
        |event| match event {
            RunEvent::Result(result) => progress.report(result),
            RunEvent::Warning(warning) => progress.warn(&warning),
        },
    );
    progress.finish();
    if uses_actors || address.is_some() {
        oxray_core::shutdown();
    }
    let summary = outcome?;
    let result = &summary.last_result;
    say(format_args!(
        "done: {} after {} iterations, {} env steps, {:.1} s; return mean {}",
        summary.stop_reason,
        result[metrics::TRAINING_ITERATION],
        result[metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME],
        result[metrics::TIME_TOTAL_S],
        format_return(result),
    ));
    say(format_args!(
        "learner device: {}",
        summary.learner_devices.join(", ")
    ));
    say(format_args!("run directory: {}", summary.run_dir.display()));
    if let Some(checkpoint) = summary.checkpoint {
        say(format_args!("checkpoint: {}", checkpoint.display()));
    }
    Ok(())
}

/// The embedded node has this machine's CPUs and no other node can join it,
/// so an EnvRunner or Learner actor that does not fit would wait for
/// resources for ever (Ray waits too, with a warning) and the run would hang
/// on its first sample or its final checkpoint. Refuse such a config before
/// anything starts.
fn check_actors_fit_cores(config: &ExperimentConfig) -> anyhow::Result<()> {
    let runners = &config.env_runners;
    let evaluation_runners = config.evaluation.num_env_runners;
    let wanted = (runners.num_env_runners + evaluation_runners) as f64
        * runners.num_cpus_per_env_runner
        + config.learners.num_learners as f64 * config.learners.cpus_per_learner();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if wanted > cores {
        anyhow::bail!(
            "the EnvRunner and Learner actors ask for {wanted} CPUs but this machine has {cores}, \
             and the embedded cluster cannot grow: lower env_runners.num_env_runners, \
             env_runners.num_cpus_per_env_runner, evaluation.num_env_runners, \
             learners.num_learners or learners.num_cpus_per_learner, or run on a cluster \
             (`oxray start`, then --address)"
        );
    }
    Ok(())
}

/// A progress bar on a terminal, one plain line per iteration otherwise.
enum Progress {
    Bar(ProgressBar),
    Lines,
}

impl Progress {
    fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            Progress::Bar(bar)
        } else {
            Progress::Lines
        }
    }

    fn report(&mut self, result: &Metrics) {
        let line = format!(
            "iter {:>4}  env steps {:>9}  return mean {:>8}  {:>7.0} steps/s  {:>6.1} s",
            result[metrics::TRAINING_ITERATION],
            result[metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME],
            format_return(result),
            result[metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME] / result[metrics::TIME_TOTAL_S],
            result[metrics::TIME_TOTAL_S],
        );
        match self {
            Progress::Bar(bar) => {
                bar.set_message(line);
                bar.tick();
            }
            Progress::Lines => say(format_args!("{line}")),
        }
    }

    /// A warning on its own line, above the progress bar if there is one.
    fn warn(&self, warning: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| eprintln!("warning: {warning}")),
            Progress::Lines => eprintln!("warning: {warning}"),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}

/// Prints a line to stdout. A closed pipe (`oxray train ... | head`) is no
/// reason to stop training or to die with a panic.
pub(super) fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn format_return(result: &Metrics) -> String {
    result
        .get(metrics::EPISODE_RETURN_MEAN)
        .map_or("-".into(), |r| format!("{r:.1}"))
}
