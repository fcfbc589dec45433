//! The algorithm registry and what the algorithms share.
//!
//! A new algorithm is one folder `algorithms/<name>/` (config, loss, learner,
//! training step) plus one line in [`algorithms!`]'s invocation below, which
//! generates the `AlgorithmConfig` variant for its `training:` section, the
//! name `algorithm:` selects it by, and its case in [`build`] and config
//! decoding. docs/adding-an-algorithm.md walks through DQN as the example.

use oxray_rl::env_runner::{
    env_spaces_on_env_runner, module_spec as env_module_spec, module_spec_for,
};
use oxray_rl::learner::LearnerConfig;
use oxray_rl::offline_data::OfflineDataset;
use oxray_rl::rl_module::{ModuleKind, ModuleSpec};
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::config::ExperimentConfig;

pub mod check;
mod extended_section;
pub mod off_policy;
pub mod offline_replay;
mod trainer;

pub use trainer::{write_checkpoint, LastIteration, Trainer, TrainerCore, TrainingState};

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
    Impala("IMPALA") => impala::{ImpalaConfig, Impala};
    Appo("APPO") => appo::{AppoConfig, Appo};
    Marwil("MARWIL") => marwil::{MarwilConfig, Marwil};
    Bc("BC") => bc::{BcConfig, Bc};
    Cql("CQL") => cql::{CqlConfig, Cql};
    Iql("IQL") => iql::{IqlConfig, Iql};
}

impl AlgorithmName {
    /// Learns from `offline_data.input_` instead of sampling.
    pub fn learns_offline(self) -> bool {
        matches!(
            self,
            AlgorithmName::Bc | AlgorithmName::Marwil | AlgorithmName::Cql | AlgorithmName::Iql
        )
    }
}

/// The algorithm's module for the config's env and `model:` section. With
/// remote EnvRunners the env's spaces are read on one of the cluster's
/// workers, where they will run, not in the driver (RLlib's default,
/// `create_env_on_local_worker: False`).
pub fn module_spec(config: &ExperimentConfig) -> Result<ModuleSpec, TrainError> {
    let kind = config.training.training().module_kind();
    let runners = &config.env_runners;
    if runners.num_env_runners > 0 && oxray_core::is_initialized() {
        let spaces = env_spaces_on_env_runner(&config.env, runners.num_cpus_per_env_runner)?;
        return Ok(module_spec_for(
            &config.env.id,
            &spaces,
            &config.model,
            kind,
        )?);
    }
    Ok(env_module_spec(&config.env, &config.model, kind)?)
}

/// The recording an offline algorithm learns from (`offline_data.input_`),
/// every row checked against `module`'s observation and action sizes.
pub fn read_offline_data(
    config: &ExperimentConfig,
    module: &ModuleSpec,
) -> Result<OfflineDataset, TrainError> {
    let input = config.offline_data.input.as_ref().ok_or_else(|| {
        TrainError::Unsupported("offline algorithms need offline_data.input_".into())
    })?;
    let (obs_dim, action_dim) = (module.obs_dim(), module.action_space.action_dim());
    Ok(OfflineDataset::read(input, obs_dim, action_dim).map_err(oxray_rl::Error::from)?)
}

/// The Learner settings every algorithm derives alike from the config: its
/// module, the device `learners:` asks for and the run's seed, with the
/// algorithm's own learning rate and gradient clipping.
pub fn learner_config(
    config: &ExperimentConfig,
    module: &ModuleSpec,
    lr: f64,
    grad_clip: Option<f64>,
) -> LearnerConfig {
    LearnerConfig {
        module: module.clone(),
        lr,
        grad_clip,
        use_gpu: config.learners.num_gpus_per_learner > 0.0,
        seed: config.seed,
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
