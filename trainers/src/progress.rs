//! The counters every algorithm keeps and checkpoints besides its weights,
//! and the RLlib result keys reported from them each iteration.

use std::time::Instant;

use oxray_rl::metrics::{self, EpisodeWindow, Metrics};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub iteration: u64,
    pub env_steps_sampled: u64,
    pub env_steps_trained: u64,
    /// Training time of earlier sessions of a resumed run.
    pub time_before_s: f64,
    pub weights_version: u64,
    pub episodes: EpisodeWindow,
    pub env_runner_rngs: Vec<ChaCha8Rng>,
}

/// What one iteration did, for its result.
pub struct IterationTimes {
    pub sampled: usize,
    pub sample_s: f64,
    pub trained: usize,
    pub learn_s: f64,
}

impl IterationTimes {
    /// An iteration of an offline algorithm: `trained` recorded rows in
    /// `learn_s`, nothing sampled.
    pub fn offline(trained: usize, learn_s: f64) -> Self {
        IterationTimes {
            sampled: 0,
            sample_s: 0.0,
            trained,
            learn_s,
        }
    }
}

impl Progress {
    /// Adds the episode window, the lifetime counters and this iteration's
    /// throughput to `result`; `started` is when this session began.
    pub fn report(&self, result: &mut Metrics, started: Instant, times: &IterationTimes) {
        self.episodes.report(result);
        let time_total_s = self.time_before_s + started.elapsed().as_secs_f64();
        result.extend([
            (
                metrics::TRAINING_ITERATION.to_string(),
                self.iteration as f64,
            ),
            (metrics::TIME_TOTAL_S.to_string(), time_total_s),
            (
                metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME.to_string(),
                self.env_steps_sampled as f64,
            ),
            (
                metrics::NUM_ENV_STEPS_TRAINED_LIFETIME.to_string(),
                self.env_steps_trained as f64,
            ),
            (
                metrics::NUM_ENV_STEPS_SAMPLED.to_string(),
                times.sampled as f64,
            ),
            (
                metrics::NUM_ENV_STEPS_SAMPLED_PER_S.to_string(),
                times.sampled as f64 / times.sample_s,
            ),
            (
                metrics::NUM_ENV_STEPS_TRAINED_PER_S.to_string(),
                times.trained as f64 / times.learn_s,
            ),
            (
                metrics::ENV_RUNNER_SAMPLING_TIMER.to_string(),
                times.sample_s,
            ),
            (metrics::LEARNER_UPDATE_TIMER.to_string(), times.learn_s),
        ]);
    }
}
