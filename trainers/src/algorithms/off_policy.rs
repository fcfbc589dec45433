//! The training step DQN and SAC share (RLlib's off-policy `training_step`):
//! rounds of sampling into a replay buffer as n-step transitions, then, once
//! learning has started, `training_intensity` worth of replayed minibatches
//! through the Learner, priority updates, target network updates every
//! `target_network_update_freq` env steps and a weights broadcast. An
//! iteration runs rounds until it has sampled
//! `min_sample_timesteps_per_iteration` steps.
//!
//! The algorithms differ only in their Learner (loss, networks) and their
//! `training:` section, so the loop is generic over an [`OffPolicyLearner`]
//! and each algorithm is `OffPolicy<ItsLearner>`.
//!
//! The replay buffer lives in the driver. Checkpoints keep it when
//! `store_buffer_in_checkpoints` is set (off by default, as in RLlib), and
//! a run resumed from such a checkpoint learns from it at once; otherwise a
//! resumed run refills it before learning again. The n-step transitions
//! still waiting for later steps are not kept (a few per env, as when an
//! EnvRunner is replaced).

use std::path::{Path, PathBuf};
use std::time::Instant;

use oxray_rl::checkpoint::Checkpoint;
use oxray_rl::env_runner_group::Sampling;
use oxray_rl::learner::LearnerConfig;
use oxray_rl::learner_group::LearnerActor;
use oxray_rl::metrics::{self, Histograms, Metrics};
use oxray_rl::replay_buffer::{NStep, ReplayBatch, ReplayBuffer, ReplayBufferConfig};
use oxray_rl::SampleBatch;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, check, Trainer, TrainerCore};
use crate::config::ExperimentConfig;
use crate::progress::IterationTimes;

/// `replay_buffer_config:` (RLlib's keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayBufferSettings {
    #[serde(rename = "type")]
    pub kind: ReplayBufferKind,
    pub capacity: usize,
    /// Priority exponent (prioritized replay only).
    pub alpha: f64,
    /// Importance-sampling exponent (prioritized replay only).
    pub beta: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayBufferKind {
    #[serde(rename = "PrioritizedEpisodeReplayBuffer")]
    Prioritized,
    #[serde(rename = "EpisodeReplayBuffer")]
    Uniform,
}

impl Default for ReplayBufferSettings {
    fn default() -> Self {
        ReplayBufferSettings {
            kind: ReplayBufferKind::Prioritized,
            capacity: 50_000,
            alpha: 0.6,
            beta: 0.4,
        }
    }
}

/// The keys of a `training:` section the loop reads, under the same names
/// in every off-policy algorithm.
#[derive(Clone, Debug, PartialEq)]
pub struct OffPolicySettings {
    pub lr: f64,
    pub grad_clip: Option<f64>,
    pub gamma: f64,
    pub train_batch_size: usize,
    pub n_step: usize,
    pub target_network_update_freq: u64,
    pub num_steps_sampled_before_learning_starts: u64,
    pub training_intensity: Option<f64>,
    pub replay_buffer_config: ReplayBufferSettings,
    pub min_sample_timesteps_per_iteration: usize,
    pub store_buffer_in_checkpoints: bool,
}

impl OffPolicySettings {
    /// Range checks of the shared keys, as (dotted key, what is wrong).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let replay = &self.replay_buffer_config;
        check::common(self.lr, self.gamma, self.train_batch_size, self.grad_clip)?;
        check::first_failed(&[
            (self.n_step >= 1, "n_step", "must be at least 1"),
            (
                self.training_intensity.is_none_or(|i| i > 0.0),
                "training_intensity",
                "must be positive",
            ),
            (
                replay.capacity >= 1,
                "replay_buffer_config.capacity",
                "must be at least 1",
            ),
            (
                replay.alpha >= 0.0,
                "replay_buffer_config.alpha",
                "must not be negative",
            ),
            (
                replay.beta >= 0.0,
                "replay_buffer_config.beta",
                "must not be negative",
            ),
            (
                self.min_sample_timesteps_per_iteration >= 1,
                "min_sample_timesteps_per_iteration",
                "must be at least 1",
            ),
        ])
    }
}

