//! `oxray train`: run an experiment config to its stop criterion, showing
//! progress, and print where the run directory is; a config with a search
//! space (`grid_search`, `choice`, `uniform`, ...) runs each of its trials
//! ([`oxray_trainers::search_space`]), which `--scheduler` may stop early
//! (ASHA) or make clone each other with perturbed hyperparameters (PBT)
//! ([`oxray_trainers::trial_scheduler`]).
//!
//! The embedded single-node cluster is started only when the config asks for
//! remote EnvRunners or Learners (or `--address` names a cluster): a config
//! that samples and learns in the driver needs no worker processes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oxray_rl::metrics::{self, Metrics, ProgressSteps};
use oxray_trainers::run::{self, run_scheduled, RunEvent, RunOptions, RunSummary, Schedule};
use oxray_trainers::search_space::{self, Sampling, Trial};
use oxray_trainers::trial_scheduler::{Decision, SchedulerConfig, TrialScheduler};
use oxray_trainers::ExperimentConfig;

use super::interrupt;

/// Where runs go: `results/NAME/<timestamp>/`, relative to the working
/// directory as Tune's `storage_path` default is to the home directory.
const RESULTS_DIR: &str = "results";

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (YAML), e.g. configs/ppo-cartpole.yaml; with
    /// --resume and no config, the run's own params.yaml.
    #[arg(required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set training.lr=1e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Results go to results/NAME/<timestamp>/ [default: the config file's name].
    #[arg(long)]
    name: Option<String>,
    /// Continue the run in RUN_DIR from its latest checkpoint (as Tune's
    /// `Tuner.restore`), with CONFIG if given, else the config it ran with.
    /// `auto` (Tune's `resume="AUTO"`): continue the newest run of CONFIG's
    /// experiment, each trial's for a search, or start one where there is
    /// none; what a job requeued after a time limit runs.
    #[arg(long, value_name = "RUN_DIR|auto")]
    resume: Option<PathBuf>,
    /// Join the cluster whose head listens at ADDR instead of starting one
    /// (default: `OXRAY_ADDRESS` if set).
    #[arg(long, value_name = "ADDR")]
    address: Option<String>,
    #[command(flatten)]
    token: super::cluster::TokenArgs,
    /// Never ship this executable to nodes through the head: every node must
    /// have it at the same path (a shared file system).
    #[arg(long)]
    no_ship: bool,
    /// Ship this directory to every node: the run's workers start in a copy
    /// of it, with it first on PYTHONPATH, so Python envs and files in it are
    /// found everywhere (Ray's runtime_env working_dir); the driver imports
    /// Python modules from it too.
    #[arg(long, value_name = "DIR")]
    working_dir: Option<PathBuf>,
    /// Set a variable in every worker of this run, on every node
    /// (repeatable; Ray's runtime_env env_vars).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Leave these paths of --working-dir out of its copy (repeatable; Ray's
    /// runtime_env excludes, gitignore patterns, on top of the directory's
    /// .gitignore files): a name anywhere (`.git`, `*.ckpt`) or, with a
    /// `/`, a path from the directory (`/results`).
    #[arg(long = "exclude", value_name = "PATTERN", requires = "working_dir")]
    exclude: Vec<String>,
    /// Repeat the search space this many times, drawing new values for its
    /// distributions each time (Ray Tune's `num_samples`).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    num_samples: u32,
    /// Seed of the search space's draws: the same seed draws the same trials.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    search_seed: u64,
    /// Trials of a search that train at once, each in a thread of this
    /// driver with actors of its own (Ray Tune's `max_concurrent_trials`).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_trials: u16,
    /// Schedule a search's trials: `asha` (Ray Tune's ASHAScheduler, which
    /// stops trials that fall behind, ranking by
    /// env_runners/episode_return_mean every training_iteration) or a
    /// mapping such as `{type: asha, grace_period: 1, max_t: 100,
    /// reduction_factor: 4}` or `{type: pbt, perturbation_interval: 5,
    /// hyperparam_mutations: {training.lr: {loguniform: [1e-5, 1e-3]}}}`
    /// (Tune's PopulationBasedTraining: trials that fall behind go on from
    /// a better one's checkpoint with perturbed hyperparameters).
    #[arg(long, value_name = "SCHEDULER")]
    scheduler: Option<String>,
}

