//! `TimeLimit`: truncates an episode after `max_episode_steps` steps, the
//! wrapper Gymnasium's registry applies from `max_episode_steps`.

use super::forward_env;
use crate::env::{Env, Reset, ResetOptions, Step};
use crate::error::EnvError;
use crate::spaces::Value;

#[derive(Debug, Clone)]
pub struct TimeLimit<E> {
    env: E,
    max_episode_steps: u64,
    elapsed_steps: u64,
}

impl<E: Env> TimeLimit<E> {
    pub fn new(env: E, max_episode_steps: u64) -> Self {
        Self {
            env,
            max_episode_steps,
            elapsed_steps: 0,
        }
    }

    pub fn max_episode_steps(&self) -> u64 {
        self.max_episode_steps
    }

    pub fn inner(&self) -> &E {
        &self.env
    }
}

impl<E: Env> Env for TimeLimit<E> {
    forward_env!(id, spaces, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        self.elapsed_steps = 0;
        self.env.reset(seed, options)
    }

    #[inline]
    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let mut step = self.env.step(action)?;
        self.elapsed_steps += 1;
        step.truncated |= self.elapsed_steps >= self.max_episode_steps;
        Ok(step)
    }
}
