//! The EnvRunner: a vector env plus a CPU copy of the policy, producing
//! [`SampleBatch`]es of `rollout_fragment_length` steps per sub-env.
//!
//! It is a plain struct that is also an oxray-core actor, so `num_env_runners:
//! 0` samples in the driver with the very same code the remote actors run.
//! Per step it does one batched forward over all sub-envs (no gradients), draws
//! every action on the host and writes straight into the batch columns, which
//! were allocated once for the fragment. The vector env resets finished
//! sub-envs within the same step and hands over their final observations, so
//! truncated episodes can be bootstrapped from V(final observation).

use oxray_envs::{Actions, AutoresetMode, Space, VecOptions, VectorEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::metrics::EpisodeStats;
use crate::models::{ActionSpace, ActorCritic, ModelConfig, PolicySpec};
use crate::sample_batch::SampleBatch;
use crate::Error;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvRunnerConfig {
    pub env: String,
    pub num_envs: usize,
    pub rollout_fragment_length: usize,
    pub policy: PolicySpec,
    /// Sub-env `i` of runner `k` is seeded with `seed + k·num_envs + i`.
    pub seed: u64,
    pub worker_index: u64,
    /// Sample from the distribution (training) or take its mode.
    pub explore: bool,
}

/// What one `sample()` call returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub batch: SampleBatch,
    pub episodes: EpisodeStats,
    /// The weights version the actions were drawn with.
    pub weights_version: u64,
}

pub struct EnvRunner {
    env: Box<dyn VectorEnv>,
    model: ActorCritic,
    weights_version: u64,
    rng: ChaCha8Rng,
    fragment_len: usize,
    explore: bool,
    /// The observation each sub-env currently shows, `[num_envs, obs_dim]`.
    obs: Vec<f32>,
    /// Per-step scratch buffers, reused across steps.
    actions: Vec<f32>,
    logp: Vec<f32>,
    env_actions: EnvActions,
}

/// The action buffer in the form the vector env takes.
enum EnvActions {
    Discrete(Vec<i64>),
    Continuous {
        clipped: Vec<f32>,
        low: Vec<f32>,
        high: Vec<f32>,
    },
}

/// The network shape for `env`: observation width and action space, read from
/// the env's spaces.
pub fn policy_spec(env: &str, model: &ModelConfig) -> Result<PolicySpec, Error> {
    let vector = make(env, 1)?;
    Ok(PolicySpec {
        obs_dim: vector.observation_dim(),
        action_space: action_space(env, vector.single_action_space())?,
        model: model.clone(),
    })
}

fn make(env: &str, num_envs: usize) -> Result<Box<dyn VectorEnv>, Error> {
    let options = VecOptions {
        autoreset_mode: AutoresetMode::SameStep,
        ..VecOptions::default()
    };
    oxray_envs::make_vec_with(env, num_envs, &options).map_err(|e| Error::Env(e.to_string()))
}