pub fn run_train(mut args: TrainArgs) -> anyhow::Result<()> {
    let resume_latest = args
        .resume
        .take_if(|dir| dir.as_os_str().eq_ignore_ascii_case("auto"))
        .is_some();
    if resume_latest && args.config.is_none() {
        anyhow::bail!(
            "--resume auto continues the newest run of CONFIG's experiment: pass CONFIG \
             (or --resume RUN_DIR)"
        );
    }
    let config_path = match (&args.config, &args.resume) {
        (Some(config), _) => config.clone(),
        (None, Some(run_dir)) => run_dir.join("params.yaml"),
        (None, None) => unreachable!("clap requires CONFIG without --resume"),
    };
    let sampling = Sampling {
        num_samples: args.num_samples as usize,
        seed: args.search_seed,
    };
    let scheduler = args
        .scheduler
        .as_deref()
        .map(SchedulerConfig::parse)
        .transpose()?;
    let trials = search_space::load(&config_path, &args.set, sampling)?;
    let population = matches!(scheduler, Some(SchedulerConfig::Pbt(_)));
    let scheduler = scheduler
        .map(|config| {
            let configs: Vec<&ExperimentConfig> = trials.iter().map(|t| &t.config).collect();
            TrialScheduler::new(config, &configs, args.search_seed)
        })
        .transpose()?
        .map(Mutex::new);
    if population && usize::from(args.max_concurrent_trials) < trials.len() {
        eprintln!(
            "warning: population based training ranks the trials that train at the same \
             time: with --max-concurrent-trials {} of {} trials, a trial is compared only \
             with those beside it (--max-concurrent-trials {} trains them all at once)",
            args.max_concurrent_trials,
            trials.len(),
            trials.len()
        );
    }
    if trials.len() > 1 && args.resume.is_some() {
        anyhow::bail!(
            "--resume continues one run, and this is a search of {} trials: \
             resume each trial's run on its own (`oxray train --resume RUN_DIR`)",
            trials.len()
        );
    }
    let name = args.name.unwrap_or_else(|| {
        config_path
            .file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned())
    });
    // Inside `oxray symmetric-run` or an sbatch job the cluster is in the
    // environment.
    let address = args.address.or_else(|| std::env::var("OXRAY_ADDRESS").ok());
    if address.is_none() {
        for trial in trials.iter().filter(|trial| uses_actors(&trial.config)) {
            check_actors_fit_cores(&trial.config)?;
        }
    }
    let hosts_cluster = trials.iter().any(|trial| uses_actors(&trial.config));
    let runtime_env = runtime_env(args.working_dir.as_deref(), &args.env, &args.exclude)?;
    if hosts_cluster || address.is_some() {
        let mut options = oxray_core::InitOptions::default();
        if let Some(runtime_env) = runtime_env {
            options = options.runtime_env(runtime_env);
        }
        if args.no_ship {
            options = options.ship_executable(oxray_core::ShipExecutable::Never);
        }
        if let Some(address) = &address {
            options = options.address(address);
        }
        if let Some(token) = args.token.given()? {
            options = options.token(token);
        }
        oxray_core::init(options)?;
    }
    let scheduler = scheduler.as_ref();
    interrupt::install().context("cannot install the Ctrl-C and SIGUSR1 handlers")?;
    let search = trials.len() > 1;
    let outcome = match <[Trial; 1]>::try_from(trials) {
        Ok([trial]) => train_one(
            trial.config,
            args.resume
                .or_else(|| resume_latest.then(|| latest_run(&name, "")).flatten()),
            name,
            Progress::new(),
            scheduler.map(|s| (s, 0)),
            None,
        )
        .map(|summary| {
            print_run(&summary, "");
            interrupted_runs([&summary])
        }),
        Err(trials) => train_trials(
            trials,
            &name,
            usize::from(args.max_concurrent_trials),
            scheduler,
            resume_latest,
        ),
    };
    if hosts_cluster || address.is_some() {
        oxray_core::shutdown();
    }
    match outcome?.as_slice() {
        [] => Ok(()),
        // One run continues from its directory; a search as a whole, each
        // trial from its own newest run.
        [run_dir] if !search => Err(interrupt::Interrupted::new(format!(
            "oxray train --resume {}",
            shell_word(run_dir)
        ))
        .into()),
        _ => Err(interrupt::Interrupted::new(this_command_resuming_latest()).into()),
    }
}

