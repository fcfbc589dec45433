//! DQN (Mnih et al. 2015) with Rainbow's parts (Hessel et al. 2018): double
//! Q-learning, the dueling head, n-step returns and prioritized replay, plus
//! a target network with hard or soft updates and an ε-greedy schedule.
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the TD target and error, Huber or squared,
//! - `learner`: one gradient step per replayed minibatch, the target network,
//! - here, the training step: rounds of sampling (ε-greedy EnvRunners) into
//!   the replay buffer as n-step transitions, then, once learning has
//!   started, `training_intensity` worth of replayed minibatches, priority
//!   updates, target updates every `target_network_update_freq` env steps and
//!   a weights broadcast; an iteration runs rounds until it has sampled
//!   `min_sample_timesteps_per_iteration` steps.
//!
//! The replay buffer lives in the driver and is not checkpointed (RLlib's
//! default): a resumed run refills it before learning again.

mod config;
mod learner;
mod loss;

pub use config::{DqnConfig, ReplayBufferKind, ReplayBufferSettings, TdErrorLoss};
pub use learner::{DqnLearner, DqnLearnerConfig, DqnUpdateParams};
pub use loss::{dqn_loss, DqnLoss, Minibatch};

use std::path::{Path, PathBuf};
use std::time::Instant;

use oxray_rl::checkpoint::Checkpoint;
use oxray_rl::env_runner_group::EnvRunnerGroup;
use oxray_rl::learner::LearnerConfig;
use oxray_rl::learner_group::LearnerGroup;
use oxray_rl::metrics::{self, Histograms, Metrics};
use oxray_rl::replay_buffer::{NStep, ReplayBuffer, ReplayBufferConfig};
use oxray_rl::SampleBatch;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::{self as shared, LastIteration, TrainingState};
use crate::config::ExperimentConfig;
use crate::progress::IterationTimes;

/// DQN's own training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct DqnState {
    /// Env steps sampled at the last target network update.
    last_target_update: u64,
    num_target_updates: u64,
    /// Gradient steps owed by `training_intensity`, carried between rounds.
    update_credit: f64,
}

pub struct Dqn {
    config: ExperimentConfig,
    training: DqnConfig,
    env_runners: EnvRunnerGroup,
    learners: LearnerGroup<DqnLearner>,
    replay: ReplayBuffer,
    n_step: NStep,
    state: TrainingState<DqnState>,
    started: Instant,
    last_iteration: LastIteration,
}

impl Dqn {
    pub fn new(config: &ExperimentConfig, training: &DqnConfig) -> Result<Self, TrainError> {
        if config.learners.num_learners > 1 {
            return Err(TrainError::Unsupported(
                "DQN trains with one Learner (learners.num_learners 0 or 1)".into(),
            ));
        }
        let module = shared::module_spec(config)?;
        let learner_config = DqnLearnerConfig {
            learner: LearnerConfig {
                module: module.clone(),
                lr: training.lr,
                grad_clip: training.grad_clip,
                use_gpu: config.learners.num_gpus_per_learner > 0.0,
                seed: config.seed,
            },
            training: training.clone(),
        };
        let replay = ReplayBuffer::new(ReplayBufferConfig {
            capacity: training.replay_buffer_config.capacity,
            prioritized: training.replay_buffer_config.kind == ReplayBufferKind::Prioritized,
            alpha: training.replay_buffer_config.alpha,
            beta: training.replay_buffer_config.beta,
            epsilon: 1e-6,
            obs_dim: module.obs_dim(),
            action_dim: module.action_space.action_dim(),
            seed: config.seed,
        });
        let learners = LearnerGroup::new(
            learner_config,
            config.learners.num_learners,
            config.learners.num_gpus_per_learner,
        )?;
        // Off-policy: sampling ahead with weights a round old costs nothing.
        let mut env_runners = shared::env_runners(config, module, true)?;
        env_runners.sync_weights(0, learners.flat_weights()?, 0)?;
        Ok(Dqn {
            config: config.clone(),
            n_step: NStep::new(training.n_step, training.gamma as f32),
            training: training.clone(),
            env_runners,
            learners,
            replay,
            state: TrainingState::default(),
            started: Instant::now(),
            last_iteration: LastIteration::default(),
        })
    }

