//! Trial schedulers (Ray Tune's `scheduler=`): `oxray train --scheduler`
//! hands every result of every trial of a search to one scheduler, which
//! says what the trial does next: go on, stop (ASHA), save a checkpoint
//! for other trials to clone, or go on from another trial's checkpoint with
//! perturbed hyperparameters (PBT).
//!
//! One scheduler serves all trials of a search, which train in threads of
//! one driver, so it sits behind a lock; its decisions depend on the order
//! results arrive in, as Tune's do when trials run at once.
//!
//! # Layout
//! - `asha`: early stopping by successive halving (`ASHAScheduler`),
//! - `pbt`: population based training (`PopulationBasedTraining`).

mod asha;
mod pbt;

use std::path::{Path, PathBuf};

use oxray_rl::metrics::Metrics;
use serde::Deserialize;

pub use asha::{Asha, AshaConfig};
pub use pbt::{Pbt, PbtConfig};

use crate::config::ExperimentConfig;

/// `--scheduler`: a scheduler's name (with Tune's defaults) or a YAML
/// mapping whose `type` names it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SchedulerConfig {
    Asha(AshaConfig),
    Pbt(PbtConfig),
}

/// A `--scheduler` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("--scheduler: {0}")]
    Parse(String),
    #[error("--scheduler: {key} {message}")]
    Range { key: &'static str, message: String },
    #[error("--scheduler: hyperparam_mutations: {key}: {message}")]
    Mutation { key: String, message: String },
    #[error(
        "--scheduler: population based training needs a population: a search of \
         at least two trials (--num-samples, a grid or a distribution), this one has {0}"
    )]
    NoPopulation(usize),
}

impl SchedulerConfig {
    /// Parses `--scheduler`'s value and checks its ranges.
    pub fn parse(value: &str) -> Result<SchedulerConfig, SchedulerError> {
        let config = match value.trim() {
            "asha" => SchedulerConfig::Asha(AshaConfig::default()),
            "pbt" => {
                return Err(SchedulerError::Parse(
                    "pbt needs hyperparam_mutations, the keys it perturbs: a mapping such as \
                     `{type: pbt, perturbation_interval: 5, hyperparam_mutations: \
                     {training.lr: {loguniform: [1.0e-5, 1.0e-3]}}}`"
                        .into(),
                ))
            }
            name if !name.starts_with('{') => {
                return Err(SchedulerError::Parse(format!(
                    "unknown scheduler `{name}` (known: asha, pbt; or a mapping such as \
                     `{{type: asha, grace_period: 10, max_t: 100}}`)"
                )))
            }
            mapping => serde_yaml_ng::from_str(mapping)
                .map_err(|e| SchedulerError::Parse(e.to_string()))?,
        };
        match &config {
            SchedulerConfig::Asha(asha) => asha.check()?,
            SchedulerConfig::Pbt(pbt) => pbt.check()?,
        }
        Ok(config)
    }
}

/// One search's scheduler.
#[derive(Debug)]
pub enum TrialScheduler {
    Asha(Asha),
    Pbt(Box<Pbt>),
}

impl TrialScheduler {
    /// The scheduler of a search whose trials start from `trials`; PBT
    /// refuses here, before any trial starts, a mutation that one of them
    /// cannot take. `seed` seeds PBT's choices (the search seed).
    pub fn new(
        config: SchedulerConfig,
        trials: &[&ExperimentConfig],
        seed: u64,
    ) -> Result<TrialScheduler, SchedulerError> {
        Ok(match config {
            SchedulerConfig::Asha(asha) => TrialScheduler::Asha(Asha::new(asha)),
            SchedulerConfig::Pbt(pbt) => {
                TrialScheduler::Pbt(Box::new(Pbt::new(pbt, trials, seed)?))
            }
        })
    }

    /// Records `trial`'s `result` and says what the trial does next.
    pub fn on_result(&mut self, trial: usize, result: &Metrics) -> Decision {
        match self {
            TrialScheduler::Asha(asha) => asha.on_result(trial, result),
            TrialScheduler::Pbt(pbt) => pbt.on_result(trial, result),
        }
    }

    /// `trial` saved `checkpoint`, as [`Decision::Checkpoint`] asked, while
    /// training with `config`.
    pub fn on_checkpoint(&mut self, trial: usize, checkpoint: &Path, config: &ExperimentConfig) {
        if let TrialScheduler::Pbt(pbt) = self {
            pbt.on_checkpoint(trial, checkpoint, config);
        }
    }

    /// The config `trial` resumes its run with, given the config that run
    /// last trained with (`params.yaml`): PBT's may have been cloned and
    /// explored, so PBT keeps it (with the search's `stop:`); ASHA changes
    /// no config.
    pub fn resumed_config(
        &self,
        trial: &ExperimentConfig,
        run: &ExperimentConfig,
    ) -> ExperimentConfig {
        match self {
            TrialScheduler::Asha(_) => trial.clone(),
            TrialScheduler::Pbt(pbt) => pbt.resumed_config(trial, run),
        }
    }

