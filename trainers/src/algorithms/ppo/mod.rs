//! Proximal Policy Optimization (Schulman et al. 2017):
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the clipped surrogate, value loss, entropy bonus, KL penalty,
//! - `host_loss`: the same loss and its gradient on the host, for CPU
//!   Learners of small MLP modules,
//! - `learner`: GAE and the epochs of minibatch steps,
//! - here, the training step: sample with the EnvRunners (synchronously
//!   unless `sample_ahead`), update through the LearnerGroup, adapt the KL
//!   coefficient, broadcast the new weights, report RLlib's metrics.

mod config;
mod host_loss;
mod learner;
mod loss;

pub use config::PpoConfig;
pub use host_loss::{
    host_ppo_loss, host_ppo_loss_split, HostBatch, HostMinibatch, HostPpoLoss, HostPpoPolicy,
};
pub use learner::{PpoLearner, PpoLearnerConfig, UpdateParams};
pub use loss::{normalize_advantages, ppo_loss, Minibatch, PpoLoss};

use std::time::Instant;

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::{self, Metrics};
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;

/// PPO's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct PpoState {
    kl_coeff: f64,
}

pub struct Ppo {
    training: PpoConfig,
    trainer: Trainer<PpoLearner, PpoState>,
}

impl Ppo {
    pub fn new(config: &ExperimentConfig, training: &PpoConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let learner_config = PpoLearnerConfig {
            learner: shared::learner_config(config, &module, training.lr_at(0), training.grad_clip),
            training: training.clone(),
        };
        let sampling = if training.sample_ahead {
            Sampling::Ahead
        } else {
            Sampling::Synchronous
        };
        let state = PpoState {
            kl_coeff: training.kl_coeff,
        };
        Ok(Ppo {
            training: training.clone(),
            trainer: Trainer::new(config, learner_config, module, sampling, state)?,
        })
    }
}

impl Algorithm for Ppo {
    /// The counters and episode window change only once the update has
    /// succeeded, so after a non-finite loss the state (and the checkpoint
    /// saved from it) is the last good iteration's.
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let trainer = &mut self.trainer;
        let iteration = trainer.state.progress.iteration + 1;
        let cfg = &self.training;
        let sampled = trainer.sample_on_policy(cfg.train_batch_size)?;
        let batch = &sampled.batch;
        let env_steps_sampled = trainer.state.progress.env_steps_sampled + batch.len() as u64;

        let learn_start = Instant::now();
        let params = UpdateParams {
            lr: cfg.lr_at(env_steps_sampled),
            kl_coeff: trainer.state.algorithm.kl_coeff,
            shuffle_seed: trainer
                .config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(iteration),
        };
        let trained = trainer
            .learners
            .update(batch, params)
            .map_err(|e| TrainError::from_learner(e, iteration))?;
        let mut result = trained.metrics;
        trainer.count_on_policy_update(iteration, &sampled);
        // As RLlib, only a KL term in the loss has its coefficient adapted
        // (without one the mean KL is not even computed).
        if cfg.use_kl_loss {
            let kl_coeff = &mut trainer.state.algorithm.kl_coeff;
            *kl_coeff =
                shared::adapt_kl_coeff(*kl_coeff, result[metrics::MEAN_KL_LOSS], cfg.kl_target);
        }
        trainer.broadcast_weights()?;
        let learn_s = learn_start.elapsed().as_secs_f64();

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