/// This `oxray train` command line with `--resume auto` in place of any
/// `--resume`.
fn this_command_resuming_latest() -> String {
    let mut words = vec!["oxray".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--resume" {
            args.next();
        } else if !arg.starts_with("--resume=") {
            words.push(shell_word(&arg));
        }
    }
    words.push("--resume auto".to_string());
    words.join(" ")
}

/// `word` as a shell reads it back: quoted when it holds anything but
/// letters, digits and `-_./=:,+@%`.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The newest run of experiment `name` with a checkpoint, for `--resume
/// auto`, said either way (lines prefixed with `prefix`).
fn latest_run(name: &str, prefix: &str) -> Option<PathBuf> {
    let latest = run::latest_run(Path::new(RESULTS_DIR), name);
    match &latest {
        Some(run) => say(format_args!(
            "{prefix}resuming {} (the newest run of {name})",
            run.display()
        )),
        None => say(format_args!(
            "{prefix}no run of {name} to resume in {RESULTS_DIR}/: starting one"
        )),
    }
    latest
}

/// The run directories of the runs that Ctrl-C or SIGUSR1 cut short.
fn interrupted_runs<'a>(summaries: impl IntoIterator<Item = &'a RunSummary>) -> Vec<String> {
    summaries
        .into_iter()
        .filter(|summary| interrupt::is_interruption(&summary.stop_reason))
        .map(|summary| summary.run_dir.display().to_string())
        .collect()
}

/// The runtime env of `--working-dir` and `--env`, if either is given. The
/// driver builds the env too (to read its spaces), so the directory also goes
/// first on this process's PYTHONPATH, before its interpreter starts.
fn runtime_env(
    working_dir: Option<&std::path::Path>,
    env: &[String],
    excludes: &[String],
) -> anyhow::Result<Option<oxray_core::RuntimeEnv>> {
    if working_dir.is_none() && env.is_empty() {
        return Ok(None);
    }
    let mut runtime_env = oxray_core::RuntimeEnv {
        env_vars: super::job::parse_env_vars(env)?,
        excludes: excludes.to_vec(),
        ..Default::default()
    };
    if let Some(dir) = working_dir {
        let dir =
            std::path::absolute(dir).with_context(|| format!("--working-dir {}", dir.display()))?;
        if !dir.is_dir() {
            anyhow::bail!("--working-dir {}: not a directory", dir.display());
        }
        std::env::set_var("PYTHONPATH", oxray_core::python_path_with(&dir)?);
        runtime_env.working_dir = Some(dir);
    }
    Ok(Some(runtime_env))
}

fn uses_actors(config: &ExperimentConfig) -> bool {
    config.env_runners.num_env_runners > 0
        || config.evaluation.num_env_runners > 0
        || config.learners.num_learners > 0
}

/// Trains one config to its stop criterion, or until Ctrl-C or `scheduler`
/// stops it (this trial's number beside it), showing progress with
/// `progress`. `perturbed` keeps the values PBT last gave the trial, in
/// the form of a tag.
fn train_one(
    config: ExperimentConfig,
    resume: Option<PathBuf>,
    name: String,
    mut progress: Progress,
    scheduler: Option<(&Mutex<TrialScheduler>, usize)>,
    perturbed: Option<&Mutex<Option<String>>>,
) -> anyhow::Result<RunSummary> {
    let outcome = run_scheduled(
        RunOptions {
            config,
            name,
            results_dir: PathBuf::from(RESULTS_DIR),
            resume,
        },
        TrialSchedule { scheduler },
        |event| match event {
            RunEvent::Result(result) => progress.report(result),
            RunEvent::Warning(warning) => progress.warn(&warning),
            RunEvent::Exploited(exploit) => {
                progress.note(&exploit.description);
                if let Some(perturbed) = perturbed {
                    *perturbed.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(exploit.tag.clone());
                }
            }
        },
    );
    progress.finish();
    Ok(outcome?)
}

