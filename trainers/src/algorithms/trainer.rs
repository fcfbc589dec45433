//! What every algorithm trains with: its EnvRunners, its LearnerGroup and
//! the training state a checkpoint carries, in one [`Trainer`]. The
//! `Algorithm` methods that only move these around (checkpoints, weights,
//! histograms, devices) are [`TrainerCore`]'s, once for every algorithm, so
//! an algorithm's own code is its training step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use oxray_rl::checkpoint::{self, Checkpoint};
use oxray_rl::env_runner::EnvRunnerConfig;
use oxray_rl::env_runner_group::{EnvRunnerGroup, Sampling};
use oxray_rl::learner::LearnerState;
use oxray_rl::learner_group::{LearnerActor, LearnerGroup};
use oxray_rl::metrics::{self, EpisodeWindow, Histograms, Metrics};
use oxray_rl::rl_module::{add_weight_histograms, ModuleSpec};
use oxray_rl::SampleBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::algorithm::TrainError;
use crate::config::ExperimentConfig;
use crate::progress::{IterationTimes, Progress};

/// An algorithm's EnvRunners and Learners, with `A` its own training state.
pub struct Trainer<L: LearnerActor, A> {
    pub config: ExperimentConfig,
    pub env_runners: EnvRunnerGroup,
    pub learners: LearnerGroup<L>,
    pub state: TrainingState<A>,
    /// When this session of the run started (resumed runs add the time
    /// before it from the checkpoint).
    pub started: Instant,
    pub last_iteration: LastIteration,
}

impl<L: LearnerActor, A: Serialize + DeserializeOwned + Clone> Trainer<L, A> {
    /// Starts the Learners from `learner_config` and the EnvRunners the
    /// config's `env_runners:` section asks for (acting with `module`,
    /// sampling as `sampling`), which get the Learners' first weights.
    pub fn new(
        config: &ExperimentConfig,
        learner_config: L::Config,
        module: ModuleSpec,
        sampling: Sampling,
        algorithm: A,
    ) -> Result<Self, TrainError> {
        let learners = LearnerGroup::new(
            learner_config,
            config.learners.num_learners,
            config.learners.cpus_per_learner(),
            config.learners.num_gpus_per_learner,
        )?;
        let mut env_runners = env_runners(config, module, sampling)?;
        env_runners.sync_weights(0, learners.flat_weights()?, 0)?;
        Ok(Trainer {
            config: config.clone(),
            env_runners,
            learners,
            state: TrainingState {
                progress: Progress {
                    episodes: EpisodeWindow::with_capacity(
                        config.reporting.metrics_num_episodes_for_smoothing,
                    ),
                    ..Progress::default()
                },
                algorithm,
            },
            started: Instant::now(),
            last_iteration: LastIteration::default(),
        })
    }
}

/// Rollouts gathered for one on-policy update, not yet counted: the
/// counters and the episode window change only once the update succeeded,
/// so after a non-finite loss the state is the last good iteration's.
pub struct OnPolicyBatch {
    pub batch: SampleBatch,
    /// The episode window with the batch's finished episodes added.
    pub episodes: EpisodeWindow,
    /// How many weight versions the batch's actions lag the latest weights,
    /// averaged over its steps.
    pub mean_weights_lag: f64,
    pub sample_s: f64,
}

impl<L: LearnerActor, A> Trainer<L, A> {
    /// Samples until at least `steps` env steps are in hand.
    pub fn sample_on_policy(&mut self, steps: usize) -> Result<OnPolicyBatch, TrainError> {
        let started = Instant::now();
        let progress = &self.state.progress;
        let mut batch = SampleBatch::default();
        let mut episodes = progress.episodes.clone();
        let mut lag_steps = 0;
        while batch.len() < steps {
            for rollout in self.env_runners.sample()? {
                episodes.push(&rollout.episodes);
                lag_steps += progress
                    .weights_version
                    .saturating_sub(rollout.weights_version)
                    * rollout.batch.len() as u64;
                batch.append(&rollout.batch);
            }
        }
        Ok(OnPolicyBatch {
            mean_weights_lag: lag_steps as f64 / batch.len() as f64,
            batch,
            episodes,
            sample_s: started.elapsed().as_secs_f64(),
        })
    }

    /// Counts iteration `iteration`'s on-policy update of `sampled` as done.
    pub fn count_on_policy_update(&mut self, iteration: u64, sampled: &OnPolicyBatch) {
        let progress = &mut self.state.progress;
        progress.iteration = iteration;
        progress.env_steps_sampled += sampled.batch.len() as u64;
        progress.env_steps_trained += sampled.batch.len() as u64;
        progress.episodes = sampled.episodes.clone();
    }

    /// Sends the Learners' weights to the EnvRunners as the next version.
    pub fn broadcast_weights(&mut self) -> Result<(), TrainError> {
        let progress = &mut self.state.progress;
        progress.weights_version += 1;
        let weights = self.learners.flat_weights()?;
        self.env_runners.sync_weights(
            progress.weights_version,
            weights,
            progress.env_steps_sampled,
        )?;
        Ok(())
    }

    /// Completes an iteration's `result` with the counters, the episode
    /// window, this iteration's throughput and the EnvRunners' health.
    pub fn report(&self, result: &mut Metrics, times: &IterationTimes) {
        self.state.progress.report(result, self.started, times);
        result.extend(self.env_runners.fault_tolerance());
    }

