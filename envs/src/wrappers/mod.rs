//! Composable wrappers, each an [`Env`] around a `Box<dyn Env>`-like inner env,
//! mirroring Gymnasium's wrappers of the same names.
//!
//! A wrapper that changes observations keeps its own observation buffer and
//! returns a borrow of it, so stacking wrappers never allocates per step.
//! [`Wrap`] adds builder-style methods (`env.time_limit(500)`) to any env.

mod actions;
mod episode_statistics;
mod frame_stack;
mod normalize;
mod time_limit;
mod transform;

pub use actions::{ClipAction, RescaleAction};
pub use episode_statistics::RecordEpisodeStatistics;
pub use frame_stack::FrameStack;
pub use normalize::{NormalizeObservation, NormalizeReward, RunningMeanStd};
pub use time_limit::TimeLimit;
pub use transform::{TransformObservation, TransformReward};

use crate::env::Env;

/// Builder-style wrapping, so stacks read in the order they apply.
pub trait Wrap: Env + Sized {
    fn time_limit(self, max_episode_steps: u64) -> TimeLimit<Self> {
        TimeLimit::new(self, max_episode_steps)
    }

    fn record_episode_statistics(self) -> RecordEpisodeStatistics<Self> {
        RecordEpisodeStatistics::new(self)
    }
}

impl<E: Env> Wrap for E {}

/// Forwards the `Env` methods a wrapper does not change to `self.env`. An
/// observation wrapper keeps its own `observation_space` field
/// (`own_observation_space`), an action wrapper its own `action_space`
/// (`own_action_space`).
macro_rules! forward_env {
    (id, spaces, render, state) => {
        fn observation_space(&self) -> &crate::spaces::Space {
            self.env.observation_space()
        }
        fn action_space(&self) -> &crate::spaces::Space {
            self.env.action_space()
        }
        forward_env!(id, render, state);
    };
    (id, own_observation_space, render, state) => {
        fn observation_space(&self) -> &crate::spaces::Space {
            &self.observation_space
        }
        fn action_space(&self) -> &crate::spaces::Space {
            self.env.action_space()
        }
        forward_env!(id, render, state);
    };
    (id, own_action_space, render, state) => {
        fn observation_space(&self) -> &crate::spaces::Space {
            self.env.observation_space()
        }
        fn action_space(&self) -> &crate::spaces::Space {
            &self.action_space
        }
        forward_env!(id, render, state);
    };
    (id, render, state) => {
        fn id(&self) -> &str {
            self.env.id()
        }
        fn render(&mut self) -> Result<crate::env::RgbImage, crate::error::EnvError> {
            self.env.render()
        }
        fn close(&mut self) {
            self.env.close()
        }
        fn state(&self) -> Result<Vec<f64>, crate::error::EnvError> {
            self.env.state()
        }
        fn set_state(&mut self, state: &[f64]) -> Result<(), crate::error::EnvError> {
            self.env.set_state(state)
        }
    };
}
pub(crate) use forward_env;
