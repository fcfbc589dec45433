//! MARWIL (Wang et al. 2018): imitation of recorded episodes weighted by
//! how much better than expected each recorded action did, so a recording
//! of mixed quality teaches its better part; with β = 0 it is behaviour
//! cloning (RLlib's BC is MARWIL with β = 0, as `algorithms::bc` is here).
//! It learns from `offline_data.input_` alone: no env step is sampled for
//! training; `evaluation:` plays the policy to show how it does, and
//! `stop.evaluation_return_mean` ends the run on that.
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the advantage-weighted log-likelihood and the value loss,
//! - `learner`: value targets, then shuffled minibatches through the loss,
//! - here, the training step: read the recorded episodes once (checked
//!   against the env's observation and action sizes) with their discounted
//!   returns, then each iteration one pass over them, or
//!   `dataset_num_iters_per_learner` minibatches drawn from them, through
//!   the LearnerGroup, moving the running mean c² of the squared advantage.

mod config;
mod learner;
mod loss;

pub use config::MarwilConfig;
pub use learner::{MarwilBatch, MarwilLearner, MarwilLearnerConfig, MarwilParams};
pub use loss::{marwil_loss, MarwilCoefficients, MarwilLoss, Minibatch};

use std::borrow::Cow;
use std::time::Instant;

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::ObsBuffer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;
use crate::progress::IterationTimes;

/// MARWIL's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct MarwilState {
    /// c², the running mean of the squared advantage.
    sqd_adv_norm: f64,
}

pub struct Marwil {
    training: MarwilConfig,
    /// Every recorded step, as the Learner takes them.
    dataset: MarwilBatch,
    trainer: Trainer<MarwilLearner, MarwilState>,
}

impl Marwil {
    pub fn new(config: &ExperimentConfig, training: &MarwilConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let recorded = shared::read_offline_data(config, &module)?;
        let to_go = recorded.returns_to_go(training.gamma as f32);
        let observations = |values: Vec<f32>| {
            let mut column = ObsBuffer::zeros(module.observation_dtype, 0);
            column.extend_from_f32(values);
            column
        };
        let dataset = MarwilBatch {
            obs_dim: recorded.obs_dim,
            action_dim: recorded.action_dim,
            obs: observations(recorded.obs),
            actions: recorded.actions,
            returns: to_go.returns,
            bootstrap_discounts: to_go.bootstrap_discounts,
            episode: to_go.episode,
            final_obs: observations(recorded.final_obs),
        };
        let learner_config = MarwilLearnerConfig {
            learner: shared::learner_config(config, &module, training.lr, training.grad_clip),
            training: training.clone(),
        };
        let state = MarwilState {
            sqd_adv_norm: training.moving_average_sqd_adv_norm_start,
        };
        Ok(Marwil {
            training: training.clone(),
            dataset,
            trainer: Trainer::new(config, learner_config, module, Sampling::Synchronous, state)?,
        })
    }

    fn shuffle_seed(&self, iteration: u64) -> u64 {
        self.trainer
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(iteration)
    }
}

/// An iteration's rows of `dataset`: all of them (the dataset itself, not a
/// copy), or `draws` rows drawn uniformly (with replacement) by a generator
/// seeded with `seed`.
fn rows(dataset: &MarwilBatch, draws: Option<usize>, seed: u64) -> Cow<'_, MarwilBatch> {
    let Some(draws) = draws else {
        return Cow::Borrowed(dataset);
    };
    let (d, a) = (dataset.obs_dim, dataset.action_dim);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb0c);
    let mut drawn = MarwilBatch {
        obs_dim: d,
        action_dim: a,
        obs: ObsBuffer::zeros(dataset.obs.dtype(), 0),
        final_obs: dataset.final_obs.clone(),
        ..MarwilBatch::default()
    };
    for _ in 0..draws {
        let row = rng.gen_range(0..dataset.len());
        drawn.obs.extend_from(&dataset.obs, row * d..(row + 1) * d);
        drawn
            .actions
            .extend_from_slice(&dataset.actions[row * a..(row + 1) * a]);
        drawn.returns.push(dataset.returns[row]);
        drawn
            .bootstrap_discounts
            .push(dataset.bootstrap_discounts[row]);
        drawn.episode.push(dataset.episode[row]);
    }
    Cow::Owned(drawn)
}

impl Algorithm for Marwil {
    /// The counters and c² change only once the update has succeeded, so
    /// after a non-finite loss the state is the last good iteration's.
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.trainer.state.progress.iteration + 1;
        let learn_start = Instant::now();
        let shuffle_seed = self.shuffle_seed(iteration);
        let draws = self
            .training
            .dataset_num_iters_per_learner
            .map(|minibatches| minibatches * self.training.train_batch_size);
        let batch = rows(&self.dataset, draws, shuffle_seed);
        let params = MarwilParams {
            shuffle_seed,
            sqd_adv_norm: self.trainer.state.algorithm.sqd_adv_norm,
        };
        let trained = self
            .trainer
            .learners
            .update(&batch, params)
            .map_err(|e| TrainError::from_learner(e, iteration))?;
        let mut result = trained.metrics;
        let state = &mut self.trainer.state;
        if let Some(&mean_sqd_advantage) = result.get(metrics::MEAN_SQD_ADVANTAGE) {
            let rate = self.training.moving_average_sqd_adv_norm_update_rate;
            let norm = &mut state.algorithm.sqd_adv_norm;
            *norm += rate * (mean_sqd_advantage - *norm);
            result.insert(metrics::MOVING_AVERAGE_SQD_ADV_NORM.into(), *norm);
        }
        state.progress.iteration = iteration;
        state.progress.env_steps_trained += batch.len() as u64;
        let times = IterationTimes::offline(batch.len(), learn_start.elapsed().as_secs_f64());
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