    /// `trial` stopped training (finished, stopped or failed).
    pub fn on_trial_complete(&mut self, trial: usize) {
        if let TrialScheduler::Pbt(pbt) = self {
            pbt.on_trial_complete(trial);
        }
    }
}

/// What a trial does after a result.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Continue,
    /// Stop, and why.
    Stop(String),
    /// Save a checkpoint now (another trial may clone it), tell the
    /// scheduler where ([`TrialScheduler::on_checkpoint`]) and go on.
    Checkpoint,
    /// Go on from another trial's checkpoint with another config.
    Exploit(Exploit),
}

/// PBT's exploit step for one trial: what it continues from.
#[derive(Clone, Debug, PartialEq)]
pub struct Exploit {
    /// The better trial's checkpoint: weights, optimizer and counters.
    pub checkpoint: PathBuf,
    /// That trial's config with the mutated keys perturbed.
    pub config: Box<ExperimentConfig>,
    /// Which trial is cloned and what changed, for the log.
    pub description: String,
    /// The mutated keys' new values, as a trial's tag writes values
    /// (`lr=0.0012,gamma=0.99`).
    pub tag: String,
}

/// `Ok` when `ok`, else `key`'s range error.
pub(super) fn require(ok: bool, key: &'static str, message: &str) -> Result<(), SchedulerError> {
    if ok {
        Ok(())
    } else {
        Err(SchedulerError::Range {
            key,
            message: message.to_string(),
        })
    }
}

/// The `q` quantile (0..=1) of `values` with linear interpolation between
/// the two nearest ranks (NumPy's default); none of no values.
fn percentile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = q * (values.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(values[low] + (values[high] - values[low]) * (rank - low as f64))
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScoreOrder;

    #[test]
    fn percentile_interpolates_between_ranks() {
        assert_eq!(percentile(vec![], 0.5), None);
        assert_eq!(percentile(vec![3.0], 0.75), Some(3.0));
        assert_eq!(percentile(vec![4.0, 0.0, 8.0], 0.5), Some(4.0));
        assert_eq!(percentile(vec![0.0, 10.0], 0.75), Some(7.5));
    }

    #[test]
    fn scheduler_values_parse_or_name_the_problem() {
        assert_eq!(
            SchedulerConfig::parse("asha").unwrap(),
            SchedulerConfig::Asha(AshaConfig::default())
        );
        let SchedulerConfig::Asha(custom) =
            SchedulerConfig::parse("{type: asha, grace_period: 5, max_t: 50, mode: min}").unwrap()
        else {
            panic!("type: asha is ASHA");
        };
        assert_eq!(
            (custom.grace_period, custom.max_t, custom.mode),
            (5.0, 50.0, ScoreOrder::Min)
        );
        let SchedulerConfig::Pbt(pbt) = SchedulerConfig::parse(
            "{type: pbt, perturbation_interval: 4, hyperparam_mutations: {training.lr: [1, 2]}}",
        )
        .unwrap() else {
            panic!("type: pbt is PBT");
        };
        assert_eq!(pbt.perturbation_interval, 4.0);
        for (value, expected) in [
            ("hyperband", "unknown scheduler `hyperband`"),
            ("pbt", "pbt needs hyperparam_mutations"),
            ("{type: asha, grace: 5}", "unknown field `grace`"),
            ("{type: hyperband}", "unknown variant `hyperband`"),
            (
                "{type: asha, reduction_factor: 1}",
                "reduction_factor must be above 1",
            ),
            (
                "{type: asha, grace_period: 0}",
                "grace_period must be positive",
            ),
            (
                "{type: asha, grace_period: 20, max_t: 10}",
                "max_t must be at least grace_period",
            ),
            (
                "{type: pbt}",
                "hyperparam_mutations must name at least one key",
            ),
            (
                "{type: pbt, hyperparam_mutations: {training.lr: [1]}, quantile_fraction: 0.6}",
                "quantile_fraction must be in (0, 0.5]",
            ),
            (
                "{type: pbt, hyperparam_mutations: {training.lr: [1]}, perturbation_interval: 0}",
                "perturbation_interval must be positive",
            ),
            (
                "{type: pbt, hyperparam_mutations: {training.lr: [1]}, resample_probability: 2}",
                "resample_probability must be in [0, 1]",
            ),
            (
                "{type: pbt, hyperparam_mutations: {training.lr: {grid_search: [1, 2]}}}",
                "training.lr: a list or a distribution (choice, uniform, loguniform, randint)",
            ),
            (
                "{type: pbt, hyperparam_mutations: {training.lr: {uniform: [2, 1]}}}",
                "training.lr: uniform takes [low, high]",
            ),
        ] {
            let error = SchedulerConfig::parse(value).unwrap_err().to_string();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