/// A run's schedule in `oxray train`: a stop signal first, then the
/// search's scheduler, if any.
struct TrialSchedule<'a> {
    scheduler: Option<(&'a Mutex<TrialScheduler>, usize)>,
}

impl TrialSchedule<'_> {
    fn scheduler(&self) -> Option<(std::sync::MutexGuard<'_, TrialScheduler>, usize)> {
        let (scheduler, trial) = self.scheduler?;
        Some((
            scheduler.lock().unwrap_or_else(PoisonError::into_inner),
            trial,
        ))
    }
}

impl Schedule for TrialSchedule<'_> {
    fn on_result(&mut self, result: &Metrics) -> Decision {
        if let Some(reason) = interrupt::requested() {
            return Decision::Stop(reason.to_string());
        }
        match self.scheduler() {
            Some((mut scheduler, trial)) => scheduler.on_result(trial, result),
            None => Decision::Continue,
        }
    }

    fn on_checkpoint(&mut self, checkpoint: &Path, config: &ExperimentConfig) {
        if let Some((mut scheduler, trial)) = self.scheduler() {
            scheduler.on_checkpoint(trial, checkpoint, config);
        }
    }
}

/// Trains a search's trials, `max_concurrent` at a time in threads of
/// their own, each into `results/NAME/<index>_<tag>/<timestamp>/`; a trial
/// that fails is reported and the others still run (as in Ray Tune), then
/// a table of all of them, the best by its final mean return (Tune's
/// `get_best_result`), and an error if any failed. Trials that run at
/// once prefix their lines with `[trial N]`. After Ctrl-C or SIGUSR1 no
/// trial starts; gives the run directories of those it cut short.
fn train_trials(
    trials: Vec<Trial>,
    name: &str,
    max_concurrent: usize,
    scheduler: Option<&Mutex<TrialScheduler>>,
    resume_latest: bool,
) -> anyhow::Result<Vec<String>> {
    let count = trials.len();
    let concurrent = max_concurrent.min(count);
    let next_trial = AtomicUsize::new(0);
    let outcomes: Vec<Mutex<Option<anyhow::Result<RunSummary>>>> =
        (0..count).map(|_| Mutex::new(None)).collect();
    let perturbed: Vec<Mutex<Option<String>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let train_next = || loop {
        if interrupt::requested().is_some() {
            break;
        }
        let index = next_trial.fetch_add(1, Ordering::Relaxed);
        let Some(trial) = trials.get(index) else {
            break;
        };
        let prefix = if concurrent > 1 {
            format!("[trial {index}] ")
        } else {
            String::new()
        };
        let progress = if prefix.is_empty() {
            Progress::new()
        } else {
            Progress::prefixed(prefix.clone())
        };
        say(format_args!(
            "{prefix}trial {}/{count}: {}",
            index + 1,
            trial.tag
        ));
        let run_name = match trial.tag.as_str() {
            "" => format!("{name}/{index}"),
            tag => format!("{name}/{index}_{tag}"),
        };
        let resume = resume_latest
            .then(|| latest_run(&run_name, &prefix))
            .flatten();
        let outcome =
            resumed_config(&trial.config, resume.as_deref(), scheduler).and_then(|config| {
                train_one(
                    config,
                    resume,
                    run_name,
                    progress,
                    scheduler.map(|s| (s, index)),
                    Some(&perturbed[index]),
                )
            });
        if let Some(scheduler) = scheduler {
            scheduler
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .on_trial_complete(index);
        }
        match &outcome {
            Ok(summary) => print_run(summary, &prefix),
            Err(error) => eprintln!("error: trial {}: {error:#}", trial.tag),
        }
        *outcomes[index].lock().expect("no trial thread panics") = Some(outcome);
    };
    if concurrent > 1 {
        std::thread::scope(|scope| {
            for _ in 0..concurrent {
                std::thread::Builder::new()
                    .name("oxray-trial".into())
                    // The main thread's stack size: libtorch runs here.
                    .stack_size(8 << 20)
                    .spawn_scoped(scope, train_next)
                    .expect("spawn a trial thread");
            }
        });
    } else {
        train_next();
    }
    let outcomes: Vec<Option<anyhow::Result<RunSummary>>> = outcomes
        .into_iter()
        .map(|outcome| outcome.into_inner().expect("no trial thread panics"))
        .collect();
    // A trial PBT changed shows its latest values, as Tune's experiment
    // tags do (`lr=0.001@perturbed[lr=0.0012]`).
    let tags: Vec<String> = trials
        .iter()
        .zip(perturbed)
        .map(|(trial, perturbed)| {
            match perturbed
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
            {
                Some(values) => format!("{}@perturbed[{values}]", trial.tag),
                None => trial.tag.clone(),
            }
        })
        .collect();
    print_trials(&tags, &outcomes);
    let failed = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Some(Err(_))))
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {count} trials failed (their errors are above)");
    }
    Ok(interrupted_runs(outcomes.iter().flatten().flatten()))
}

