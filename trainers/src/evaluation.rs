//! Evaluation during training (RLlib's `evaluation_interval`): every
//! `evaluation.interval` iterations the Learner's current weights play
//! `evaluation.duration` episodes (or env steps) on EnvRunners of their own,
//! greedily unless `evaluation.explore`, and the episodes' statistics join
//! that iteration's result under RLlib's `evaluation/env_runners/` keys.
//!
//! The evaluation runners are a separate [`EnvRunnerGroup`] (local when
//! `evaluation.num_env_runners` is 0), seeded apart from the training ones,
//! and start their envs over for every evaluation, so each reported episode
//! was played whole by the weights being evaluated. Algorithms need nothing
//! for it but their current weights ([`Algorithm::flat_weights`]).
//!
//! [`Algorithm::flat_weights`]: crate::algorithm::Algorithm::flat_weights

use oxray_rl::env_runner::{EnvRunnerConfig, EvaluationDuration};
use oxray_rl::env_runner_group::{EnvRunnerGroup, Sampling};
use oxray_rl::metrics::Metrics;

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::module_spec;
use crate::config::{DurationUnit, EvaluationConfig, ExperimentConfig};
use crate::evaluate::Evaluation;

pub const EPISODE_RETURN_MEAN: &str = "evaluation/env_runners/episode_return_mean";
pub const EPISODE_RETURN_MIN: &str = "evaluation/env_runners/episode_return_min";
pub const EPISODE_RETURN_MAX: &str = "evaluation/env_runners/episode_return_max";
pub const EPISODE_LEN_MEAN: &str = "evaluation/env_runners/episode_len_mean";
pub const NUM_EPISODES: &str = "evaluation/env_runners/num_episodes";

/// Evaluation runners' sub-envs are seeded this far from the training ones'.
const SEED_OFFSET: u64 = 1 << 32;

pub struct Evaluator {
    config: EvaluationConfig,
    runners: EnvRunnerGroup,
}

impl Evaluator {
    /// The evaluation the config asks for; `None` when `evaluation.interval`
    /// is 0.
    pub fn new(config: &ExperimentConfig) -> Result<Option<Self>, TrainError> {
        let evaluation = &config.evaluation;
        if evaluation.interval == 0 {
            return Ok(None);
        }
        let runner_config = EnvRunnerConfig {
            env: config.env.clone(),
            num_envs: config.env_runners.num_envs_per_env_runner,
            rollout_fragment_length: 1,
            module: module_spec(config)?,
            seed: config.seed.wrapping_add(SEED_OFFSET),
            worker_index: 0,
            explore: evaluation.explore,
            record_to: None,
        };
        let runners = EnvRunnerGroup::new(
            &runner_config,
            evaluation.num_env_runners,
            config.env_runners.num_cpus_per_env_runner,
            Sampling::Synchronous,
        )?;
        Ok(Some(Evaluator {
            config: evaluation.clone(),
            runners,
        }))
    }

    /// Whether iteration `iteration` (1-based) evaluates.
    pub fn due(&self, iteration: u64) -> bool {
        iteration.is_multiple_of(self.config.interval)
    }

    /// Plays the configured duration with `algorithm`'s current weights and
    /// adds the `evaluation/` keys to `result` (the episode keys only when an
    /// episode finished).
    pub fn evaluate(
        &mut self,
        algorithm: &dyn Algorithm,
        result: &mut Metrics,
    ) -> Result<(), TrainError> {
        let iteration = algorithm.iteration();
        self.runners
            .sync_weights(iteration, algorithm.flat_weights()?, 0)?;
        let duration = match self.config.duration_unit {
            DurationUnit::Episodes => EvaluationDuration::Episodes(self.config.duration),
            DurationUnit::Timesteps => EvaluationDuration::Timesteps(self.config.duration),
        };
        let episodes = self.runners.evaluate(duration)?;
        result.insert(NUM_EPISODES.into(), episodes.returns.len() as f64);
        if !episodes.returns.is_empty() {
            let returns: Vec<f64> = episodes.returns.iter().map(|&r| f64::from(r)).collect();
            let lengths: Vec<f64> = episodes.lengths.iter().map(|&l| f64::from(l)).collect();
            let (mean, min, max) = Evaluation::stats(&returns);
            result.insert(EPISODE_RETURN_MEAN.into(), mean);
            result.insert(EPISODE_RETURN_MIN.into(), min);
            result.insert(EPISODE_RETURN_MAX.into(), max);
            result.insert(EPISODE_LEN_MEAN.into(), Evaluation::stats(&lengths).0);
        }
        Ok(())
    }
}
