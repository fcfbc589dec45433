//! The algorithm registry and what the algorithms share.
//!
//! A new algorithm is one folder `algorithms/<name>/` (config, loss, learner,
//! training step) plus one line in [`algorithms!`]'s invocation below, which
//! generates the `AlgorithmConfig` variant for its `training:` section, the
//! name `algorithm:` selects it by, and its case in [`build`] and config
//! decoding. docs/adding-an-algorithm.md walks through DQN as the example.

use std::path::{Path, PathBuf};
use std::time::Instant;

use oxray_rl::checkpoint::{self, Checkpoint};
use oxray_rl::env_runner::{module_spec as env_module_spec, EnvRunnerConfig};
use oxray_rl::env_runner_group::{EnvRunnerGroup, Sampling};
use oxray_rl::learner::LearnerState;
use oxray_rl::metrics::{self, Histograms};
use oxray_rl::rl_module::{add_weight_histograms, ModuleKind, ModuleSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::config::ExperimentConfig;
use crate::progress::Progress;

pub mod check;
pub mod off_policy;

/// What every algorithm's `training:` section answers.
pub trait TrainingConfig {
    /// The first out-of-range value, as (dotted key, what is wrong), given
    /// how many envs sample in parallel (runners × envs per runner).
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)>;

    /// `rollout_fragment_length: auto`: steps per env per `sample()`.
    fn auto_rollout_fragment_length(&self, envs_sampled_in_parallel: usize) -> usize;

    /// The RLModule the algorithm trains and acts with.
    fn module_kind(&self) -> ModuleKind;
}

macro_rules! algorithms {
    ($($variant:ident($name:literal) => $module:ident::{$config:ident, $algorithm:ident};)*) => {
        $(pub mod $module;)*

        /// The name `algorithm:` takes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum AlgorithmName {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl AlgorithmName {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AlgorithmName::$variant => $name,)*
                }
            }
        }

        /// The `training:` section of the algorithm `algorithm:` names.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum AlgorithmConfig {
            $($variant($module::$config),)*
        }

        impl AlgorithmConfig {
            pub fn training(&self) -> &dyn TrainingConfig {
                match self {
                    $(AlgorithmConfig::$variant(training) => training,)*
                }
            }
        }

        /// Decodes a whole experiment config from `make()` (called twice:
        /// once for the `algorithm:` key, then for the config with that
        /// algorithm's `training:` section).
        pub(crate) fn decode<'de, D: serde::Deserializer<'de>>(
            make: impl Fn() -> D,
        ) -> Result<ExperimentConfig, D::Error> {
            let header = crate::config::AlgorithmKey::deserialize(make())?;
            Ok(match header.algorithm {
                $(AlgorithmName::$variant => {
                    ExperimentConfig::<$module::$config>::deserialize(make())?
                        .map_training(AlgorithmConfig::$variant)
                })*
            })
        }

        /// The algorithm a config names, ready to train.
        pub fn build(config: &ExperimentConfig) -> Result<Box<dyn Algorithm>, TrainError> {
            match &config.training {
                $(AlgorithmConfig::$variant(training) => {
                    Ok(Box::new($module::$algorithm::new(config, training)?))
                })*
            }
        }
    };
}

algorithms! {
    Ppo("PPO") => ppo::{PpoConfig, Ppo};
    Dqn("DQN") => dqn::{DqnConfig, Dqn};
    Sac("SAC") => sac::{SacConfig, Sac};
    Appo("APPO") => appo::{AppoConfig, Appo};
}

/// What the latest iteration's histograms are made of, kept rather than
/// computed so an iteration that logs none pays only for moving them here.
#[derive(Default)]
pub struct LastIteration {
    pub actions: Vec<f32>,
    pub action_dim: usize,
    /// The Learner's (advantages, TD errors).
    pub learner: Histograms,
}

impl LastIteration {
    /// Sampled actions, the Learner's histograms and every tensor of
    /// `weights` (the Learner's, as a libtorch archive).
    pub fn histograms(&self, weights: &[u8]) -> Result<Histograms, TrainError> {
        let mut histograms = self.learner.clone();
        metrics::add_action_histograms(&self.actions, self.action_dim, &mut histograms);
        add_weight_histograms(weights, metrics::WEIGHTS, &mut histograms)
            .map_err(|e| TrainError::Learner(format!("cannot read the weights: {e}")))?;
        Ok(histograms)
    }
}