/// The config a trial of a search trains with: its own, or, resuming
/// `run_dir` under a scheduler that changes configs (PBT), what the
/// scheduler keeps of the config that run last trained with.
fn resumed_config(
    trial: &ExperimentConfig,
    run_dir: Option<&Path>,
    scheduler: Option<&Mutex<TrialScheduler>>,
) -> anyhow::Result<ExperimentConfig> {
    let (Some(run_dir), Some(scheduler)) = (run_dir, scheduler) else {
        return Ok(trial.clone());
    };
    let params = run_dir.join("params.yaml");
    let source = std::fs::read_to_string(&params)
        .with_context(|| format!("cannot read {}", params.display()))?;
    let run = ExperimentConfig::parse(&source, &params.display().to_string(), &[])?;
    Ok(scheduler
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .resumed_config(trial, &run))
}

/// The trials' status table, as Tune prints it (a trial that never started
/// is `PENDING`), and the best trial by its final mean return.
fn print_trials(tags: &[String], outcomes: &[Option<anyhow::Result<RunSummary>>]) {
    say(format_args!(
        "{:<4} {:<10} {:>6} {:>10} {:>8}  {}",
        "#", "status", "iter", "env steps", "return", "trial"
    ));
    for (index, (tag, outcome)) in tags.iter().zip(outcomes).enumerate() {
        match outcome {
            Some(Ok(summary)) => {
                let result = &summary.last_result;
                // Cut short by a stop signal: to be resumed, as Tune
                // leaves such trials paused.
                let status = if interrupt::is_interruption(&summary.stop_reason) {
                    "PAUSED"
                } else {
                    "TERMINATED"
                };
                say(format_args!(
                    "{index:<4} {:<10} {:>6} {:>10} {:>8}  {tag}  ({})",
                    status,
                    result[metrics::TRAINING_ITERATION],
                    result[metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME],
                    format_return(result),
                    summary.run_dir.display()
                ))
            }
            unfinished => say(format_args!(
                "{index:<4} {:<10} {:>6} {:>10} {:>8}  {tag}",
                if unfinished.is_some() {
                    "ERROR"
                } else {
                    "PENDING"
                },
                "-",
                "-",
                "-"
            )),
        }
    }
    let best = outcomes
        .iter()
        .enumerate()
        .filter_map(|(index, outcome)| {
            let summary = outcome.as_ref()?.as_ref().ok()?;
            Some((
                index,
                summary
                    .last_result
                    .get(metrics::EPISODE_RETURN_MEAN)
                    .copied()?,
            ))
        })
        .max_by(|(_, a), (_, b)| a.total_cmp(b));
    if let Some((index, best_return)) = best {
        say(format_args!(
            "best trial by {}: {index} ({}) with {best_return:.1}",
            metrics::EPISODE_RETURN_MEAN,
            tags[index]
        ));
    }
}

