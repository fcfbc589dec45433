//! The [`Env`] trait: Gymnasium's `reset`/`step`/`render`/`close` contract.
//!
//! Observations are flat `f32` slices borrowed from the env (the layout
//! [`Space::flatten`] gives for the observation space), so stepping allocates
//! nothing and a caller copies only if it wants to keep them. Actions are
//! [`Value`]s checked against the action space. The trait is object safe so
//! the registry can hand out `Box<dyn Env>` and wrappers can stack freely.

use crate::error::EnvError;
use crate::spaces::{Space, Value};
use std::collections::BTreeMap;

/// Reset options, Gymnasium's `options` dict (e.g. `{"low": -0.1, "high": 0.1}`).
pub type ResetOptions = serde_json::Map<String, serde_json::Value>;

/// Return and length of one finished episode (Gymnasium's `info["episode"]`
/// `r` and `l`; `t`, the wall time, is in `elapsed_secs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeStatistics {
    pub episode_return: f64,
    pub length: u64,
    pub elapsed_secs: f64,
}

/// Gymnasium's `info` dict: the episode statistics that
/// `RecordEpisodeStatistics` adds, plus free-form entries. Empty infos do not
/// allocate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    pub episode: Option<EpisodeStatistics>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// What `reset` returns: `(obs, info)`.
#[derive(Debug)]
pub struct Reset<'a> {
    pub obs: &'a [f32],
    pub info: Info,
}

/// What `step` returns: `(obs, reward, terminated, truncated, info)`.
#[derive(Debug)]
pub struct Step<'a> {
    pub obs: &'a [f32],
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
    pub info: Info,
}

impl Step<'_> {
    /// Whether the episode is over, for either reason.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A Gymnasium environment.
pub trait Env: Send {
    /// The registered id (`"CartPole-v1"`), used in error messages.
    fn id(&self) -> &str;

    fn observation_space(&self) -> &Space;

    fn action_space(&self) -> &Space;

    /// Starts an episode; `seed` re-seeds the env's generator, as in Gymnasium.
    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError>;

    /// Advances one step; an action outside the action space is an error
    /// unless the env itself clips it, as Gymnasium's does.
    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError>;

    /// The current frame as an RGB image, where the env can draw itself.
    fn render(&mut self) -> Result<RgbImage, EnvError> {
        Err(EnvError::Unsupported {
            env: self.id().to_string(),
            operation: "render".into(),
        })
    }

    /// Releases what the env holds; the built-in envs hold nothing.
    fn close(&mut self) {}

    /// The physical state in the layout of Gymnasium's `env.unwrapped.state`.
    fn state(&self) -> Result<Vec<f64>, EnvError> {
        Err(EnvError::Unsupported {
            env: self.id().to_string(),
            operation: "state".into(),
        })
    }

    /// Overwrites the physical state (same layout as [`Env::state`]); the next
    /// `step` continues from it.
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        let _ = state;
        Err(EnvError::Unsupported {
            env: self.id().to_string(),
            operation: "set_state".into(),
        })
    }
}

impl<E: Env + ?Sized> Env for Box<E> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn observation_space(&self) -> &Space {
        (**self).observation_space()
    }
    fn action_space(&self) -> &Space {
        (**self).action_space()
    }
    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        (**self).reset(seed, options)
    }
    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        (**self).step(action)
    }
    fn render(&mut self) -> Result<RgbImage, EnvError> {
        (**self).render()
    }
    fn close(&mut self) {
        (**self).close()
    }
    fn state(&self) -> Result<Vec<f64>, EnvError> {
        (**self).state()
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), EnvError> {
        (**self).set_state(state)
    }
}

/// An RGB frame, `height x width x 3`, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}
