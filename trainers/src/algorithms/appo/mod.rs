//! APPO, RLlib's asynchronous PPO (IMPALA's architecture, Espeholt et al.
//! 2018, with PPO's clipped surrogate and a target network):
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the clipped surrogate against the target policy, the V-trace
//!   value loss, entropy bonus and optional KL penalty,
//! - `learner`: V-trace over the batch, the minibatch steps, the target
//!   network,
//! - here, the training step: the EnvRunners sample continuously, each with
//!   `max_requests_in_flight_per_env_runner` samples queued, so they never
//!   wait for the Learner; an iteration takes the rollouts as they arrive
//!   until it has `train_batch_size` steps, updates on them (the actions came
//!   from weights a few versions old, which V-trace corrects for), and sends
//!   the new weights without waiting for the runners to take them.

mod config;
mod learner;
mod loss;

pub use config::AppoConfig;
pub use learner::{AppoLearner, AppoLearnerConfig, AppoUpdateParams};
pub use loss::{appo_loss, AppoLoss, Minibatch};

use std::time::Instant;

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::{self, Metrics};
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;

/// APPO's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct AppoState {
    kl_coeff: f64,
    /// Learner updates so far: the target network and the broadcasts go by
    /// them.
    num_updates: u64,
}

pub struct Appo {
    training: AppoConfig,
    trainer: Trainer<AppoLearner, AppoState>,
}

impl Appo {
    pub fn new(config: &ExperimentConfig, training: &AppoConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let learner_config = AppoLearnerConfig {
            learner: shared::learner_config(config, &module, training.lr, training.grad_clip),
            training: training.clone(),
        };
        let sampling = Sampling::Asynchronous {
            max_requests_in_flight: training.max_requests_in_flight_per_env_runner,
        };
        let state = AppoState {
            kl_coeff: training.kl_coeff,
            num_updates: 0,
        };
        Ok(Appo {
            training: training.clone(),
            trainer: Trainer::new(config, learner_config, module, sampling, state)?,
        })
    }
}

impl Algorithm for Appo {
    /// The counters and episode window change only once the update has
    /// succeeded, so after a non-finite loss the state (and the checkpoint
    /// saved from it) is the last good iteration's.
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let trainer = &mut self.trainer;
        let iteration = trainer.state.progress.iteration + 1;
        let cfg = &self.training;
        let sampled = trainer.sample_on_policy(cfg.train_batch_size)?;
        let batch = &sampled.batch;

        let learn_start = Instant::now();
        let num_updates = trainer.state.algorithm.num_updates + 1;
        let params = AppoUpdateParams {
            kl_coeff: trainer.state.algorithm.kl_coeff,
            shuffle_seed: trainer
                .config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(iteration),
            update_target: num_updates.is_multiple_of(cfg.target_network_update_freq),
        };
        let trained = trainer
            .learners
            .update(batch, params)
            .map_err(|e| TrainError::from_learner(e, iteration))?;
        let mut result = trained.metrics;
        trainer.count_on_policy_update(iteration, &sampled);
        let algorithm = &mut trainer.state.algorithm;
        algorithm.num_updates = num_updates;
        if cfg.use_kl_loss {
            algorithm.kl_coeff = shared::adapt_kl_coeff(
                algorithm.kl_coeff,
                result[metrics::MEAN_KL_LOSS],
                cfg.kl_target,
            );
        }
        if num_updates.is_multiple_of(cfg.broadcast_interval) {
            trainer.broadcast_weights()?;
        }
        let learn_s = learn_start.elapsed().as_secs_f64();

        result.insert(metrics::MEAN_WEIGHTS_LAG.into(), sampled.mean_weights_lag);
        trainer.finish_on_policy_iteration(&mut result, sampled, learn_s, trained.histograms);
        Ok(result)
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
