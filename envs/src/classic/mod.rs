//! Gymnasium's classic-control environments.
//!
//! Each env is a [`Dynamics`] implementation: its constants, spaces, initial
//! state distribution and one `step` function written once, generic over the
//! [`Math`] used for sines, cosines and squares. [`ClassicEnv`] turns any `Dynamics`
//! into a scalar [`Env`] (using [`Libm`], bit-faithful to Gymnasium), and
//! `vector::soa` runs the very same `step` over many copies at once (using
//! the env's [`Dynamics::VectorMath`], [`Poly`] where parity allows, which
//! vectorizes). Nothing about the physics is written twice.

mod acrobot;
mod canvas;
mod cartpole;
pub mod math;
mod mountain_car;
mod pendulum;

pub use acrobot::Acrobot;
pub use cartpole::CartPole;
pub use math::{Libm, Math, Poly};
pub use mountain_car::{MountainCar, MountainCarContinuous};
pub use pendulum::Pendulum;

use crate::env::{Env, Info, Reset, ResetOptions, RgbImage, Step};
use crate::error::EnvError;
use crate::rng::{seeded_rng, EnvRng};
use crate::spaces::{Space, Value};
use rand::Rng;

/// The reward and termination of one transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub reward: f64,
    pub terminated: bool,
}

/// The physics of one classic-control env, shared by the scalar and the
/// vectorized implementations.
pub trait Dynamics: Clone + Send + Sync + 'static {
    /// Gymnasium's registered id.
    const ID: &'static str;
    /// Gymnasium's registered `max_episode_steps`.
    const MAX_EPISODE_STEPS: u32;
    /// Length of the physical state, Gymnasium's `env.unwrapped.state`.
    const STATE_LEN: usize;
    /// Length of the observation.
    const OBS_LEN: usize;

    /// The [`Math`] the vector fast path steps with: [`Poly`] where the
    /// parity tests show the trajectories stay within Gymnasium's (and the
    /// reward does not depend on the last bit of the state), [`Libm`] where
    /// only bit-exact arithmetic keeps rewards exactly equal.
    type VectorMath: Math;

    /// The internal state: the physical state first, then any bookkeeping a
    /// faithful step needs (e.g. the dtype Gymnasium holds the state in).
    type State: Copy + Default + AsRef<[f64]> + AsMut<[f64]> + Send + Sync;
    /// A validated action.
    type Action: Copy + Default + Send + Sync;

    fn observation_space(&self) -> Space;
    fn action_space(&self) -> Space;

    /// The action for a discrete index, `None` if outside the action space.
    fn discrete_action(&self, action: i64) -> Option<Self::Action> {
        let _ = action;
        None
    }

    /// The action for a continuous vector, `None` if not acceptable (wrong
    /// length, NaN, or out of bounds where Gymnasium does not clip).
    fn continuous_action(&self, action: &[f32]) -> Option<Self::Action> {
        let _ = action;
        None
    }

    /// Draws an initial state as Gymnasium's `reset` does.
    fn initial_state(
        &self,
        rng: &mut EnvRng,
        options: Option<&ResetOptions>,
    ) -> Result<Self::State, EnvError>;

    /// The internal state for a physical state of length `STATE_LEN`, as if
    /// assigned to `env.unwrapped.state` as a float64 array.
    fn state_from_physical(&self, physical: &[f64]) -> Self::State {
        let mut state = Self::State::default();
        state.as_mut()[..Self::STATE_LEN].copy_from_slice(physical);
        state
    }

    /// One transition, computed as Gymnasium computes it.
    fn step<M: Math>(&self, state: &mut Self::State, action: Self::Action) -> Transition;

    /// Writes the observation of `state` into `obs` (length `OBS_LEN`).
    fn observe<M: Math>(&self, state: &Self::State, obs: &mut [f32]);

    /// A frame of `state` in Gymnasium's layout and colours, if the env draws.
    fn render(&self, state: &Self::State) -> Option<RgbImage> {
        let _ = state;
        None
    }

    /// The reward Gymnasium gives for a terminal step when an earlier step
    /// already terminated and no reset came in between (only CartPole
    /// changes it).
    fn reward_after_termination(&self, reward: f64) -> f64 {
        reward
    }

    /// Converts a [`Value`] from the `Env` API into an action.
    fn action_from_value(&self, action: &Value) -> Option<Self::Action> {
        match action {
            Value::Int(index) => self.discrete_action(*index),
            Value::Floats(values) if values.len() == 1 => {
                self.continuous_action(&[values[0] as f32])
            }
            _ => None,
        }
    }
}

/// A scalar Gymnasium env from its [`Dynamics`].
#[derive(Debug, Clone)]
pub struct ClassicEnv<D: Dynamics> {
    dynamics: D,
    observation_space: Space,
    action_space: Space,
    rng: EnvRng,
    state: Option<D::State>,
    terminated: bool,
    obs: Vec<f32>,
}

