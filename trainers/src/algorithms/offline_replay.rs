//! The training step of the offline algorithms that learn from a
//! recording's transitions (CQL, IQL): the recording is read once as n-step
//! transitions (checked against the env's observation and action sizes)
//! into a uniform replay buffer sized to it, then each iteration takes
//! `dataset_num_iters_per_learner` (or one pass's worth of) gradient steps
//! on minibatches drawn from it, counting them for the target network
//! updates and for what the algorithm schedules by step (CQL's `bc_iters`).
//!
//! The counts are the run's algorithm state, so a resumed run carries on
//! with them; they change only once every update of the iteration has
//! succeeded, so after a non-finite loss the state is the last good
//! iteration's.

use std::time::Instant;

use oxray_rl::learner_group::LearnerActor;
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::replay_buffer::{ReplayBatch, ReplayBuffer, ReplayBufferConfig};
use oxray_rl::rl_module::{ActionSpace, ModuleSpec};
use serde::{Deserialize, Serialize};

use crate::algorithm::TrainError;
use crate::algorithms::{self as shared, Trainer};
use crate::config::ExperimentConfig;
use crate::progress::IterationTimes;

/// Gradient steps taken so far, the run's algorithm state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GradientSteps {
    pub num_grad_updates: u64,
    /// Gradient steps taken at the last target network update.
    pub last_target_update: u64,
    pub num_target_updates: u64,
}

/// How an algorithm's `training:` section sizes the step.
pub struct Schedule {
    pub n_step: usize,
    pub gamma: f64,
    pub train_batch_size: usize,
    /// Gradient steps between target network updates (0: after every one).
    pub target_network_update_freq: u64,
    /// Gradient steps per iteration; one pass's worth when absent.
    pub dataset_num_iters_per_learner: Option<usize>,
}

pub struct OfflineReplay {
    schedule: Schedule,
    /// Every recorded transition, replayed uniformly.
    replay: ReplayBuffer,
}

impl OfflineReplay {
    /// Reads `offline_data.input_` for the algorithm's module, which
    /// learns continuous (Box) actions (a Discrete env is refused by name);
    /// with that module.
    pub fn read(
        config: &ExperimentConfig,
        schedule: Schedule,
    ) -> Result<(Self, ModuleSpec), TrainError> {
        let module = shared::module_spec(config)?;
        if !matches!(module.action_space, ActionSpace::Box { .. }) {
            return Err(TrainError::Unsupported(format!(
                "{} learns continuous (Box) actions; {}'s are Discrete (BC and MARWIL learn \
                 Discrete ones offline)",
                config.algorithm.as_str(),
                config.env.id
            )));
        }
        let recorded = shared::read_offline_data(config, &module)?;
        let transitions = recorded.transitions(schedule.n_step, schedule.gamma as f32);
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
        Ok((OfflineReplay { schedule, replay }, module))
    }

    /// Gradient steps per iteration: as configured, or one pass's worth.
    fn steps_per_iteration(&self) -> usize {
        let s = &self.schedule;
        s.dataset_num_iters_per_learner
            .unwrap_or_else(|| self.replay.len().div_ceil(s.train_batch_size))
    }

    /// One iteration: its gradient steps through `trainer`'s Learners, each
    /// sent `params(steps before it, whether the target networks follow
    /// after it)`; the last update's metrics with the iteration's counts.
    pub fn train<L>(
        &mut self,
        trainer: &mut Trainer<L, GradientSteps>,
        params: impl Fn(&GradientSteps, bool) -> L::Params,
    ) -> Result<Metrics, TrainError>
    where
        L: LearnerActor<Batch = ReplayBatch>,
    {
        let iteration = trainer.state.progress.iteration + 1;
        let learn_start = Instant::now();
        let mut steps = trainer.state.algorithm.clone();
        let (mut trained, mut result) = (0, Metrics::new());
        for _ in 0..self.steps_per_iteration() {
            let update_target = steps.num_grad_updates - steps.last_target_update
                >= self.schedule.target_network_update_freq;
            let params = params(&steps, update_target);
            if update_target {
                steps.last_target_update = steps.num_grad_updates;
                steps.num_target_updates += 1;
            }
            let minibatch = self.replay.sample(self.schedule.train_batch_size);
            trained += minibatch.len();
            result = trainer
                .learners
                .update(&minibatch, params)
                .map_err(|e| TrainError::from_learner(e, iteration))?
                .metrics;
            steps.num_grad_updates += 1;
        }
        result.insert(
            metrics::NUM_TARGET_UPDATES.to_string(),
            steps.num_target_updates as f64,
        );
        let state = &mut trainer.state;
        state.algorithm = steps;
        state.progress.iteration = iteration;
        state.progress.env_steps_trained += trained as u64;
        let times = IterationTimes::offline(trained, learn_start.elapsed().as_secs_f64());
        trainer.report(&mut result, &times);
        Ok(result)
    }
}
