//! `TransformObservation` and `TransformReward`: apply a user function to
//! every observation or reward, Gymnasium's lambda wrappers.

use super::forward_env;
use crate::env::{Env, Reset, ResetOptions, Step};
use crate::error::EnvError;
use crate::spaces::{Space, Value};

/// Maps each observation through `f(obs, out)`; `observation_space` is the
/// space of the transformed observations (its flat length sizes `out`).
pub struct TransformObservation<E, F> {
    env: E,
    f: F,
    observation_space: Space,
    obs: Vec<f32>,
}

impl<E: Env, F: FnMut(&[f32], &mut [f32]) + Send> TransformObservation<E, F> {
    pub fn new(env: E, f: F, observation_space: Space) -> Self {
        let obs = vec![0.0; observation_space.flatdim()];
        Self {
            env,
            f,
            observation_space,
            obs,
        }
    }
}

impl<E: Env, F: FnMut(&[f32], &mut [f32]) + Send> Env for TransformObservation<E, F> {
    forward_env!(id, own_observation_space, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        let reset = self.env.reset(seed, options)?;
        (self.f)(reset.obs, &mut self.obs);
        Ok(Reset {
            obs: &self.obs,
            info: reset.info,
        })
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let step = self.env.step(action)?;
        (self.f)(step.obs, &mut self.obs);
        Ok(Step {
            obs: &self.obs,
            ..step
        })
    }
}

/// Maps each reward through `f`.
pub struct TransformReward<E, F> {
    env: E,
    f: F,
}

impl<E: Env, F: FnMut(f64) -> f64 + Send> TransformReward<E, F> {
    pub fn new(env: E, f: F) -> Self {
        Self { env, f }
    }
}

impl<E: Env, F: FnMut(f64) -> f64 + Send> Env for TransformReward<E, F> {
    forward_env!(id, spaces, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        self.env.reset(seed, options)
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let mut step = self.env.step(action)?;
        step.reward = (self.f)(step.reward);
        Ok(step)
    }
}