impl<D: Dynamics> ClassicEnv<D> {
    pub fn new(dynamics: D) -> Self {
        Self {
            observation_space: dynamics.observation_space(),
            action_space: dynamics.action_space(),
            dynamics,
            rng: seeded_rng(None),
            state: None,
            terminated: false,
            obs: vec![0.0; D::OBS_LEN],
        }
    }

    pub fn dynamics(&self) -> &D {
        &self.dynamics
    }

    fn invalid_action(&self, action: &dyn std::fmt::Display) -> EnvError {
        EnvError::InvalidAction {
            env: D::ID.to_string(),
            action: action.to_string(),
            space: self.action_space.to_string(),
        }
    }
}

impl<D: Dynamics> Env for ClassicEnv<D> {
    fn id(&self) -> &str {
        D::ID
    }

    fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        if seed.is_some() {
            self.rng = seeded_rng(seed);
        }
        let state = self.dynamics.initial_state(&mut self.rng, options)?;
        self.dynamics.observe::<Libm>(&state, &mut self.obs);
        self.state = Some(state);
        self.terminated = false;
        Ok(Reset {
            obs: &self.obs,
            info: Info::default(),
        })
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let Some(parsed) = self.dynamics.action_from_value(action) else {
            return Err(self.invalid_action(action));
        };
        let state = self
            .state
            .as_mut()
            .ok_or_else(|| EnvError::ResetNeeded { env: D::ID.into() })?;
        let mut transition = self.dynamics.step::<Libm>(state, parsed);
        self.dynamics.observe::<Libm>(state, &mut self.obs);
        if self.terminated && transition.terminated {
            transition.reward = self.dynamics.reward_after_termination(transition.reward);
        }
        self.terminated |= transition.terminated;
        Ok(Step {
            obs: &self.obs,
            reward: transition.reward,
            terminated: transition.terminated,
            truncated: false,
            info: Info::default(),
        })
    }

    fn render(&mut self) -> Result<RgbImage, EnvError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| EnvError::ResetNeeded { env: D::ID.into() })?;
        self.dynamics
            .render(state)
            .ok_or_else(|| EnvError::Unsupported {
                env: D::ID.into(),
                operation: "render".into(),
            })
    }

    fn state(&self) -> Result<Vec<f64>, EnvError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| EnvError::ResetNeeded { env: D::ID.into() })?;
        Ok(state.as_ref()[..D::STATE_LEN].to_vec())
    }

    fn set_state(&mut self, physical: &[f64]) -> Result<(), EnvError> {
        check_physical_state(D::ID, D::STATE_LEN, physical)?;
        let state = self.dynamics.state_from_physical(physical);
        self.dynamics.observe::<Libm>(&state, &mut self.obs);
        // Like assigning `env.unwrapped.state`: whether the episode already
        // terminated is remembered until the next reset.
        self.state = Some(state);
        Ok(())
    }
}

/// Rejects a physical state of the wrong length or with non-finite entries.
pub fn check_physical_state(
    env: &str,
    expected_len: usize,
    physical: &[f64],
) -> Result<(), EnvError> {
    let reason = if physical.len() != expected_len {
        format!("expected {expected_len} values, got {}", physical.len())
    } else if let Some(i) = physical.iter().position(|x| !x.is_finite()) {
        format!("element {i} is {}", physical[i])
    } else {
        return Ok(());
    };
    Err(EnvError::InvalidState {
        env: env.to_string(),
        reason,
    })
}

/// Gymnasium's `utils.maybe_parse_reset_bounds`: `options["low"]`/`["high"]`
/// override the defaults, and must be numbers with `low <= high`.
fn reset_bounds(
    env: &str,
    options: Option<&ResetOptions>,
    low: f64,
    high: f64,
) -> Result<(f64, f64), EnvError> {
    let low = number_option(env, options, "low", low)?;
    let high = number_option(env, options, "high", high)?;
    if low > high {
        return Err(EnvError::InvalidOption {
            env: env.into(),
            name: "low".into(),
            reason: format!("lower bound ({low}) must be lower than higher bound ({high})"),
        });
    }
    Ok((low, high))
}

/// A numeric reset option, or `default` when absent.
fn number_option(
    env: &str,
    options: Option<&ResetOptions>,
    name: &str,
    default: f64,
) -> Result<f64, EnvError> {
    match options.and_then(|o| o.get(name)) {
        None => Ok(default),
        Some(value) => value.as_f64().ok_or_else(|| EnvError::InvalidOption {
            env: env.into(),
            name: name.into(),
            reason: format!("{value} could not be converted to a float"),
        }),
    }
}

/// `np_random.uniform(low, high)`: a draw from `[low, high)`.
fn uniform(rng: &mut EnvRng, low: f64, high: f64) -> f64 {
    if low < high {
        rng.gen_range(low..high)
    } else {
        low
    }
}