fn action_space(env: &str, space: &Space) -> Result<ActionSpace, Error> {
    match space {
        Space::Discrete { n, start: 0 } => Ok(ActionSpace::Discrete { n: *n as usize }),
        Space::Box(b) => Ok(ActionSpace::Box {
            low: b.low().iter().map(|&x| x as f32).collect(),
            high: b.high().iter().map(|&x| x as f32).collect(),
        }),
        other => Err(Error::Env(format!(
            "{env}: action space {other} is not supported (Discrete or Box only)"
        ))),
    }
}
#[oxray_core::actor]
impl EnvRunner {
    pub fn new(config: EnvRunnerConfig) -> Result<Self, Error> {
        crate::single_threaded_torch();
        let mut env = make(&config.env, config.num_envs)?;
        let seed = config.seed + config.worker_index * config.num_envs as u64;
        let obs = env
            .reset(Some(seed))
            .map_err(|e| Error::Env(e.to_string()))?
            .iter()
            .copied()
            .collect();
        let n = config.num_envs;
        let action_dim = config.policy.action_space.action_dim();
        let env_actions = match &config.policy.action_space {
            ActionSpace::Discrete { .. } => EnvActions::Discrete(vec![0; n]),
            ActionSpace::Box { low, high } => EnvActions::Continuous {
                clipped: vec![0.0; n * action_dim],
                low: low.clone(),
                high: high.clone(),
            },
        };
        Ok(EnvRunner {
            env,
            model: ActorCritic::new(&config.policy, Device::Cpu),
            weights_version: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0fac_7104),
            fragment_len: config.rollout_fragment_length,
            explore: config.explore,
            obs,
            actions: vec![0.0; n * action_dim],
            logp: vec![0.0; n],
            env_actions,
        })
    }

    /// Replaces the policy weights; `version` is echoed in later rollouts.
    pub fn set_weights(&mut self, version: u64, weights: Vec<u8>) -> Result<(), Error> {
        self.model.set_weights(&weights)?;
        self.weights_version = version;
        Ok(())
    }

    /// The action-sampling RNG, for checkpoints.
    pub fn rng_state(&self) -> ChaCha8Rng {
        self.rng.clone()
    }

    pub fn set_rng_state(&mut self, rng: ChaCha8Rng) {
        self.rng = rng;
    }

    /// Steps every sub-env `rollout_fragment_length` times.
    pub fn sample(&mut self) -> Result<Rollout, Error> {
        let spec = self.model.spec();
        let (n, t, obs_dim) = (self.env.num_envs(), self.fragment_len, spec.obs_dim);
        let action_dim = spec.action_space.action_dim();
        let mut batch = SampleBatch::with_capacity(obs_dim, action_dim, t, n);
        let mut episodes = EpisodeStats::default();
        for step in 0..t {
            let at = |env: usize| env * t + step;
            for env in 0..n {
                batch.obs[at(env) * obs_dim..(at(env) + 1) * obs_dim]
                    .copy_from_slice(&self.obs[env * obs_dim..(env + 1) * obs_dim]);
            }
            tch::no_grad(|| {
                let obs = Tensor::from_slice(&self.obs).view([n as i64, obs_dim as i64]);
                self.model.distribution(&obs).sample_into(
                    &mut self.rng,
                    self.explore,
                    &mut self.actions,
                    &mut self.logp,
                );
            });
            for env in 0..n {
                batch.actions[at(env) * action_dim..(at(env) + 1) * action_dim]
                    .copy_from_slice(&self.actions[env * action_dim..(env + 1) * action_dim]);
                batch.action_logp[at(env)] = self.logp[env];
            }
            let actions = match &mut self.env_actions {
                EnvActions::Discrete(indices) => {
                    for (index, &a) in indices.iter_mut().zip(&self.actions) {
                        *index = a as i64;
                    }
                    Actions::Discrete(indices)
                }
                EnvActions::Continuous { clipped, low, high } => {
                    for (i, (c, &a)) in clipped.iter_mut().zip(&self.actions).enumerate() {
                        let j = i % action_dim;
                        *c = a.clamp(low[j], high[j]);
                    }
                    Actions::Continuous(clipped)
                }
            };
            let result = self
                .env
                .step(actions)
                .map_err(|e| Error::Env(e.to_string()))?;
            for env in 0..n {
                let i = at(env);
                batch.rewards[i] = result.rewards[env] as f32;
                batch.terminateds[i] = result.terminated[env];
                batch.truncateds[i] = result.truncated[env];
                if result.truncated[env] && !result.terminated[env] {
                    let final_obs = result
                        .final_obs
                        .as_ref()
                        .expect("same-step autoreset reports final observations");
                    batch.truncation_index.push(i as u32);
                    batch.truncation_obs.extend(final_obs.row(env).iter());
                }
            }
            for episode in result.episodes {
                episodes.returns.push(episode.episode_return as f32);
                episodes.lengths.push(episode.length as u32);
            }
            for (dst, src) in self.obs.iter_mut().zip(result.obs.iter()) {
                *dst = *src;
            }
        }
        batch.bootstrap_obs.copy_from_slice(&self.obs);
        Ok(Rollout {
            batch,
            episodes,
            weights_version: self.weights_version,
        })
    }
}
