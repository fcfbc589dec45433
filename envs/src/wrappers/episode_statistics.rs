//! `RecordEpisodeStatistics`: adds the finished episode's return, length and
//! wall time to the `info` of its last step, as Gymnasium's `info["episode"]`.

use super::forward_env;
use crate::env::{Env, EpisodeStatistics, Reset, ResetOptions, Step};
use crate::error::EnvError;
use crate::spaces::Value;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RecordEpisodeStatistics<E> {
    env: E,
    episode_return: f64,
    length: u64,
    started: Instant,
}

impl<E: Env> RecordEpisodeStatistics<E> {
    pub fn new(env: E) -> Self {
        Self {
            env,
            episode_return: 0.0,
            length: 0,
            started: Instant::now(),
        }
    }
}

impl<E: Env> Env for RecordEpisodeStatistics<E> {
    forward_env!(id, spaces, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        self.episode_return = 0.0;
        self.length = 0;
        self.started = Instant::now();
        self.env.reset(seed, options)
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let mut step = self.env.step(action)?;
        self.episode_return += step.reward;
        self.length += 1;
        if step.done() {
            step.info.episode = Some(EpisodeStatistics {
                episode_return: self.episode_return,
                length: self.length,
                elapsed_secs: self.started.elapsed().as_secs_f64(),
            });
        }
        Ok(step)
    }
}
