//! Proximal Policy Optimization (Schulman et al. 2017):
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the clipped surrogate, value loss, entropy bonus, KL penalty,
//! - `learner`: GAE and the epochs of minibatch steps,
//! - here, the training step: sample with the EnvRunners (synchronously
//!   unless `sample_ahead`), update through the LearnerGroup, adapt the KL
//!   coefficient, broadcast the new weights, report RLlib's metrics.

mod config;
mod learner;
mod loss;

pub use config::PpoConfig;
pub use learner::{PpoLearner, PpoLearnerConfig, UpdateParams};
pub use loss::{normalize_advantages, ppo_loss, Minibatch, PpoLoss};

use std::path::{Path, PathBuf};
use std::time::Instant;

use oxray_rl::checkpoint::Checkpoint;
use oxray_rl::env_runner_group::{EnvRunnerGroup, Sampling};
use oxray_rl::learner::LearnerConfig;
use oxray_rl::learner_group::LearnerGroup;
use oxray_rl::metrics::{self, Histograms, Metrics};
use oxray_rl::SampleBatch;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, LastIteration, TrainingState};
use crate::config::ExperimentConfig;
use crate::progress::{IterationTimes, Progress};

/// PPO's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct PpoState {
    kl_coeff: f64,
}

pub struct Ppo {
    config: ExperimentConfig,
    training: PpoConfig,
    env_runners: EnvRunnerGroup,
    learners: LearnerGroup<PpoLearner>,
    state: TrainingState<PpoState>,
    started: Instant,
    last_iteration: LastIteration,
}

impl Ppo {
    pub fn new(config: &ExperimentConfig, training: &PpoConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let learner_config = PpoLearnerConfig {
            learner: LearnerConfig {
                module: module.clone(),
                lr: training.lr_at(0),
                grad_clip: training.grad_clip,
                use_gpu: config.learners.num_gpus_per_learner > 0.0,
                seed: config.seed,
            },
            training: training.clone(),
        };
        let learners = LearnerGroup::new(
            learner_config,
            config.learners.num_learners,
            config.learners.num_gpus_per_learner,
        )?;
        let sampling = if training.sample_ahead {
            Sampling::Ahead
        } else {
            Sampling::Synchronous
        };
        let mut env_runners = shared::env_runners(config, module, sampling)?;
        env_runners.sync_weights(0, learners.flat_weights()?, 0)?;
        Ok(Ppo {
            config: config.clone(),
            training: training.clone(),
            env_runners,
            learners,
            state: TrainingState {
                progress: Progress::default(),
                algorithm: PpoState {
                    kl_coeff: training.kl_coeff,
                },
            },
            started: Instant::now(),
            last_iteration: LastIteration::default(),
        })
    }
}

impl Algorithm for Ppo {
    /// The counters and episode window change only once the update has
    /// succeeded, so after a non-finite loss the state (and the checkpoint
    /// saved from it) is the last good iteration's.
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.state.progress.iteration + 1;
        let cfg = &self.training;
        let sample_start = Instant::now();
        let mut batch = SampleBatch::default();
        let mut episodes = self.state.progress.episodes.clone();
        while batch.len() < cfg.train_batch_size {
            for rollout in self.env_runners.sample()? {
                episodes.push(&rollout.episodes);
                batch.append(&rollout.batch);
            }
        }
        let sample_s = sample_start.elapsed().as_secs_f64();
        let env_steps_sampled = self.state.progress.env_steps_sampled + batch.len() as u64;

        let learn_start = Instant::now();
        let params = UpdateParams {
            lr: cfg.lr_at(env_steps_sampled),
            kl_coeff: self.state.algorithm.kl_coeff,
            shuffle_seed: self
                .config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(iteration),
        };
        let trained = self
            .learners
            .update(&batch, params)
            .map_err(|e| TrainError::from_learner(e, iteration))?;
        let mut result = trained.metrics;
        let progress = &mut self.state.progress;
        progress.iteration = iteration;
        progress.env_steps_sampled = env_steps_sampled;
        progress.env_steps_trained += batch.len() as u64;
        progress.episodes = episodes;
        progress.weights_version += 1;
        self.state.algorithm.kl_coeff = shared::adapt_kl_coeff(
            self.state.algorithm.kl_coeff,
            result[metrics::MEAN_KL_LOSS],
            cfg.kl_target,
        );
        let weights = self.learners.flat_weights()?;
        self.env_runners
            .sync_weights(progress.weights_version, weights, env_steps_sampled)?;
        let learn_s = learn_start.elapsed().as_secs_f64();

        progress.report(
            &mut result,
            self.started,
            &IterationTimes {
                sampled: batch.len(),
                sample_s,
                trained: batch.len(),
                learn_s,
            },
        );
        result.extend(self.env_runners.fault_tolerance());
        self.last_iteration = LastIteration {
            action_dim: batch.action_dim,
            actions: batch.actions,
            learner: trained.histograms,
        };
        Ok(result)
    }

    fn histograms(&self) -> Result<Histograms, TrainError> {
        self.last_iteration.histograms(&self.learners.weights()?)
    }

    fn save(&self, checkpoint_dir: &Path) -> Result<PathBuf, TrainError> {
        self.state.save(
            checkpoint_dir,
            &self.config,
            self.started,
            &self.env_runners,
            self.learners.state()?,
        )
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        self.learners.set_state(&checkpoint.learner)?;
        let weights = self.learners.flat_weights()?;
        self.state = TrainingState::restore(checkpoint, &mut self.env_runners, weights)?;
        self.started = Instant::now();
        Ok(())
    }

    fn iteration(&self) -> u64 {
        self.state.progress.iteration
    }

    fn flat_weights(&self) -> Result<Vec<f32>, TrainError> {
        Ok(self.learners.flat_weights()?)
    }

    fn learner_devices(&self) -> Result<Vec<String>, TrainError> {
        Ok(self.learners.devices()?)
    }
}