/// What a finished run prints: why it stopped, where its results are;
/// each line after `prefix`.
fn print_run(summary: &RunSummary, prefix: &str) {
    let result = &summary.last_result;
    let (reason, iterations) = (&summary.stop_reason, result[metrics::TRAINING_ITERATION]);
    let seconds = result[metrics::TIME_TOTAL_S];
    match ProgressSteps::of(result) {
        ProgressSteps::Sampled(steps) => say(format_args!(
            "{prefix}done: {reason} after {iterations} iterations, {steps} env steps, \
             {seconds:.1} s; return mean {}{}",
            format_return(result),
            format_evaluation(result),
        )),
        ProgressSteps::Trained(steps) => say(format_args!(
            "{prefix}done: {reason} after {iterations} iterations, {steps} recorded steps \
             trained, {seconds:.1} s{}",
            format_evaluation(result),
        )),
    }
    say(format_args!(
        "{prefix}learner device: {}",
        summary.learner_devices.join(", ")
    ));
    say(format_args!(
        "{prefix}run directory: {}",
        summary.run_dir.display()
    ));
    if let Some(checkpoint) = &summary.checkpoint {
        say(format_args!("{prefix}checkpoint: {}", checkpoint.display()));
    }
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

/// A progress bar on a terminal, one plain line per iteration otherwise
/// (after a prefix that tells trials running at once apart).
enum Progress {
    Bar(ProgressBar),
    Lines { prefix: String },
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
            Progress::prefixed(String::new())
        }
    }

    /// Plain lines after `prefix`, for one of several runs at once.
    fn prefixed(prefix: String) -> Self {
        Progress::Lines { prefix }
    }

    fn report(&mut self, result: &Metrics) {
        let seconds = result[metrics::TIME_TOTAL_S];
        let iteration = result[metrics::TRAINING_ITERATION];
        let line = match ProgressSteps::of(result) {
            ProgressSteps::Sampled(steps) => format!(
                "iter {iteration:>4}  env steps {steps:>9}  return mean {:>8}  {:>7.0} steps/s  \
                 {seconds:>6.1} s{}",
                format_return(result),
                steps / seconds,
                format_evaluation(result),
            ),
            // An offline algorithm samples nothing: what it trained on.
            ProgressSteps::Trained(steps) => format!(
                "iter {iteration:>4}  recorded steps trained {steps:>9}  {:>7.0} steps/s  \
                 {seconds:>6.1} s{}",
                steps / seconds,
                format_evaluation(result),
            ),
        };
        match self {
            Progress::Bar(bar) => {
                bar.set_message(line);
                bar.tick();
            }
            Progress::Lines { prefix } => say(format_args!("{prefix}{line}")),
        }
    }

    /// A warning on its own line, above the progress bar if there is one.
    fn warn(&self, warning: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| eprintln!("warning: {warning}")),
            Progress::Lines { prefix } => eprintln!("{prefix}warning: {warning}"),
        }
    }

    /// A line of news about the run, above the progress bar if there is
    /// one.
    fn note(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| say(format_args!("{line}"))),
            Progress::Lines { prefix } => say(format_args!("{prefix}{line}")),
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

/// The latest evaluation's mean return, after the training return, in an
/// iteration that evaluated (the only return BC has).
fn format_evaluation(result: &Metrics) -> String {
    result
        .get(oxray_trainers::evaluation::EPISODE_RETURN_MEAN)
        .map_or(String::new(), |r| {
            format!("  evaluation return mean {r:.1}")
        })
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_are_quoted_only_when_a_shell_would_split_or_expand_them() {
        assert_eq!(shell_word("results/s/0_lr=0.001"), "results/s/0_lr=0.001");
        assert_eq!(
            shell_word("model.fcnet_hiddens=[64, 64]"),
            "'model.fcnet_hiddens=[64, 64]'"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word(""), "''");
    }
}