/// Sent with each replayed minibatch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetUpdate {
    /// Move the target network towards the online one after this step.
    pub update_target: bool,
}

/// A Learner the off-policy loop can drive.
pub trait OffPolicyLearner: LearnerActor<Batch = ReplayBatch, Params = TargetUpdate> {
    /// The algorithm's `training:` section.
    type Training: Clone;

    fn settings(training: &Self::Training) -> OffPolicySettings;

    /// The Learner's config: the generic part plus the algorithm's own.
    fn learner_config(learner: LearnerConfig, training: &Self::Training) -> Self::Config;

    /// Result keys only this algorithm reports, after `env_steps` sampled
    /// steps (DQN's ε).
    fn exploration_metrics(_training: &Self::Training, _env_steps: u64) -> Metrics {
        Metrics::new()
    }
}

/// The loop's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct OffPolicyState {
    /// Env steps sampled at the last target network update.
    last_target_update: u64,
    num_target_updates: u64,
    /// Gradient steps owed by `training_intensity`, carried between rounds.
    update_credit: f64,
}

pub struct OffPolicy<L: OffPolicyLearner> {
    training: L::Training,
    settings: OffPolicySettings,
    replay: ReplayBuffer,
    n_step: NStep,
    trainer: Trainer<L, OffPolicyState>,
}

impl<L: OffPolicyLearner> OffPolicy<L> {
    pub fn new(config: &ExperimentConfig, training: &L::Training) -> Result<Self, TrainError> {
        if config.learners.num_learners > 1 {
            return Err(TrainError::Unsupported(format!(
                "{} trains with one Learner (learners.num_learners 0 or 1)",
                L::ALGORITHM
            )));
        }
        let settings = L::settings(training);
        let module = shared::module_spec(config)?;
        let learner_config = L::learner_config(
            shared::learner_config(config, &module, settings.lr, settings.grad_clip),
            training,
        );
        let replay_settings = &settings.replay_buffer_config;
        let replay = ReplayBuffer::new(ReplayBufferConfig {
            capacity: replay_settings.capacity,
            prioritized: replay_settings.kind == ReplayBufferKind::Prioritized,
            alpha: replay_settings.alpha,
            beta: replay_settings.beta,
            epsilon: 1e-6,
            obs_dim: module.obs_dim(),
            obs_dtype: module.observation_dtype,
            obs_planes: module
                .encoder()
                .map_or(1, |encoder| encoder.observation_planes()),
            action_dim: module.action_space.action_dim(),
            seed: config.seed,
        });
        // Off-policy: sampling ahead with weights a round old costs nothing.
        let trainer = Trainer::new(
            config,
            learner_config,
            module,
            Sampling::Ahead,
            OffPolicyState::default(),
        )?;
        Ok(OffPolicy {
            n_step: NStep::new(settings.n_step, settings.gamma as f32),
            training: training.clone(),
            settings,
            replay,
            trainer,
        })
    }

    /// Gradient steps this round owes: `training_intensity` × sampled /
    /// train_batch_size (fractions carried over), or one.
    fn updates_for(&mut self, sampled: usize) -> usize {
        match self.settings.training_intensity {
            None => 1,
            Some(intensity) => {
                self.trainer.state.algorithm.update_credit +=
                    intensity * sampled as f64 / self.settings.train_batch_size as f64;
                let updates = self.trainer.state.algorithm.update_credit.floor();
                self.trainer.state.algorithm.update_credit -= updates;
                updates as usize
            }
        }
    }

