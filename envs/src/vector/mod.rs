//! Vector environments: `N` copies of an env stepped together.
//!
//! Semantics follow Gymnasium 1.x: sub-env `i` is seeded with `seed + i`,
//! finished sub-envs are reset automatically (on the next step by default,
//! [`AutoresetMode::NextStep`], or within the same step,
//! [`AutoresetMode::SameStep`], which also exposes the final observations),
//! and finished episodes are reported with their return and length as
//! `RecordEpisodeStatistics` would. Observations live in one contiguous
//! row-major `num_envs x obs_dim` `f32` array, handed out as an
//! [`ndarray::ArrayView2`] that a model can read without copying.
//!
//! [`SyncVectorEnv`] runs any [`crate::Env`]s one after the other;
//! [`SoaVectorEnv`] is the fast path for the built-in envs, which keeps all
//! states structure-of-arrays and steps them in one tight, vectorized loop.

mod episodes;
mod kernel;
mod soa;
mod step_buffers;
mod sync;

pub use episodes::EpisodeTracker;
pub use soa::SoaVectorEnv;
pub use step_buffers::StepBuffers;
pub use sync::SyncVectorEnv;

use crate::error::EnvError;
use crate::spaces::Space;
use ndarray::ArrayView2;

/// When a finished sub-env is reset (Gymnasium's `AutoresetMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoresetMode {
    /// The step after the one that ended an episode resets the sub-env
    /// (ignoring its action) and returns the reset observation with reward 0
    /// and both flags false. Gymnasium's default.
    #[default]
    NextStep,
    /// The step that ends an episode resets the sub-env at once; its
    /// observation row is the reset observation and the final observation is
    /// in [`VectorStep::final_obs`].
    SameStep,
}

/// One action per sub-env, contiguous.
#[derive(Debug, Clone, Copy)]
pub enum Actions<'a> {
    /// For `Discrete` action spaces: `num_envs` indices.
    Discrete(&'a [i64]),
    /// For `Box` action spaces: `num_envs x action_dim`, row-major.
    Continuous(&'a [f32]),
}

impl Actions<'_> {
    fn len(&self) -> usize {
        match self {
            Actions::Discrete(a) => a.len(),
            Actions::Continuous(a) => a.len(),
        }
    }
}

/// An episode that ended during the last step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedEpisode {
    pub env_index: usize,
    pub episode_return: f64,
    pub length: u64,
}

/// What a vector step returns; every slice has one entry per sub-env.
#[derive(Debug)]
pub struct VectorStep<'a> {
    pub obs: ArrayView2<'a, f32>,
    pub rewards: &'a [f64],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
    /// In [`AutoresetMode::SameStep`]: the last observation of each episode
    /// that ended this step (rows where `terminated | truncated`; other rows
    /// are stale). `None` in `NextStep` mode, where `obs` already holds it.
    pub final_obs: Option<ArrayView2<'a, f32>>,
    /// The episodes that ended this step, in sub-env order.
    pub episodes: &'a [FinishedEpisode],
}

/// `N` environments stepped together.
pub trait VectorEnv: Send {
    /// The id of the sub-envs.
    fn id(&self) -> &str;

    fn num_envs(&self) -> usize;

    fn single_observation_space(&self) -> &Space;

    fn single_action_space(&self) -> &Space;

    fn autoreset_mode(&self) -> AutoresetMode;

    /// Length of one observation row.
    fn observation_dim(&self) -> usize {
        self.single_observation_space().flatdim()
    }

    /// The current observations, one row per sub-env.
    fn observations(&self) -> ArrayView2<'_, f32>;

    /// Resets every sub-env, sub-env `i` with `seed + i` when seeded.
    fn reset(&mut self, seed: Option<u64>) -> Result<ArrayView2<'_, f32>, EnvError>;

    /// Overwrites sub-env `index`'s physical state (Gymnasium's
    /// `env.unwrapped.state` layout), e.g. to replay from a chosen state. As
    /// in Gymnasium, observations change only with the next step.
    fn set_state(&mut self, index: usize, state: &[f64]) -> Result<(), EnvError>;

    /// Steps every sub-env with its action.
    fn step(&mut self, actions: Actions<'_>) -> Result<VectorStep<'_>, EnvError>;
}

/// The error for an action buffer of the wrong length.
fn wrong_action_count(id: &str, space: &Space, got: usize, expected: usize) -> EnvError {
    EnvError::InvalidAction {
        env: id.to_string(),
        action: format!("a buffer of {got} values"),
        space: format!("{expected} values of {space} (one per sub-env)"),
    }
}

/// The error for a sub-env index past `num_envs`.
fn no_such_sub_env(id: &str, index: usize, num_envs: usize) -> EnvError {
    EnvError::InvalidOption {
        env: id.to_string(),
        name: "index".into(),
        reason: format!("sub-env {index} does not exist ({num_envs} sub-envs)"),
    }
}

/// The error for one sub-env's action.
fn invalid_sub_action(id: &str, space: &Space, index: usize, action: String) -> EnvError {
    EnvError::InvalidAction {
        env: format!("{id} (sub-env {index})"),
        action,
        space: space.to_string(),
    }
}
