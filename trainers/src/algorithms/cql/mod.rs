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
//! - here, the training step: the recording read once into a uniform
//!   replay buffer as n-step transitions (checked against the env's
//!   observation and action sizes), then each iteration
//!   `dataset_num_iters_per_learner` (or one pass's worth of) replayed
//!   minibatches through the LearnerGroup, counting gradient steps for
//!   `bc_iters` and the target updates.

mod config;
mod learner;
mod loss;

pub use config::CqlConfig;
pub use learner::{CqlLearner, CqlLearnerConfig, CqlParams};
pub use loss::{cql_loss, Coefficients, CqlLoss, Evaluations, Proposal};

use std::time::Instant;

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::replay_buffer::{ReplayBuffer, ReplayBufferConfig};
use oxray_rl::rl_module::ActionSpace;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;
use crate::progress::IterationTimes;

/// CQL's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CqlState {
    num_grad_updates: u64,
    /// Gradient steps taken at the last target network update.
    last_target_update: u64,
    num_target_updates: u64,
}

pub struct Cql {
    training: CqlConfig,
    /// Every recorded transition, replayed uniformly.
    replay: ReplayBuffer,
    trainer: Trainer<CqlLearner, CqlState>,
}

impl Cql {
    pub fn new(config: &ExperimentConfig, training: &CqlConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        if !matches!(module.action_space, ActionSpace::Box { .. }) {
            return Err(TrainError::Unsupported(format!(
                "CQL learns continuous (Box) actions; {}'s are Discrete (BC and MARWIL learn \
                 Discrete ones offline)",
                config.env.id
            )));
        }
        let recorded = shared::read_offline_data(config, &module)?;
        let transitions = recorded.transitions(training.n_step, training.gamma as f32);
        let mut replay = ReplayBuffer::new(ReplayBufferConfig {
            capacity: transitions.len(),
            prioritized: false,
            alpha: 0.0,
            beta: 0.0,
            epsilon: 1e-6,
            obs_dim: recorded.obs_dim,
            obs_dtype: module.observation_dtype,
            obs_planes: 1,
            action_dim: recorded.action_dim,
            seed: config.seed,
        });
        replay.add(transitions);
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
            training: training.clone(),
            replay,
            trainer: Trainer::new(
                config,
                learner_config,
                module,
                Sampling::Synchronous,
                CqlState::default(),
            )?,
        })
    }

    /// Gradient steps per iteration: as configured, or one pass's worth.
    fn steps_per_iteration(&self) -> usize {
        self.training
            .dataset_num_iters_per_learner
            .unwrap_or_else(|| self.replay.len().div_ceil(self.training.train_batch_size))
    }
}

impl Algorithm for Cql {
    /// The counters change only once every update of the iteration has
    /// succeeded, so after a non-finite loss the state is the last good
    /// iteration's.
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.trainer.state.progress.iteration + 1;
        let learn_start = Instant::now();
        let mut counts = self.trainer.state.algorithm.clone();
        let (mut trained, mut result) = (0, Metrics::new());
        for _ in 0..self.steps_per_iteration() {
            let update_target = counts.num_grad_updates - counts.last_target_update
                >= self.training.target_network_update_freq;
            if update_target {
                counts.last_target_update = counts.num_grad_updates;
                counts.num_target_updates += 1;
            }
            let params = CqlParams {
                update_target,
                behaviour_cloning: counts.num_grad_updates < self.training.bc_iters,
            };
            let minibatch = self.replay.sample(self.training.train_batch_size);
            trained += minibatch.len();
            result = self
                .trainer
                .learners
                .update(&minibatch, params)
                .map_err(|e| TrainError::from_learner(e, iteration))?
                .metrics;
            counts.num_grad_updates += 1;
        }
        result.insert(
            metrics::NUM_TARGET_UPDATES.to_string(),
            counts.num_target_updates as f64,
        );
        let state = &mut self.trainer.state;
        state.algorithm = counts;
        state.progress.iteration = iteration;
        state.progress.env_steps_trained += trained as u64;
        let times = IterationTimes::offline(trained, learn_start.elapsed().as_secs_f64());
        self.trainer.report(&mut result, &times);
        Ok(result)
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
