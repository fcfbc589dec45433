//! One training run: build the algorithm, lay out its run directory, iterate
//! until a stop criterion is met, log every result, checkpoint on schedule and
//! at the end. A trial of a search also follows its scheduler ([`Schedule`]):
//! it stops early, saves a checkpoint for other trials, or goes on from
//! another trial's checkpoint with another config (PBT's exploit step,
//! which rebuilds the algorithm from that config and restores the
//! checkpoint into it, as a resume does).
//!
//! Layout of `results/<name>/<timestamp>/`: `params.yaml` (the resolved
//! config; after a resume with another one, the earlier config stays as
//! `params_<its last iteration>.yaml`), `progress.csv`, `result.json`, TensorBoard event files (results,
//! the config as HParams and text, histograms every
//! `reporting.histogram_frequency` iterations) and `checkpoints/`. Iterations
//! that `evaluation.interval` selects carry the `evaluation/` results too. Losing the
//! result files mid-run (disk full, directory removed) is a warning, not the
//! end of the training. The algorithm is built (env made, actors started) before
//! the directory is created, and a fresh directory is removed again if the run
//! fails before its first iteration, so a bad config never leaves something
//! that looks like a run behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oxray_rl::checkpoint;
use oxray_rl::loggers::{ResultLoggers, ResultsLost};
use oxray_rl::metrics::{self, Metrics};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::build;
use crate::checkpoint_retention::Retention;
use crate::config::{ExperimentConfig, StopConfig};
use crate::evaluation::Evaluator;
use crate::trial_scheduler::{Decision, Exploit};

pub struct RunOptions {
    pub config: ExperimentConfig,
    /// `results/<name>/...`
    pub name: String,
    pub results_dir: PathBuf,
    /// Continue this run directory from its latest checkpoint.
    pub resume: Option<PathBuf>,
}

/// What a run reports while it trains.
pub enum RunEvent<'a> {
    /// One iteration's result.
    Result(&'a Metrics),
    /// Something the user should know that does not stop the run.
    Warning(String),
    /// The run went on from another trial's checkpoint (PBT's exploit).
    Exploited(&'a Exploit),
}

/// Decides after each result whether a run goes on (a search's trial
/// scheduler, [`crate::trial_scheduler`]), and hears of the checkpoints it
/// asked for.
pub trait Schedule {
    /// Called after the run's own stop criteria, which come first.
    fn on_result(&mut self, result: &Metrics) -> Decision;
    /// The checkpoint [`Decision::Checkpoint`] asked for, saved by a run
    /// training with `config`.
    fn on_checkpoint(&mut self, checkpoint: &Path, config: &ExperimentConfig);
}

impl<S: Schedule + ?Sized> Schedule for &mut S {
    fn on_result(&mut self, result: &Metrics) -> Decision {
        (**self).on_result(result)
    }

    fn on_checkpoint(&mut self, checkpoint: &Path, config: &ExperimentConfig) {
        (**self).on_checkpoint(checkpoint, config)
    }
}

/// A run that only its own stop criteria end.
struct Unscheduled;

impl Schedule for Unscheduled {
    fn on_result(&mut self, _: &Metrics) -> Decision {
        Decision::Continue
    }

    fn on_checkpoint(&mut self, _: &Path, _: &ExperimentConfig) {}
}

#[derive(Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub stop_reason: String,
    pub last_result: Metrics,
    pub checkpoint: Option<PathBuf>,
    pub learner_devices: Vec<String>,
}

