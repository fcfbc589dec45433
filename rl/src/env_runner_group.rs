//! The EnvRunners of one algorithm: a single in-process runner when
//! `num_env_runners` is 0, otherwise that many oxray-core actors.
//!
//! Weights go out once per iteration through the object store with a version
//! number. With remote runners the next `sample()` is requested as soon as the
//! current one is collected, so sampling overlaps the Learner's update; those
//! actions come from weights one version old, which PPO's importance ratio
//! r_t(θ) accounts for (each rollout records the version it used).

use oxray_core::{ActorHandle, ObjectRef};
use rand_chacha::ChaCha8Rng;

use crate::env_runner::{EnvRunner, EnvRunnerConfig, Rollout};
use crate::Error;

pub enum EnvRunnerGroup {
    Local(Box<EnvRunner>),
    Remote {
        runners: Vec<ActorHandle<EnvRunner>>,
        /// Samples requested and not yet collected.
        in_flight: Vec<ObjectRef<Rollout>>,
        /// `set_weights` calls not yet confirmed.
        weight_acks: Vec<ObjectRef<()>>,
    },
}

impl EnvRunnerGroup {
    /// Runner `k` (1-based for actors, 0 for the local one) seeds its sub-envs
    /// after runner `k − 1`'s.
    pub fn new(
        config: &EnvRunnerConfig,
        num_env_runners: usize,
        num_cpus_per_env_runner: f64,
    ) -> Result<Self, Error> {
        if num_env_runners == 0 {
            return Ok(EnvRunnerGroup::Local(Box::new(EnvRunner::new(
                config.clone(),
            )?)));
        }
        let runners = (1..=num_env_runners as u64)
            .map(|worker_index| {
                EnvRunner::options()
                    .num_cpus(num_cpus_per_env_runner)
                    .max_restarts(1)
                    .remote(EnvRunnerConfig {
                        worker_index,
                        ..config.clone()
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EnvRunnerGroup::Remote {
            runners,
            in_flight: Vec::new(),
            weight_acks: Vec::new(),
        })
    }

    /// One `sample()` from every runner.
    pub fn sample(&mut self) -> Result<Vec<Rollout>, Error> {
        match self {
            EnvRunnerGroup::Local(runner) => Ok(vec![runner.sample()?]),
            EnvRunnerGroup::Remote {
                runners,
                in_flight,
                weight_acks,
            } => {
                oxray_core::get_all(weight_acks)?;
                weight_acks.clear();
                if in_flight.is_empty() {
                    *in_flight = runners.iter().map(|r| r.sample()).collect();
                }
                let rollouts = oxray_core::get_all(in_flight)?;
                *in_flight = runners.iter().map(|r| r.sample()).collect();
                Ok(rollouts)
            }
        }
    }

    pub fn sync_weights(&mut self, version: u64, weights: Vec<u8>) -> Result<(), Error> {
        match self {
            EnvRunnerGroup::Local(runner) => runner.set_weights(version, weights),
            EnvRunnerGroup::Remote {
                runners,
                weight_acks,
                ..
            } => {
                let shared = oxray_core::put(&weights)?;
                weight_acks.extend(runners.iter().map(|r| r.set_weights(version, &shared)));
                Ok(())
            }
        }
    }

    /// Each runner's action-sampling RNG, for checkpoints.
    pub fn rng_states(&self) -> Result<Vec<ChaCha8Rng>, Error> {
        match self {
            EnvRunnerGroup::Local(runner) => Ok(vec![runner.rng_state()]),
            EnvRunnerGroup::Remote { runners, .. } => {
                let states: Vec<_> = runners.iter().map(|r| r.rng_state()).collect();
                Ok(oxray_core::get_all(&states)?)
            }
        }
    }

    /// Restores what [`EnvRunnerGroup::rng_states`] returned; runners beyond
    /// the saved ones (a resumed run with more of them) keep their own.
    pub fn set_rng_states(&mut self, states: Vec<ChaCha8Rng>) -> Result<(), Error> {
        match self {
            EnvRunnerGroup::Local(runner) => {
                if let Some(state) = states.into_iter().next() {
                    runner.set_rng_state(state);
                }
                Ok(())
            }
            EnvRunnerGroup::Remote { runners, .. } => {
                let acks: Vec<_> = runners
                    .iter()
                    .zip(states)
                    .map(|(r, state)| r.set_rng_state(state))
                    .collect();
                oxray_core::get_all(&acks)?;
                Ok(())
            }
        }
    }
}
