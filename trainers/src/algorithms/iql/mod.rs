//! IQL (Kostrikov et al. 2021, "Offline Reinforcement Learning with
//! Implicit Q-Learning"; RLlib's IQL): learning from a recording alone
//! without ever valuing an action the recording did not take. V(s) is an
//! upper expectile of Q over the recorded actions, Q bootstraps from V, and
//! the policy clones the recorded actions weighted by exp(β·advantage), so
//! it keeps the better of what was recorded and, through V, can stitch
//! together the good parts of different episodes. Continuous (Box) actions,
//! as RLlib's. It samples no env step for training; `evaluation:` plays the
//! policy and `stop.evaluation_return_mean` ends the run on that.
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the expectile, critic and advantage-weighted actor losses,
//! - `learner`: one gradient step per minibatch, each loss on its own
//!   network with its own learning rate, the target Q-networks,
//! - the training step is the offline one CQL shares ([`OfflineReplay`]):
//!   the recording replayed as one-step transitions.
//!
//! The module is SAC's with a state-value function
//! (`oxray_rl::rl_module::SoftActorCritic`), so `oxray evaluate` and
//! `oxray export` read an IQL checkpoint as a SAC one.

mod config;
mod learner;
mod loss;

pub use config::IqlConfig;
pub use learner::{IqlLearner, IqlLearnerConfig};
pub use loss::{iql_loss, Coefficients, Evaluations, IqlLoss};

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::Metrics;

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::off_policy::TargetUpdate;
use crate::algorithms::offline_replay::{GradientSteps, OfflineReplay, Schedule};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;

pub struct Iql {
    recording: OfflineReplay,
    trainer: Trainer<IqlLearner, GradientSteps>,
}

impl Iql {
    pub fn new(config: &ExperimentConfig, training: &IqlConfig) -> Result<Self, TrainError> {
        let (recording, module) = OfflineReplay::read(
            config,
            Schedule {
                n_step: 1,
                gamma: training.gamma,
                train_batch_size: training.train_batch_size,
                target_network_update_freq: training.target_network_update_freq,
                dataset_num_iters_per_learner: training.dataset_num_iters_per_learner,
            },
        )?;
        let learner_config = IqlLearnerConfig {
            learner: shared::learner_config(
                config,
                &module,
                training.critic_lr,
                training.grad_clip,
            ),
            training: training.clone(),
        };
        Ok(Iql {
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

impl Algorithm for Iql {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        self.recording
            .train(&mut self.trainer, |_, update_target| TargetUpdate { update_target })
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