/// Trains until a stop criterion holds; `on_event` sees every iteration's
/// result (for progress display) and every warning.
pub fn run(
    options: RunOptions,
    on_event: impl FnMut(RunEvent<'_>),
) -> Result<RunSummary, TrainError> {
    run_scheduled(options, Unscheduled, on_event)
}

/// [`run`], also doing what `schedule` decides after each result.
pub fn run_scheduled(
    options: RunOptions,
    mut schedule: impl Schedule,
    mut on_event: impl FnMut(RunEvent<'_>),
) -> Result<RunSummary, TrainError> {
    let mut config = options.config;
    let mut algorithm = build(&config)?;
    let mut evaluation = Evaluator::new(&config)?;
    let (run_dir, fresh) = match &options.resume {
        Some(dir) => {
            let latest = checkpoint::load(&dir.join("checkpoints"))?;
            check_restorable(&latest, &config, dir)?;
            algorithm.restore(&latest)?;
            if let Some(finished) = already_stopped(dir, &config.stop, &*algorithm)? {
                return Ok(finished);
            }
            (dir.clone(), false)
        }
        None => (create_run_dir(&options.results_dir, &options.name)?, true),
    };
    loop {
        let outcome = train(
            algorithm.as_mut(),
            evaluation.as_mut(),
            &config,
            &run_dir,
            &mut schedule,
            &mut on_event,
        );
        let diverged = matches!(outcome, Err(TrainError::Diverged { .. }));
        if fresh && outcome.is_err() && !diverged && algorithm.iteration() == 0 {
            let _ = fs::remove_dir_all(&run_dir);
        }
        let exploit = match outcome? {
            Trained::Stopped(summary) => return Ok(summary),
            Trained::Exploit(exploit) => exploit,
        };
        // The donor goes on saving; a checkpoint its retention removed in
        // the meantime leaves this run as it was.
        let donor = match checkpoint::load(&exploit.checkpoint) {
            Ok(donor) => donor,
            Err(error) => {
                on_event(RunEvent::Warning(format!(
                    "not cloning {}: {error}; going on as before",
                    exploit.checkpoint.display()
                )));
                continue;
            }
        };
        check_restorable(&donor, &exploit.config, &exploit.checkpoint)?;
        // The config that trained until now stays, named after its last
        // iteration (the restored algorithm counts from the donor's).
        keep_earlier_params(
            &run_dir.join("params.yaml"),
            &exploit.config.to_yaml(),
            algorithm.iteration(),
        )?;
        // The old algorithm's actors go first: the new one may need their
        // CPUs.
        drop(evaluation);
        drop(algorithm);
        algorithm = build(&exploit.config)?;
        algorithm.restore(&donor)?;
        evaluation = Evaluator::new(&exploit.config)?;
        on_event(RunEvent::Exploited(&exploit));
        config = *exploit.config;
    }
}

/// How [`train`] ended: at a stop, or to go on from another checkpoint.
enum Trained {
    Stopped(RunSummary),
    Exploit(Exploit),
}

/// Refuses a checkpoint of another algorithm or network than `config`'s.
fn check_restorable(
    checkpoint: &checkpoint::Checkpoint,
    config: &ExperimentConfig,
    dir: &Path,
) -> Result<(), TrainError> {
    let expected = config.algorithm.as_str();
    if checkpoint.algorithm != expected {
        return Err(TrainError::Restore(format!(
            "{} holds a {} checkpoint, the config trains {expected}",
            dir.display(),
            checkpoint.algorithm
        )));
    }
    check_same_module(checkpoint, config, dir)
}

fn train(
    algorithm: &mut dyn Algorithm,
    mut evaluation: Option<&mut Evaluator>,
    config: &ExperimentConfig,
    run_dir: &Path,
    schedule: &mut impl Schedule,
    mut on_event: impl FnMut(RunEvent<'_>),
) -> Result<Trained, TrainError> {
    let params = run_dir.join("params.yaml");
    let yaml = config.to_yaml();
    keep_earlier_params(&params, &yaml, algorithm.iteration())?;
    fs::write(&params, &yaml).map_err(|error| TrainError::Io {
        path: params,
        error,
    })?;
    let mut loggers = ResultLoggers::open(run_dir)?;
    let config_json = serde_json::to_value(config).expect("configs serialize");
    warn_if_lost(&mut on_event, loggers.log_config(&config_json, &yaml));
    let checkpoints = run_dir.join("checkpoints");
    let frequency = config.checkpoint.checkpoint_frequency;
    let mut retention = Retention::open(&config.checkpoint, run_dir);
    // Saves a checkpoint of `algorithm` as it is now, whose iteration gave
    // `result`, and lets retention remove what falls out.
    let mut save = |algorithm: &dyn Algorithm,
                    result: Option<&Metrics>,
                    on_event: &mut dyn FnMut(RunEvent<'_>)|
     -> Result<PathBuf, TrainError> {
        let path = algorithm.save(&checkpoints)?;
        if let Err(not_removed) = retention.saved(&path, algorithm.iteration(), result) {
            on_event(RunEvent::Warning(not_removed.to_string()));
        }
        Ok(path)
    };
    let mut last_checkpoint: Option<(u64, PathBuf)> = None;
    let (stop_reason, last_result) = loop {
        let mut result = match algorithm.train() {
            Ok(result) => result,
            Err(error @ TrainError::NonFiniteLoss { .. }) => {
                // The algorithm is back at the last good iteration; a
                // checkpoint of it saved on schedule is kept, not rewritten.
                let checkpoint = match last_checkpoint {
                    Some((at, path)) if at == algorithm.iteration() => path,
                    _ => save(&*algorithm, None, &mut on_event)?,
                };
                return Err(TrainError::Diverged {
                    checkpoint,
                    cause: Box::new(error),
                });
            }
            Err(error) => return Err(error),
        };
        let iteration = algorithm.iteration();
        if let Some(evaluation) = evaluation.as_deref_mut().filter(|e| e.due(iteration)) {
            evaluation.evaluate(algorithm, &mut result)?;
        }
        warn_if_lost(&mut on_event, loggers.log(&result));
        if config.reporting.histograms_due(iteration) {
            let histograms = algorithm.histograms()?;
            warn_if_lost(&mut on_event, loggers.log_histograms(&result, &histograms));
        }
        on_event(RunEvent::Result(&result));
        if iteration.checked_rem(frequency) == Some(0) {
            last_checkpoint = Some((iteration, save(&*algorithm, Some(&result), &mut on_event)?));
        }
        let decision = match stop_reason(&config.stop, &result) {
            Some(reason) => Decision::Stop(reason),
            None => schedule.on_result(&result),
        };
        match decision {
            Decision::Continue => {}
            Decision::Stop(reason) => break (reason, result),
            Decision::Checkpoint => {
                let path = match &last_checkpoint {
                    Some((at, path)) if *at == iteration => path.clone(),
                    _ => {
                        let path = save(&*algorithm, Some(&result), &mut on_event)?;
                        last_checkpoint = Some((iteration, path.clone()));
                        path
                    }
                };
                schedule.on_checkpoint(&path, config);
            }
            Decision::Exploit(exploit) => return Ok(Trained::Exploit(exploit)),
        }
    };
    let iteration = algorithm.iteration();
    let checkpoint = match last_checkpoint {
        Some((at, path)) if at == iteration => Some(path),
        _ if config.checkpoint.checkpoint_at_end => {
            Some(save(&*algorithm, Some(&last_result), &mut on_event)?)
        }
        other => other.map(|(_, path)| path),
    };
    Ok(Trained::Stopped(RunSummary {
        run_dir: run_dir.to_path_buf(),
        stop_reason,
        last_result,
        checkpoint,
        learner_devices: algorithm.learner_devices()?,
    }))
}

/// Training goes on without its result files; the user hears of it once.
fn warn_if_lost(on_event: &mut impl FnMut(RunEvent<'_>), logged: Result<(), ResultsLost>) {
    if let Err(lost) = logged {
        on_event(RunEvent::Warning(lost.to_string()));
    }
}

/// The first stop criterion `result` meets, described; RLlib's semantics.
pub fn stop_reason(stop: &StopConfig, result: &Metrics) -> Option<String> {
    let value = |key: &str| result.get(key).copied();
    let reached = |key: &str, target: Option<f64>| match (value(key), target) {
        (Some(v), Some(t)) if v >= t => {
            Some(format!("{key} {} >= {t}", (v * 100.0).round() / 100.0))
        }
        _ => None,
    };
    reached(metrics::EPISODE_RETURN_MEAN, stop.episode_return_mean)
        .or_else(|| {
            reached(
                metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME,
                stop.env_steps.map(|s| s as f64),
            )
        })
        .or_else(|| {
            reached(
                metrics::TRAINING_ITERATION,
                stop.iterations.map(|i| i as f64),
            )
        })
        .or_else(|| reached(metrics::TIME_TOTAL_S, stop.time_s))
        .or_else(|| {
            reached(
                crate::evaluation::EPISODE_RETURN_MEAN,
                stop.evaluation_return_mean,
            )
        })
}

/// Refuses a resume whose config builds another network than the one the
/// checkpoint holds (other layers, head or atoms): its weights would not
/// load, and libtorch's own error names only a tensor's shape.
fn check_same_module(
    checkpoint: &checkpoint::Checkpoint,
    config: &ExperimentConfig,
    dir: &Path,
) -> Result<(), TrainError> {
    let saved = ExperimentConfig::of_checkpoint(checkpoint)?;
    if same_network(&saved, config)? {
        return Ok(());
    }
    Err(TrainError::Restore(format!(
        "{} was trained with another network (model: or the training keys that shape it); \
         resume with the config it was saved with, {}",
        dir.display(),
        dir.join("params.yaml").display()
    )))
}

/// Whether two configs build networks with the same parameters (names and
/// shapes), so that weights saved by one load into the other: settings
/// that shape no parameter (an ε schedule, say) may differ.
pub fn same_network(a: &ExperimentConfig, b: &ExperimentConfig) -> Result<bool, TrainError> {
    let parameters = |config: &ExperimentConfig| -> Result<Vec<(String, Vec<i64>)>, TrainError> {
        let module = crate::algorithms::module_spec(config)?.build(tch::Device::Cpu);
        let mut shapes: Vec<_> = module
            .var_store()
            .variables()
            .into_iter()
            .map(|(name, tensor)| (name, tensor.size()))
            .collect();
        shapes.sort();
        Ok(shapes)
    };
    Ok(parameters(a)? == parameters(b)?)
}

/// A resume with another config than the run's keeps the one its earlier
/// iterations ran with, as `params_<last iteration it governed>.yaml`
/// (`_1`, `_2`, ... after it when a resume at that iteration kept one
/// already), instead of writing over it.
fn keep_earlier_params(params: &Path, yaml: &str, iteration: u64) -> Result<(), TrainError> {
    match fs::read_to_string(params) {
        Ok(earlier) if earlier != yaml => {
            let dir = params.parent().unwrap_or(Path::new("."));
            let kept = (0u32..)
                .map(|n| match n {
                    0 => dir.join(format!("params_{iteration:06}.yaml")),
                    n => dir.join(format!("params_{iteration:06}_{n}.yaml")),
                })
                .find(|candidate| !candidate.exists())
                .expect("an unused name");
            fs::rename(params, &kept).map_err(|error| TrainError::Io { path: kept, error })
        }
        _ => Ok(()),
    }
}

/// A resumed run whose checkpoint is at an iteration that already met a stop
/// criterion of `stop` has nothing to train (a finished Tune trial is not
/// run again): its summary, from the result `result.json` logged for that
/// iteration. Stop criteria raised since (`--set stop.iterations=…`) let
/// it go on.
fn already_stopped(
    run_dir: &Path,
    stop: &StopConfig,
    algorithm: &dyn Algorithm,
) -> Result<Option<RunSummary>, TrainError> {
    let iteration = algorithm.iteration() as f64;
    let Ok(logged) = fs::read_to_string(run_dir.join(oxray_rl::loggers::json::FILE_NAME)) else {
        return Ok(None);
    };
    let Some(result) = logged.lines().rev().find_map(|line| {
        let result: Metrics = serde_json::from_str(line).ok()?;
        (result.get(metrics::TRAINING_ITERATION) == Some(&iteration)).then_some(result)
    }) else {
        return Ok(None);
    };
    let Some(reason) = stop_reason(stop, &result) else {
        return Ok(None);
    };
    let checkpoints = run_dir.join("checkpoints");
    let checkpoint = fs::read_link(checkpoints.join(checkpoint::LATEST))
        .ok()
        .map(|name| checkpoints.join(name));
    Ok(Some(RunSummary {
        run_dir: run_dir.to_path_buf(),
        stop_reason: format!("{reason} (before this resume: nothing left to train)"),
        last_result: result,
        checkpoint,
        learner_devices: algorithm.learner_devices()?,
    }))
}

/// The newest run of experiment `name` under `results_dir` that holds a
/// checkpoint: what `oxray train --resume auto` continues (Tune's
/// `resume="AUTO"`). Run directories are named by their start time
/// ([`create_run_dir`]), so the newest sorts last.
pub fn latest_run(results_dir: &Path, name: &str) -> Option<PathBuf> {
    fs::read_dir(results_dir.join(name))
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|run| run.join("checkpoints").join(checkpoint::LATEST).exists())
        .max_by(|a, b| a.file_name().cmp(&b.file_name()))
}

/// `results/<name>/<UTC timestamp>`, made unique with a suffix if needed.
fn create_run_dir(results_dir: &Path, name: &str) -> Result<PathBuf, TrainError> {
    let parent = results_dir.join(name);
    fs::create_dir_all(&parent).map_err(|error| TrainError::Io {
        path: parent.clone(),
        error,
    })?;
    let stamp = utc_timestamp();
    for attempt in 0u32.. {
        let dir = match attempt {
            0 => parent.join(&stamp),
            n => parent.join(format!("{stamp}_{n}")),
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(TrainError::Io { path: dir, error }),
        }
    }
    unreachable!("u32 attempts exhausted")
}

/// `YYYY-MM-DD_HH-MM-SS` in UTC (days to civil date after Howard Hinnant).
fn utc_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}_{:02}-{:02}-{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
