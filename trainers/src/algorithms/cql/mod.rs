//! CQL (Kumar et al. 2020, "Conservative Q-Learning for Offline
//! Reinforcement Learning"; RLlib's CQL): SAC learning from a recording
//! alone, its Q-functions kept from overestimating actions the recording
//! never took, so the policy improves on the recorded behaviour without
//! chasing values nothing supports. Continuous (Box) actions, as RLlib's.
//! It samples no env step for training; `evaluation:` plays the policy and
//! `stop.evaluation_return_mean` ends the run on that.
//!
//! - `config`: the `training:` section (SAC's keys and CQL's own) and its
//!   checks,
//! - `loss`: SAC's losses with the conservative term, the deterministic
//!   backup and the behaviour-cloning start,
//! - `learner`: SAC's Learner with the proposals' forward passes,
//! - the training step is the offline one IQL shares ([`OfflineReplay`]):
//!   the recording replayed as n-step transitions, with CQL's count of
//!   gradient steps deciding when behaviour cloning ends.

mod config;
mod learner;
mod loss;

pub use config::CqlConfig;
pub use learner::{CqlLearner, CqlLearnerConfig, CqlParams};
pub use loss::{cql_loss, Coefficients, CqlLoss, Evaluations, Proposal};

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::Metrics;

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::offline_replay::{GradientSteps, OfflineReplay, Schedule};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;

pub struct Cql {
    bc_iters: u64,
    recording: OfflineReplay,
    trainer: Trainer<CqlLearner, GradientSteps>,
}

impl Cql {
    pub fn new(config: &ExperimentConfig, training: &CqlConfig) -> Result<Self, TrainError> {
        let (recording, module) = OfflineReplay::read(
            config,
            Schedule {
                n_step: training.n_step,
                gamma: training.gamma,
                train_batch_size: training.train_batch_size,
                target_network_update_freq: training.target_network_update_freq,
                dataset_num_iters_per_learner: training.dataset_num_iters_per_learner,
            },
        )?;
        let learner_config = CqlLearnerConfig {
            learner: shared::learner_config(
                config,
                &module,
                training.critic_lr,
                training.grad_clip,
            ),
            training: training.clone(),
        };
        Ok(Cql {
            bc_iters: training.bc_iters,
            recording,
            trainer: Trainer::new(
                config,
                learner_config,
                module,
                Sampling::Synchronous,
                GradientSteps::default(),
            )?,
        })
    }
}

impl Algorithm for Cql {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let bc_iters = self.bc_iters;
        self.recording
            .train(&mut self.trainer, |steps, update_target| CqlParams {
                update_target,
                behaviour_cloning: steps.num_grad_updates < bc_iters,
            })
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
