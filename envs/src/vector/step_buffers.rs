//! The arrays a vector step hands out — observations, final observations,
//! rewards, flags and finished episodes — owned by the vector env and
//! refilled in place every step, so stepping allocates nothing. Public so
//! vector envs outside this crate (the Python bridge) keep them the same way.

use super::episodes::EpisodeTracker;
use super::{AutoresetMode, VectorStep};
use ndarray::Array2;

#[derive(Debug, Clone)]
pub struct StepBuffers {
    /// `num_envs x obs_dim`, the current observation of every sub-env.
    pub obs: Array2<f32>,
    /// The last observation of episodes that ended in this step (`SameStep`).
    pub final_obs: Array2<f32>,
    pub rewards: Vec<f64>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    pub episodes: EpisodeTracker,
}

impl StepBuffers {
    pub fn new(num_envs: usize, obs_dim: usize) -> Self {
        StepBuffers {
            obs: Array2::zeros((num_envs, obs_dim)),
            final_obs: Array2::zeros((num_envs, obs_dim)),
            rewards: vec![0.0; num_envs],
            terminated: vec![false; num_envs],
            truncated: vec![false; num_envs],
            episodes: EpisodeTracker::new(num_envs),
        }
    }

    /// This step's results as the [`VectorStep`] the trait returns.
    pub fn step(&self, mode: AutoresetMode) -> VectorStep<'_> {
        VectorStep {
            obs: self.obs.view(),
            rewards: &self.rewards,
            terminated: &self.terminated,
            truncated: &self.truncated,
            final_obs: (mode == AutoresetMode::SameStep).then(|| self.final_obs.view()),
            episodes: &self.episodes.finished,
        }
    }
}
