//! `NormalizeObservation` and `NormalizeReward`: Gymnasium's running
//! normalizers, built on [`RunningMeanStd`] (Chan et al.'s parallel variance
//! update, with Gymnasium's initial count of 1e-4).

use super::forward_env;
use crate::env::{Env, Reset, ResetOptions, Step};
use crate::error::EnvError;
use crate::spaces::{BoxSpace, DType, Space, Value};

/// Running mean and variance of vectors of a fixed length.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningMeanStd {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub count: f64,
}

impl RunningMeanStd {
    pub fn new(len: usize) -> Self {
        Self {
            mean: vec![0.0; len],
            var: vec![1.0; len],
            count: 1e-4,
        }
    }

    /// Folds in one sample (a batch of one, as the single-env wrappers do).
    pub fn update(&mut self, sample: impl IntoIterator<Item = f64>) {
        let total = self.count + 1.0;
        for ((mean, var), x) in self.mean.iter_mut().zip(&mut self.var).zip(sample) {
            let delta = x - *mean;
            let new_mean = *mean + delta / total;
            let m2 = *var * self.count + delta * delta * self.count / total;
            *mean = new_mean;
            *var = m2 / total;
        }
        self.count = total;
    }
}

/// Normalizes observations to roughly zero mean and unit variance with
/// running statistics updated on every observation.
#[derive(Debug, Clone)]
pub struct NormalizeObservation<E> {
    env: E,
    observation_space: Space,
    rms: RunningMeanStd,
    epsilon: f64,
    obs: Vec<f32>,
}

impl<E: Env> NormalizeObservation<E> {
    pub fn new(env: E, epsilon: f64) -> Self {
        let dim = env.observation_space().flatdim();
        let space = BoxSpace::uniform(f64::NEG_INFINITY, f64::INFINITY, vec![dim], DType::F32)
            .expect("infinite bounds are ordered");
        Self {
            env,
            observation_space: Space::Box(space),
            rms: RunningMeanStd::new(dim),
            epsilon,
            obs: vec![0.0; dim],
        }
    }

    pub fn statistics(&self) -> &RunningMeanStd {
        &self.rms
    }

    fn normalize(rms: &mut RunningMeanStd, epsilon: f64, raw: &[f32], out: &mut [f32]) {
        rms.update(raw.iter().map(|x| f64::from(*x)));
        for (((o, x), mean), var) in out.iter_mut().zip(raw).zip(&rms.mean).zip(&rms.var) {
            *o = ((f64::from(*x) - mean) / (var + epsilon).sqrt()) as f32;
        }
    }
}

impl<E: Env> Env for NormalizeObservation<E> {
    forward_env!(id, own_observation_space, render, state);

    fn reset(
        &mut self,
        seed: Option<u64>,
        options: Option<&ResetOptions>,
    ) -> Result<Reset<'_>, EnvError> {
        let reset = self.env.reset(seed, options)?;
        Self::normalize(&mut self.rms, self.epsilon, reset.obs, &mut self.obs);
        Ok(Reset {
            obs: &self.obs,
            info: reset.info,
        })
    }

    fn step(&mut self, action: &Value) -> Result<Step<'_>, EnvError> {
        let step = self.env.step(action)?;
        Self::normalize(&mut self.rms, self.epsilon, step.obs, &mut self.obs);
        Ok(Step {
            obs: &self.obs,
            ..step
        })
    }
}

/// Scales rewards by the running standard deviation of the discounted return.
#[derive(Debug, Clone)]
pub struct NormalizeReward<E> {
    env: E,
    gamma: f64,
    epsilon: f64,
    rms: RunningMeanStd,
    discounted_return: f64,
}

impl<E: Env> NormalizeReward<E> {
    pub fn new(env: E, gamma: f64, epsilon: f64) -> Self {
        Self {
            env,
            gamma,
            epsilon,
            rms: RunningMeanStd::new(1),
            discounted_return: 0.0,
        }
    }

    pub fn statistics(&self) -> &RunningMeanStd {
        &self.rms
    }
}

impl<E: Env> Env for NormalizeReward<E> {
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
        let continuing = if step.terminated { 0.0 } else { 1.0 };
        self.discounted_return = self.discounted_return * self.gamma * continuing + step.reward;
        self.rms.update([self.discounted_return]);
        step.reward /= (self.rms.var[0] + self.epsilon).sqrt();
        Ok(step)
    }
}
