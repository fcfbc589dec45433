//! IMPALA (Espeholt et al. 2018) as RLlib's `IMPALA`, and the asynchronous
//! training step APPO builds on:
//!
//! - `config`: the `training:` section and its checks (APPO's adds its own
//!   keys to these),
//! - `loss`: the V-trace policy gradient, value loss and entropy bonus,
//! - `learner`: V-trace over the batch (shared with APPO), the minibatch
//!   steps,
//! - here, the training step: the EnvRunners sample continuously, each with
//!   `max_requests_in_flight_per_env_runner` samples queued, so they never
//!   wait for the Learner; an iteration takes the rollouts as they arrive
//!   until it has `train_batch_size` steps, updates on them (the actions came
//!   from weights a few versions old, which V-trace corrects for), and sends
//!   the new weights every `broadcast_interval` updates without waiting for
//!   the runners to take them.

mod config;
mod learner;
mod loss;

pub use config::ImpalaConfig;
pub use learner::{ImpalaLearner, ImpalaLearnerConfig, ImpalaUpdateParams, VTraceBatch};
pub use loss::{impala_loss, value_and_entropy, ImpalaLoss, Minibatch, ValueAndEntropy};

use std::time::Instant;

use oxray_rl::env_runner_group::Sampling;
use oxray_rl::learner_group::{AlgorithmLearner, LearnerActor};
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::SampleBatch;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;

/// IMPALA's training state, part of every algorithm built on its training
/// step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImpalaState {
    /// Learner updates so far: the broadcasts (and APPO's target network)
    /// go by them.
    pub num_updates: u64,
}

impl AsMut<ImpalaState> for ImpalaState {
    fn as_mut(&mut self) -> &mut ImpalaState {
        self
    }
}

/// The update a training step is about to make.
pub struct Update {
    /// Learner updates counting this one.
    pub num_updates: u64,
    /// Seeds the update's minibatch shuffling.
    pub shuffle_seed: u64,
}

/// How the EnvRunners of an IMPALA-style algorithm sample.
pub fn asynchronous_sampling(config: &ImpalaConfig) -> Sampling {
    Sampling::Asynchronous {
        max_requests_in_flight: config.max_requests_in_flight_per_env_runner,
    }
}

/// One iteration of IMPALA's training step on `trainer`, whose algorithm
/// state `A` holds an [`ImpalaState`]: `params` gives the Learner's
/// parameters for the update, `after_update` sees the update's result once
/// it succeeded (before the weights go out).
///
/// The counters and episode window change only once the update has
/// succeeded, so after a non-finite loss the state (and the checkpoint saved
/// from it) is the last good iteration's.
pub fn training_step<L, A>(
    trainer: &mut Trainer<L, A>,
    config: &ImpalaConfig,
    params: impl FnOnce(&A, &Update) -> L::Params,
    after_update: impl FnOnce(&mut A, &Metrics),
) -> Result<Metrics, TrainError>
where
    L: LearnerActor + AlgorithmLearner<Batch = SampleBatch>,
    A: AsMut<ImpalaState>,
{
    let iteration = trainer.state.progress.iteration + 1;
    let sampled = trainer.sample_on_policy(config.train_batch_size)?;

    let learn_start = Instant::now();
    let update = Update {
        num_updates: trainer.state.algorithm.as_mut().num_updates + 1,
        shuffle_seed: trainer
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(iteration),
    };
    let trained = trainer
        .learners
        .update(&sampled.batch, params(&trainer.state.algorithm, &update))
        .map_err(|e| TrainError::from_learner(e, iteration))?;
    let mut result = trained.metrics;
    trainer.count_on_policy_update(iteration, &sampled);
    trainer.state.algorithm.as_mut().num_updates = update.num_updates;
    after_update(&mut trainer.state.algorithm, &result);
    if update.num_updates.is_multiple_of(config.broadcast_interval) {
        trainer.broadcast_weights()?;
    }
    let learn_s = learn_start.elapsed().as_secs_f64();

    result.insert(metrics::MEAN_WEIGHTS_LAG.into(), sampled.mean_weights_lag);
    trainer.finish_on_policy_iteration(&mut result, sampled, learn_s, trained.histograms);
    Ok(result)
}

pub struct Impala {
    training: ImpalaConfig,
    trainer: Trainer<ImpalaLearner, ImpalaState>,
}

impl Impala {
    pub fn new(config: &ExperimentConfig, training: &ImpalaConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let learner_config = ImpalaLearnerConfig {
            learner: shared::learner_config(config, &module, training.lr, training.grad_clip),
            training: training.clone(),
        };
        let sampling = asynchronous_sampling(training);
        Ok(Impala {
            training: training.clone(),
            trainer: Trainer::new(
                config,
                learner_config,
                module,
                sampling,
                ImpalaState::default(),
            )?,
        })
    }
}

impl Algorithm for Impala {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        training_step(
            &mut self.trainer,
            &self.training,
            |_, update| ImpalaUpdateParams {
                shuffle_seed: update.shuffle_seed,
            },
            |_, _| {},
        )
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