    /// Completes an on-policy iteration that trained on all of `sampled` in
    /// `learn_s`: its result, and what its histograms are made of (the
    /// batch's actions, the Learner's `learner_histograms`).
    pub fn finish_on_policy_iteration(
        &mut self,
        result: &mut Metrics,
        sampled: OnPolicyBatch,
        learn_s: f64,
        learner_histograms: Histograms,
    ) {
        let steps = sampled.batch.len();
        let times = IterationTimes {
            sampled: steps,
            sample_s: sampled.sample_s,
            trained: steps,
            learn_s,
        };
        self.report(result, &times);
        self.last_iteration = LastIteration {
            action_dim: sampled.batch.action_dim,
            actions: sampled.batch.actions,
            learner: learner_histograms,
        };
    }
}

/// A [`Trainer`] whatever its Learner type: what `Algorithm` delegates to.
pub trait TrainerCore {
    /// The whole training state but what the algorithm keeps beside the
    /// trainer (a replay buffer).
    fn checkpoint(&self) -> Result<Checkpoint, TrainError>;
    /// Takes the Learners' state, counters and the EnvRunners' RNGs from
    /// `checkpoint`, and sends the restored weights out.
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError>;
    fn histograms(&self) -> Result<Histograms, TrainError>;
    fn iteration(&self) -> u64;
    fn flat_weights(&self) -> Result<Vec<f32>, TrainError>;
    fn learner_devices(&self) -> Result<Vec<String>, TrainError>;
}

impl<L: LearnerActor, A: Serialize + DeserializeOwned + Clone> TrainerCore for Trainer<L, A> {
    fn checkpoint(&self) -> Result<Checkpoint, TrainError> {
        self.state.checkpoint(
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
        // The window is this run's config, not the checkpoint's.
        self.state
            .progress
            .episodes
            .set_capacity(self.config.reporting.metrics_num_episodes_for_smoothing);
        self.started = Instant::now();
        Ok(())
    }

    fn histograms(&self) -> Result<Histograms, TrainError> {
        self.last_iteration.histograms(&self.learners.weights()?)
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

/// The EnvRunners the config's `env_runners:` section asks for, acting with
/// `module`.
fn env_runners(
    config: &ExperimentConfig,
    module: ModuleSpec,
    sampling: Sampling,
) -> Result<EnvRunnerGroup, TrainError> {
    let runner_config = EnvRunnerConfig {
        env: config.env.clone(),
        num_envs: config.env_runners.num_envs_per_env_runner,
        rollout_fragment_length: config.rollout_fragment_length(),
        module,
        seed: config.seed,
        worker_index: 0,
        explore: true,
        record_to: config.offline_data.output_dir()?,
    };
    Ok(EnvRunnerGroup::new(
        &runner_config,
        config.env_runners.num_env_runners,
        config.env_runners.num_cpus_per_env_runner,
        sampling,
    )?)
}

/// What the latest iteration's histograms are made of, kept rather than
/// computed so an iteration that logs none pays only for moving them here.
#[derive(Default)]
pub struct LastIteration {
    pub actions: Vec<f32>,
    pub action_dim: usize,
    /// The Learner's (advantages, TD errors).
    pub learner: Histograms,
}

impl LastIteration {
    /// Sampled actions, the Learner's histograms and every tensor of
    /// `weights` (the Learner's, as a libtorch archive).
    pub fn histograms(&self, weights: &[u8]) -> Result<Histograms, TrainError> {
        let mut histograms = self.learner.clone();
        metrics::add_action_histograms(&self.actions, self.action_dim, &mut histograms);
        add_weight_histograms(weights, metrics::WEIGHTS, &mut histograms)
            .map_err(|e| TrainError::Learner(format!("cannot read the weights: {e}")))?;
        Ok(histograms)
    }
}

/// Writes `checkpoint` as `checkpoint_<iteration>` under `checkpoint_dir`.
pub fn write_checkpoint(
    checkpoint_dir: &Path,
    iteration: u64,
    checkpoint: &Checkpoint,
) -> Result<PathBuf, TrainError> {
    let name = format!("checkpoint_{iteration:06}");
    Ok(checkpoint::save(checkpoint_dir, &name, checkpoint)?)
}

/// What a checkpoint carries besides the weights: the counters every
/// algorithm keeps and the algorithm's own state `A`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState<A> {
    pub progress: Progress,
    pub algorithm: A,
}

impl<A: Serialize + DeserializeOwned + Clone> TrainingState<A> {
    /// A checkpoint of this state (this session's time added, the
    /// EnvRunners' RNG states taken) and the Learner's.
    pub fn checkpoint(
        &self,
        config: &ExperimentConfig,
        started: Instant,
        env_runners: &EnvRunnerGroup,
        learner: LearnerState,
    ) -> Result<Checkpoint, TrainError> {
        let mut state = self.clone();
        state.progress.time_before_s += started.elapsed().as_secs_f64();
        state.progress.env_runner_rngs = env_runners.rng_states()?;
        Ok(Checkpoint {
            algorithm: config.algorithm.as_str().to_string(),
            config: serde_json::to_value(config).expect("configs serialize"),
            state: serde_json::to_value(&state).expect("training state serializes"),
            learner,
            replay_buffer: None,
        })
    }

    /// The state `checkpoint` holds; the EnvRunners get `weights` (the
    /// restored Learner's) and the checkpoint's RNG states.
    pub fn restore(
        checkpoint: &Checkpoint,
        env_runners: &mut EnvRunnerGroup,
        weights: Vec<f32>,
    ) -> Result<Self, TrainError> {
        let state: Self = serde_json::from_value(checkpoint.state.clone())
            .map_err(|e| TrainError::Restore(format!("training state: {e}")))?;
        let progress = &state.progress;
        env_runners.sync_weights(
            progress.weights_version,
            weights,
            progress.env_steps_sampled,
        )?;
        env_runners.set_rng_states(progress.env_runner_rngs.clone())?;
        Ok(state)
    }
}