    /// One round's learning: replayed minibatches, priority and target
    /// updates, then the weights broadcast. Returns (steps trained, the last
    /// update's metrics).
    fn learn_round(
        &mut self,
        sampled: usize,
        iteration: u64,
    ) -> Result<(usize, Option<Metrics>), TrainError> {
        let mut trained = 0;
        let mut last_metrics = None;
        for _ in 0..self.updates_for(sampled) {
            let env_steps = self.trainer.state.progress.env_steps_sampled;
            let update_target = env_steps - self.trainer.state.algorithm.last_target_update
                >= self.settings.target_network_update_freq;
            if update_target {
                self.trainer.state.algorithm.last_target_update = env_steps;
                self.trainer.state.algorithm.num_target_updates += 1;
            }
            let minibatch = self.replay.sample(self.settings.train_batch_size);
            trained += minibatch.len();
            let result = self
                .trainer
                .learners
                .update(&minibatch, TargetUpdate { update_target })
                .map_err(|e| TrainError::from_learner(e, iteration))?;
            self.trainer.last_iteration.learner =
                Histograms::from([(metrics::TD_ERRORS.into(), result.td_errors.clone())]);
            self.replay
                .update_priorities(minibatch.indices, result.td_errors);
            last_metrics = Some(result.metrics);
        }
        self.trainer.state.progress.env_steps_trained += trained as u64;
        self.trainer.broadcast_weights()?;
        Ok((trained, last_metrics))
    }
}

impl<L: OffPolicyLearner> Algorithm for OffPolicy<L> {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.trainer.state.progress.iteration + 1;
        let (mut sampled, mut trained) = (0, 0);
        let (mut sample_s, mut learn_s) = (0.0, 0.0);
        let mut learner_results = Metrics::new();
        while sampled < self.settings.min_sample_timesteps_per_iteration {
            let sample_start = Instant::now();
            let mut batch = SampleBatch::default();
            for rollout in self.trainer.env_runners.sample()? {
                self.trainer.state.progress.episodes.push(&rollout.episodes);
                batch.append(&rollout.batch);
            }
            self.replay.add(self.n_step.add(&batch));
            self.trainer.last_iteration.action_dim = batch.action_dim;
            self.trainer.last_iteration.actions = batch.actions.clone();
            sampled += batch.len();
            self.trainer.state.progress.env_steps_sampled += batch.len() as u64;
            sample_s += sample_start.elapsed().as_secs_f64();

            if self.trainer.state.progress.env_steps_sampled
                < self.settings.num_steps_sampled_before_learning_starts
                || self.replay.is_empty()
            {
                continue;
            }
            let learn_start = Instant::now();
            let (trained_this_round, metrics) = self.learn_round(batch.len(), iteration)?;
            trained += trained_this_round;
            if let Some(metrics) = metrics {
                learner_results = metrics;
            }
            learn_s += learn_start.elapsed().as_secs_f64();
        }
        self.trainer.state.progress.iteration = iteration;
        let mut result = learner_results;
        self.trainer.report(
            &mut result,
            &IterationTimes {
                sampled,
                sample_s,
                trained,
                learn_s,
            },
        );
        result.extend(L::exploration_metrics(
            &self.training,
            self.trainer.state.progress.env_steps_sampled,
        ));
        result.extend([
            (
                metrics::REPLAY_BUFFER_SIZE.to_string(),
                self.replay.len() as f64,
            ),
            (
                metrics::NUM_TARGET_UPDATES.to_string(),
                self.trainer.state.algorithm.num_target_updates as f64,
            ),
        ]);
        Ok(result)
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }

    fn save(&self, checkpoint_dir: &Path) -> Result<PathBuf, TrainError> {
        let mut checkpoint = self.trainer.checkpoint()?;
        if self.settings.store_buffer_in_checkpoints {
            checkpoint.replay_buffer = Some(self.replay.snapshot());
        }
        shared::write_checkpoint(checkpoint_dir, self.iteration(), &checkpoint)
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        // The buffer first: one that does not fit this config fails the
        // resume before anything else has changed.
        if let Some(bytes) = &checkpoint.replay_buffer {
            self.replay = ReplayBuffer::from_snapshot(self.replay.config().clone(), bytes)
                .map_err(|e| TrainError::Restore(format!("its replay buffer {e}")))?;
        }
        self.trainer.restore(checkpoint)?;
        if checkpoint.replay_buffer.is_none() {
            // The replay buffer starts empty: learning waits until it holds
            // `num_steps_sampled_before_learning_starts` steps again.
            self.settings.num_steps_sampled_before_learning_starts +=
                self.trainer.state.progress.env_steps_sampled;
        }
        Ok(())
    }
}