/// The algorithm's module for the config's env and `model:` section.
pub fn module_spec(config: &ExperimentConfig) -> Result<ModuleSpec, TrainError> {
    let kind = config.training.training().module_kind();
    Ok(env_module_spec(&config.env, &config.model, kind)?)
}

/// The EnvRunners the config's `env_runners:` section asks for, acting with
/// `module`.
pub fn env_runners(
    config: &ExperimentConfig,
    module: ModuleSpec,
    sampling: Sampling,
) -> Result<EnvRunnerGroup, TrainError> {
    let runner_config = EnvRunnerConfig {
        env: config.env.clone(),
        num_envs: config.env_runners.num_envs_per_env_runner,
        rollout_fragment_length: config.rollout_fragment_length(),
        module,
        seed: config.seed,
        worker_index: 0,
        explore: true,
    };
    Ok(EnvRunnerGroup::new(
        &runner_config,
        config.env_runners.num_env_runners,
        config.env_runners.num_cpus_per_env_runner,
        sampling,
    )?)
}

/// What a checkpoint carries besides the weights: the counters every
/// algorithm keeps and the algorithm's own state `A`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState<A> {
    pub progress: Progress,
    pub algorithm: A,
}

impl<A: Serialize + DeserializeOwned + Clone> TrainingState<A> {
    /// Writes `checkpoint_<iteration>` with this state (this session's time
    /// added, the EnvRunners' RNG states taken) and the Learner's.
    pub fn save(
        &self,
        checkpoint_dir: &Path,
        config: &ExperimentConfig,
        started: Instant,
        env_runners: &EnvRunnerGroup,
        learner: LearnerState,
    ) -> Result<PathBuf, TrainError> {
        let mut state = self.clone();
        state.progress.time_before_s += started.elapsed().as_secs_f64();
        state.progress.env_runner_rngs = env_runners.rng_states()?;
        let checkpoint = Checkpoint {
            algorithm: config.algorithm.as_str().to_string(),
            config: serde_json::to_value(config).expect("configs serialize"),
            state: serde_json::to_value(&state).expect("training state serializes"),
            learner,
        };
        let name = format!("checkpoint_{:06}", state.progress.iteration);
        Ok(checkpoint::save(checkpoint_dir, &name, &checkpoint)?)
    }

    /// The state `checkpoint` holds; the EnvRunners get `weights` (the
    /// restored Learner's) and the checkpoint's RNG states.
    pub fn restore(
        checkpoint: &Checkpoint,
        env_runners: &mut EnvRunnerGroup,
        weights: Vec<f32>,
    ) -> Result<Self, TrainError> {
        let state: Self = serde_json::from_value(checkpoint.state.clone())
            .map_err(|e| TrainError::Restore(format!("training state: {e}")))?;
        let progress = &state.progress;
        env_runners.sync_weights(
            progress.weights_version,
            weights,
            progress.env_steps_sampled,
        )?;
        env_runners.set_rng_states(progress.env_runner_rngs.clone())?;
        Ok(state)
    }
}

/// RLlib's adaptive KL coefficient (PPO, APPO): ×1.5 when the KL overshoots
/// twice the target, ×0.5 when it stays under half of it.
pub fn adapt_kl_coeff(kl_coeff: f64, mean_kl: f64, kl_target: f64) -> f64 {
    if mean_kl > 2.0 * kl_target {
        kl_coeff * 1.5
    } else if mean_kl < 0.5 * kl_target {
        kl_coeff * 0.5
    } else {
        kl_coeff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_coeff_adapts_towards_the_target() {
        assert_eq!(adapt_kl_coeff(0.2, 0.03, 0.01), 0.2 * 1.5);
        assert_eq!(adapt_kl_coeff(0.2, 0.004, 0.01), 0.1);
        assert_eq!(adapt_kl_coeff(0.2, 0.01, 0.01), 0.2);
        // Within [target/2, 2·target] the coefficient stays put.
        assert_eq!(adapt_kl_coeff(0.2, 0.02, 0.01), 0.2);
        assert_eq!(adapt_kl_coeff(0.2, 0.005, 0.01), 0.2);
    }
}
