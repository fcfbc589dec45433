//! Behaviour cloning (Pomerleau 1991; RLlib's BC, MARWIL with β = 0): the
//! policy learns to act as recorded episodes did, by maximum likelihood of
//! their actions, from `offline_data.input_` alone. No env step is sampled
//! for training; `evaluation:` plays the policy to show how it does, and
//! `stop.evaluation_return_mean` ends the run on that.
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the negative log-likelihood of the recorded actions,
//! - `learner`: shuffled minibatches of recorded rows through the loss,
//! - here, the training step: read the recorded episodes once (checked
//!   against the env's observation and action sizes), then each iteration
//!   one pass over them, or `dataset_num_iters_per_learner` minibatches
//!   drawn from them, through the LearnerGroup.

mod config;
mod learner;
mod loss;

pub use config::BcConfig;
pub use learner::{BcBatch, BcLearner, BcLearnerConfig, BcParams};
pub use loss::{bc_loss, BcLoss};

use std::time::Instant;

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::Metrics;
use oxray_rl::offline_data::OfflineDataset;
use oxray_rl::ObsBuffer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;
use crate::progress::IterationTimes;

pub struct Bc {
    training: BcConfig,
    /// Every recorded step, as the Learner takes them.
    dataset: BcBatch,
    trainer: Trainer<BcLearner, ()>,
}

impl Bc {
    pub fn new(config: &ExperimentConfig, training: &BcConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let input = config.offline_data.input.as_ref().ok_or_else(|| {
            TrainError::Unsupported("BC needs offline_data.input_: recorded episodes".into())
        })?;
        let (obs_dim, action_dim) = (module.obs_dim(), module.action_space.action_dim());
        let recorded = OfflineDataset::read(input, obs_dim, action_dim)
            .map_err(oxray_rl::Error::from)?;
        let mut obs = ObsBuffer::zeros(module.observation_dtype, 0);
        obs.extend_from_f32(recorded.obs);
        let dataset = BcBatch {
            obs,
            obs_dim,
            actions: recorded.actions,
            action_dim,
        };
        let learner_config = BcLearnerConfig {
            learner: shared::learner_config(config, &module, training.lr, training.grad_clip),
            training: training.clone(),
        };
        Ok(Bc {
            training: training.clone(),
            dataset,
            trainer: Trainer::new(config, learner_config, module, Sampling::Synchronous, ())?,
        })
    }

    /// This iteration's rows: all of them, or `dataset_num_iters_per_learner`
    /// minibatches' worth drawn uniformly (with replacement).
    fn rows(&self, iteration: u64) -> BcBatch {
        let Some(iterations) = self.training.dataset_num_iters_per_learner else {
            return self.dataset.clone();
        };
        let data = &self.dataset;
        let mut rng = ChaCha8Rng::seed_from_u64(self.shuffle_seed(iteration) ^ 0xbc);
        let mut drawn = BcBatch {
            obs: ObsBuffer::zeros(data.obs.dtype(), 0),
            obs_dim: data.obs_dim,
            actions: Vec::new(),
            action_dim: data.action_dim,
        };
        for _ in 0..iterations * self.training.train_batch_size {
            let row = rng.gen_range(0..data.len());
            let (d, a) = (data.obs_dim, data.action_dim);
            drawn.obs.extend_from(&data.obs, row * d..(row + 1) * d);
            drawn
                .actions
                .extend_from_slice(&data.actions[row * a..(row + 1) * a]);
        }
        drawn
    }

    fn shuffle_seed(&self, iteration: u64) -> u64 {
        self.trainer
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(iteration)
    }
}

impl Algorithm for Bc {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.trainer.state.progress.iteration + 1;
        let learn_start = Instant::now();
        let batch = self.rows(iteration);
        let params = BcParams {
            shuffle_seed: self.shuffle_seed(iteration),
        };
        let trained = self
            .trainer
            .learners
            .update(&batch, params)
            .map_err(|e| TrainError::from_learner(e, iteration))?;
        let progress = &mut self.trainer.state.progress;
        progress.iteration = iteration;
        progress.env_steps_trained += batch.len() as u64;
        let mut result = trained.metrics;
        self.trainer.report(
            &mut result,
            &IterationTimes {
                sampled: 0,
                sample_s: 0.0,
                trained: batch.len(),
                learn_s: learn_start.elapsed().as_secs_f64(),
            },
        );
        Ok(result)
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