    /// Gradient steps this round owes: `training_intensity` × sampled /
    /// train_batch_size (fractions carried over), or one.
    fn updates_for(&mut self, sampled: usize) -> usize {
        match self.training.training_intensity {
            None => 1,
            Some(intensity) => {
                self.state.algorithm.update_credit +=
                    intensity * sampled as f64 / self.training.train_batch_size as f64;
                let updates = self.state.algorithm.update_credit.floor();
                self.state.algorithm.update_credit -= updates;
                updates as usize
            }
        }
    }
}

impl Algorithm for Dqn {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.state.progress.iteration + 1;
        let (mut sampled, mut trained) = (0, 0);
        let (mut sample_s, mut learn_s) = (0.0, 0.0);
        let mut learner_results = Metrics::new();
        while sampled < self.training.min_sample_timesteps_per_iteration {
            let sample_start = Instant::now();
            let mut batch = SampleBatch::default();
            for rollout in self.env_runners.sample()? {
                self.state.progress.episodes.push(&rollout.episodes);
                batch.append(&rollout.batch);
            }
            self.replay.add(self.n_step.add(&batch));
            self.last_iteration.action_dim = batch.action_dim;
            self.last_iteration.actions = batch.actions.clone();
            sampled += batch.len();
            let progress = &mut self.state.progress;
            progress.env_steps_sampled += batch.len() as u64;
            sample_s += sample_start.elapsed().as_secs_f64();

            if progress.env_steps_sampled < self.training.num_steps_sampled_before_learning_starts
                || self.replay.is_empty()
            {
                continue;
            }
            let learn_start = Instant::now();
            let mut trained_this_round = 0;
            for _ in 0..self.updates_for(batch.len()) {
                let env_steps = self.state.progress.env_steps_sampled;
                let update_target = env_steps - self.state.algorithm.last_target_update
                    >= self.training.target_network_update_freq;
                if update_target {
                    self.state.algorithm.last_target_update = env_steps;
                    self.state.algorithm.num_target_updates += 1;
                }
                let minibatch = self.replay.sample(self.training.train_batch_size);
                trained_this_round += minibatch.len();
                let result = self
                    .learners
                    .update(&minibatch, DqnUpdateParams { update_target })
                    .map_err(|e| TrainError::from_learner(e, iteration))?;
                self.last_iteration.learner =
                    Histograms::from([(metrics::TD_ERRORS.into(), result.td_errors.clone())]);
                self.replay
                    .update_priorities(minibatch.indices, result.td_errors);
                learner_results = result.metrics;
            }
            trained += trained_this_round;
            let progress = &mut self.state.progress;
            progress.env_steps_trained += trained_this_round as u64;
            progress.weights_version += 1;
            self.env_runners.sync_weights(
                progress.weights_version,
                self.learners.flat_weights()?,
                progress.env_steps_sampled,
            )?;
            learn_s += learn_start.elapsed().as_secs_f64();
        }
        self.state.progress.iteration = iteration;
        let mut result = learner_results;
        self.state.progress.report(
            &mut result,
            self.started,
            &IterationTimes {
                sampled,
                sample_s,
                trained,
                learn_s,
            },
        );
        result.extend(self.env_runners.fault_tolerance());
        result.extend([
            (
                metrics::CURR_EPSILON.to_string(),
                self.training
                    .epsilon
                    .value_at(self.state.progress.env_steps_sampled),
            ),
            (
                metrics::REPLAY_BUFFER_SIZE.to_string(),
                self.replay.len() as f64,
            ),
            (
                metrics::NUM_TARGET_UPDATES.to_string(),
                self.state.algorithm.num_target_updates as f64,
            ),
        ]);
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
        // The replay buffer starts empty: learning waits until it holds
        // `num_steps_sampled_before_learning_starts` steps again.
        self.training.num_steps_sampled_before_learning_starts +=
            self.state.progress.env_steps_sampled;
        self.started = Instant::now();
        Ok(())
    }

    fn iteration(&self) -> u64 {
        self.state.progress.iteration
    }

    fn learner_devices(&self) -> Result<Vec<String>, TrainError> {
        Ok(self.learners.devices()?)
    }
}
