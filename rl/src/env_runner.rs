//! The EnvRunner: a vector env plus a CPU copy of the algorithm's RLModule,
//! producing [`SampleBatch`]es of `rollout_fragment_length` steps per sub-env.
//! It acts through [`RLModule::compute_actions`] only, so it serves every
//! algorithm.
//!
//! It is a plain struct that is also an oxray-core actor, so `num_env_runners:
//! 0` samples in the driver with the very same code the remote actors run.
//! Per step it does one batched forward over all sub-envs (no gradients), draws
//! every action on the host and writes straight into the batch columns, which
//! were allocated once for the fragment. For a small MLP module the forward
//! runs in plain Rust on a copy of the weights taken whenever they change
//! ([`HostPolicy`]): for a few rows libtorch's per-op dispatch costs more than
//! the arithmetic. Other modules act through libtorch. The vector env resets finished
//! sub-envs within the same step and hands over their final observations,
//! which the batch keeps: truncated episodes are bootstrapped from them and
//! replay buffers store them as next observations. A runner asked to
//! (`record_to`, RLlib's offline `output`) also writes every episode it
//! finishes, step by step, to a file of its own (`offline_data`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use oxray_envs::{Actions, AutoresetMode, DType, EnvConfig, Space, VectorEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::metrics::EpisodeStats;
use crate::obs_buffer::ObsDType;
use crate::offline_data::{Episode, EpisodeWriter};
use crate::rl_module::{ActionSpace, HostPolicy, ModelConfig, ModuleKind, ModuleSpec, RLModule};
use crate::sample_batch::SampleBatch;
use crate::Error;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvRunnerConfig {
    /// Travels as JSON: its constructor kwargs are free-form.
    #[serde(with = "oxray_envs::env_config::json_string")]
    pub env: EnvConfig,
    pub num_envs: usize,
    pub rollout_fragment_length: usize,
    pub module: ModuleSpec,
    /// Sub-env `i` of runner `k` is seeded with `seed + k·num_envs + i`.
    pub seed: u64,
    pub worker_index: u64,
    /// Sample from the distribution (training) or take its mode.
    pub explore: bool,
    /// Record every episode `sample()` finishes into a new file in this
    /// directory (RLlib's offline `output`; an absolute path, as the runner
    /// may be another process).
    #[serde(default)]
    pub record_to: Option<PathBuf>,
}

/// What one `sample()` call returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub batch: SampleBatch,
    pub episodes: EpisodeStats,
    /// The weights version the actions were drawn with.
    pub weights_version: u64,
    /// `sample()` calls this runner process has served, this one included:
    /// a count that starts over tells the group the runner restarted.
    pub samples_served: u64,
}

pub struct EnvRunner {
    env: Box<dyn VectorEnv>,
    acting: Acting,
    /// Where `sample()` records the episodes it finishes, if asked to.
    recording: Option<(EpisodeSteps, EpisodeWriter)>,
    weights_version: u64,
    samples_served: u64,
    fragment_len: usize,
}

/// The policy side of a runner: the module, what it acts on and the buffers
/// it acts into; apart from the env so a step can borrow both.
struct Acting {
    module: Box<dyn RLModule>,
    /// The module's policy on the host, when it has one worth using; kept
    /// in step with the module's weights by [`Acting::weights_changed`].
    host: Option<HostPolicy>,
    /// The run's env steps sampled as of the last weights sync, for the
    /// module's exploration schedule.
    env_steps_sampled: u64,
    rng: ChaCha8Rng,
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

/// What a module needs to know of an env, read from its spaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvSpaces {
    pub observation_shape: Vec<usize>,
    pub observation_dtype: ObsDType,
    pub action_space: ActionSpace,
    /// The action space as the env states it, for errors.
    action_space_name: String,
}

/// Builds `env` once to read its spaces.
pub fn env_spaces(env: &EnvConfig) -> Result<EnvSpaces, Error> {
    let vector = make(env, 1)?;
    let space = vector.single_observation_space();
    let observation_shape = match space.shape() {
        shape if shape.is_empty() => vec![vector.observation_dim()],
        shape => shape,
    };
    let observation_dtype = match space.as_box().map(|b| b.dtype()) {
        Some(DType::U8) => ObsDType::U8,
        _ => ObsDType::F32,
    };
    Ok(EnvSpaces {
        observation_shape,
        observation_dtype,
        action_space: action_space(&env.id, vector.single_action_space())?,
        action_space_name: vector.single_action_space().to_string(),
    })
}

/// The module `kind` for `env`: observation shape, element type and action
/// space, read from the env's spaces (built here); an error when `model`
/// does not fit them (an image without `conv_filters` for its size).
pub fn module_spec(
    env: &EnvConfig,
    model: &ModelConfig,
    kind: ModuleKind,
) -> Result<ModuleSpec, Error> {
    module_spec_for(&env.id, &env_spaces(env)?, model, kind)
}

/// The module `kind` for an env `env_id` with `spaces`.
pub fn module_spec_for(
    env_id: &str,
    spaces: &EnvSpaces,
    model: &ModelConfig,
    kind: ModuleKind,
) -> Result<ModuleSpec, Error> {
    let action_space = spaces.action_space.clone();
    if let Some(reason) = kind.unsupported(&action_space) {
        return Err(Error::Incompatible(format!(
            "{}: the algorithm's module {reason}, the env's action space is {}",
            env_id, spaces.action_space_name
        )));
    }
    let spec = ModuleSpec {
        observation_shape: spaces.observation_shape.clone(),
        observation_dtype: spaces.observation_dtype,
        action_space,
        model: model.clone(),
        kind,
    };
    let encoder = spec.encoder().map_err(|error| Error::Model {
        env: env_id.to_string(),
        error,
    })?;
    // SAC's Q(s, a) for a Box reads the action beside a flat observation,
    // which a CNN does not have; for Discrete spaces Q(s, ·) reads the
    // observation alone.
    if matches!(spec.kind, ModuleKind::SoftActorCritic { .. })
        && matches!(spec.action_space, ActionSpace::Box { .. })
        && matches!(encoder, crate::rl_module::EncoderSpec::Cnn { .. })
    {
        return Err(Error::Incompatible(format!(
            "{}: SAC has no CNN encoder for a Box action space yet, the env's observations are images",
            env_id
        )));
    }
    Ok(spec)
}

/// The spaces of `env` read where the remote EnvRunners run instead of in
/// the driver, as RLlib asks a remote EnvRunner for them when it has some:
/// an env that builds only on the cluster's nodes, or only in the job's
/// working directory, trains without the driver building it. The task asks
/// for what one EnvRunner does (`num_cpus`) and spreads as they do; its
/// worker then serves the job's first EnvRunner.
///
/// The answer is kept for the life of this process, by env config: the
/// algorithm asks before its EnvRunners exist, while later asks (its
/// evaluation runners, a resume's check of the checkpoint's network) come
/// when the EnvRunners may hold every CPU a new task would wait for.
pub fn env_spaces_on_env_runner(env: &EnvConfig, num_cpus: f64) -> Result<EnvSpaces, Error> {
    static READ: Mutex<BTreeMap<String, EnvSpaces>> = Mutex::new(BTreeMap::new());
    let query = SpaceQuery { env: env.clone() };
    let key = serde_json::to_string(&query).map_err(|e| Error::Env(format!("{}: {e}", env.id)))?;
    let read_before = READ
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&key)
        .cloned();
    if let Some(spaces) = read_before {
        return Ok(spaces);
    }
    let read = read_env_spaces::options()
        .num_cpus(num_cpus)
        .scheduling_strategy(oxray_core::SchedulingStrategy::Spread)
        .remote(query)
        .get();
    let spaces = read.map_err(|error| match error {
        oxray_core::Error::TaskFailed { message, .. } => Error::OnEnvRunner(message),
        other => Error::Cluster(other),
    })?;
    READ.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(key, spaces.clone());
    Ok(spaces)
}

/// What [`env_spaces_on_env_runner`] sends: the env travels as JSON, as in
/// [`EnvRunnerConfig`] (its constructor kwargs are free-form).
#[derive(Serialize, Deserialize)]
struct SpaceQuery {
    #[serde(with = "oxray_envs::env_config::json_string")]
    env: EnvConfig,
}

#[oxray_core::remote]
fn read_env_spaces(query: SpaceQuery) -> Result<EnvSpaces, Error> {
    env_spaces(&query.env)
}

/// The runner's sub-envs from either backend; same-step autoreset so that
/// truncated episodes come with their final observations.
fn make(env: &EnvConfig, num_envs: usize) -> Result<Box<dyn VectorEnv>, Error> {
    Ok(oxray_gym::make_vec(env, num_envs, AutoresetMode::SameStep)?)
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
fn record_episodes(stats: &mut EpisodeStats, finished: &[oxray_envs::FinishedEpisode]) {
    for episode in finished {
        stats.returns.push(episode.episode_return as f32);
        stats.lengths.push(episode.length as u32);
    }
}

/// Each sub-env's episode so far, step by step, for recording: the
/// observation acted on before each step, the action and reward after it,
/// and the whole episode once it ends.
struct EpisodeSteps {
    playing: Vec<Episode>,
}

impl EpisodeSteps {
    fn new(num_envs: usize) -> Self {
        EpisodeSteps {
            playing: vec![Episode::default(); num_envs],
        }
    }

    /// Before a step: `obs`, each sub-env's current observation.
    fn observe(&mut self, obs: &[f32]) {
        let width = obs.len() / self.playing.len().max(1);
        for (episode, row) in self.playing.iter_mut().zip(obs.chunks_exact(width)) {
            episode.obs.push(row.to_vec());
        }
    }

    /// After a step: the sub-envs' `actions` and what the step gave; the
    /// episodes it ended, in sub-env order.
    fn step(&mut self, actions: &[f32], result: &oxray_envs::VectorStep<'_>) -> Vec<Episode> {
        let width = actions.len() / self.playing.len().max(1);
        let mut finished = Vec::new();
        let rows = self.playing.iter_mut().zip(actions.chunks_exact(width));
        for (env, (episode, action)) in rows.enumerate() {
            episode.actions.push(action.to_vec());
            episode.rewards.push(result.rewards[env] as f32);
            let (terminated, truncated) = (result.terminated[env], result.truncated[env]);
            if terminated || truncated {
                let final_obs = result
                    .final_obs
                    .as_ref()
                    .expect("same-step autoreset reports final observations");
                finished.push(Episode {
                    terminated,
                    truncated,
                    final_obs: final_obs.row(env).to_vec(),
                    ..std::mem::take(episode)
                });
            }
        }
        finished
    }
}

/// How long [`EnvRunner::evaluate`] plays (RLlib's `evaluation_duration`
/// and `evaluation_duration_unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvaluationDuration {
    Episodes(u64),
    /// Env steps over all sub-envs.
    Timesteps(u64),
}

impl Acting {
    /// One step of every sub-env: one batched forward over the current
    /// observations (no gradients), the actions and their log-probabilities
    /// into the scratch buffers, the env's actions from them.
    fn step<'e>(
        &mut self,
        env: &'e mut dyn VectorEnv,
    ) -> Result<oxray_envs::VectorStep<'e>, Error> {
        let n = env.num_envs();
        let obs_dim = self.module.spec().obs_dim();
        let action_dim = self.module.spec().action_space.action_dim();
        match &self.host {
            Some(host) => host.compute_actions(
                &self.obs,
                self.explore,
                self.env_steps_sampled,
                &mut self.rng,
                &mut self.actions,
                &mut self.logp,
            ),
            None => tch::no_grad(|| {
                let obs = Tensor::from_slice(&self.obs).view([n as i64, obs_dim as i64]);
                self.module.compute_actions(
                    &obs,
                    self.explore,
                    self.env_steps_sampled,
                    &mut self.rng,
                    &mut self.actions,
                    &mut self.logp,
                );
            }),
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
        Ok(env.step(actions)?)
    }

    /// Takes a new host copy of the module's policy after its weights changed.
    fn weights_changed(&mut self) {
        self.host = HostPolicy::for_module(self.module.as_ref(), self.logp.len());
    }

    /// The observations a step or reset left, as the next to act on.
    fn observe<'a>(&mut self, obs: impl IntoIterator<Item = &'a f32>) {
        for (dst, src) in self.obs.iter_mut().zip(obs) {
            *dst = *src;
        }
    }
}

#[oxray_core::actor]
impl EnvRunner {
    pub fn new(config: EnvRunnerConfig) -> Result<Self, Error> {
        crate::setup_torch_process();
        let mut env = make(&config.env, config.num_envs)?;
        let seed = config.seed + config.worker_index * config.num_envs as u64;
        let obs = env.reset(Some(seed))?.iter().copied().collect();
        let n = config.num_envs;
        let action_dim = config.module.action_space.action_dim();
        let env_actions = match &config.module.action_space {
            ActionSpace::Discrete { .. } => EnvActions::Discrete(vec![0; n]),
            ActionSpace::Box { low, high } => EnvActions::Continuous {
                clipped: vec![0.0; n * action_dim],
                low: low.clone(),
                high: high.clone(),
            },
        };
        let mut acting = Acting {
            module: config.module.build(Device::Cpu),
            host: None,
            env_steps_sampled: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0fac_7104),
            explore: config.explore,
            obs,
            actions: vec![0.0; n * action_dim],
            logp: vec![0.0; n],
            env_actions,
        };
        acting.weights_changed();
        let recording = match &config.record_to {
            Some(dir) => Some((EpisodeSteps::new(n), EpisodeWriter::create(dir)?)),
            None => None,
        };
        Ok(EnvRunner {
            env,
            acting,
            recording,
            weights_version: 0,
            samples_served: 0,
            fragment_len: config.rollout_fragment_length,
        })
    }

    /// Replaces the module's weights; `version` is echoed in later rollouts
    /// and `env_steps_sampled` (the run's count) drives exploration schedules.
    /// `weights` are the flat trainable parameters
    /// ([`RLModule::set_flat_weights`]).
    pub fn set_weights(
        &mut self,
        version: u64,
        weights: Vec<f32>,
        env_steps_sampled: u64,
    ) -> Result<(), Error> {
        self.acting.module.set_flat_weights(&weights)?;
        self.acting.weights_changed();
        self.weights_version = version;
        self.acting.env_steps_sampled = env_steps_sampled;
        Ok(())
    }

    /// Loads weights saved as a libtorch archive (a checkpoint's).
    pub fn load_weights(&mut self, archive: Vec<u8>) -> Result<(), Error> {
        self.acting.module.set_weights(&archive)?;
        self.acting.weights_changed();
        Ok(())
    }

    /// The action-sampling RNG, for checkpoints.
    pub fn rng_state(&self) -> ChaCha8Rng {
        self.acting.rng.clone()
    }

    pub fn set_rng_state(&mut self, rng: ChaCha8Rng) {
        self.acting.rng = rng;
    }

    /// Steps every sub-env `rollout_fragment_length` times.
    pub fn sample(&mut self) -> Result<Rollout, Error> {
        self.samples_served += 1;
        let spec = self.acting.module.spec();
        let (n, t, obs_dim) = (self.env.num_envs(), self.fragment_len, spec.obs_dim());
        let action_dim = spec.action_space.action_dim();
        let mut batch =
            SampleBatch::with_capacity(spec.batch_obs_dtype(), obs_dim, action_dim, t, n);
        let mut episodes = EpisodeStats::default();
        for step in 0..t {
            let at = |env: usize| env * t + step;
            for env in 0..n {
                batch.obs.write(
                    at(env) * obs_dim,
                    &self.acting.obs[env * obs_dim..(env + 1) * obs_dim],
                );
            }
            if let Some((steps, _)) = &mut self.recording {
                steps.observe(&self.acting.obs);
            }
            let result = self.acting.step(self.env.as_mut())?;
            if let Some((steps, writer)) = &mut self.recording {
                for finished in steps.step(&self.acting.actions, &result) {
                    writer.write(&finished)?;
                }
            }
            for env in 0..n {
                let i = at(env);
                batch.actions[i * action_dim..(i + 1) * action_dim].copy_from_slice(
                    &self.acting.actions[env * action_dim..(env + 1) * action_dim],
                );
                batch.action_logp[i] = self.acting.logp[env];
                batch.rewards[i] = result.rewards[env] as f32;
                batch.terminateds[i] = result.terminated[env];
                batch.truncateds[i] = result.truncated[env];
                if result.truncated[env] || result.terminated[env] {
                    let final_obs = result
                        .final_obs
                        .as_ref()
                        .expect("same-step autoreset reports final observations");
                    batch.final_index.push(i as u32);
                    batch
                        .final_obs
                        .extend_from_f32(final_obs.row(env).iter().copied());
                }
            }
            record_episodes(&mut episodes, result.episodes);
            self.acting.observe(result.obs.iter());
        }
        batch.bootstrap_obs.write(0, &self.acting.obs);
        if let Some((_, writer)) = &mut self.recording {
            // What this call recorded is on disk before its rollout is.
            writer.flush()?;
        }
        Ok(Rollout {
            batch,
            episodes,
            weights_version: self.weights_version,
            samples_served: self.samples_served,
        })
    }

    /// Plays from fresh resets (each sub-env's generator continuing) until
    /// `duration` is reached, acting with `explore` as configured, and
    /// returns the episodes that finished: the first `n` to finish for
    /// [`EvaluationDuration::Episodes`], every one that finished within the
    /// steps for [`EvaluationDuration::Timesteps`]. Nothing is kept for
    /// training.
    pub fn evaluate(&mut self, duration: EvaluationDuration) -> Result<EpisodeStats, Error> {
        self.play(duration, None)
    }

    fn play(
        &mut self,
        duration: EvaluationDuration,
        mut on_episode: Option<&mut dyn FnMut(Episode) -> Result<(), Error>>,
    ) -> Result<EpisodeStats, Error> {
        self.acting.observe(self.env.reset(None)?.iter());
        let n = self.env.num_envs();
        let mut playing = EpisodeSteps::new(n);
        let (mut recorded, mut steps) = (0, 0);
        let mut episodes = EpisodeStats::default();
        loop {
            let wanted_episodes = match duration {
                EvaluationDuration::Episodes(wanted) if episodes.returns.len() as u64 >= wanted => {
                    episodes.returns.truncate(wanted as usize);
                    episodes.lengths.truncate(wanted as usize);
                    return Ok(episodes);
                }
                EvaluationDuration::Timesteps(wanted) if steps >= wanted => return Ok(episodes),
                EvaluationDuration::Episodes(wanted) => wanted,
                EvaluationDuration::Timesteps(_) => u64::MAX,
            };
            if on_episode.is_some() {
                playing.observe(&self.acting.obs);
            }
            let result = self.acting.step(self.env.as_mut())?;
            if let Some(emit) = on_episode.as_mut() {
                for finished in playing.step(&self.acting.actions, &result) {
                    if recorded < wanted_episodes {
                        emit(finished)?;
                        recorded += 1;
                    }
                }
            }
            record_episodes(&mut episodes, result.episodes);
            self.acting.observe(result.obs.iter());
            steps += n as u64;
        }
    }
}

/// Used where the runner is owned, not through an actor handle (a callback
/// does not cross processes).
impl EnvRunner {
    /// [`EnvRunner::evaluate`], also handing each finished episode's steps
    /// to `on_episode` as it ends (RLlib's offline `output`), at most as
    /// many as the statistics count.
    pub fn record(
        &mut self,
        duration: EvaluationDuration,
        on_episode: &mut dyn FnMut(Episode) -> Result<(), Error>,
    ) -> Result<EpisodeStats, Error> {
        self.play(duration, Some(on_episode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two CartPole sub-envs recording six episodes: exactly those the
    /// statistics count, each with one observation, action and reward per
    /// step (its return and length the statistics' own), starting from a
    /// reset state (every value within ±0.05) and ending, when terminated,
    /// in a state past CartPole's limits.
    #[test]
    fn recorded_episodes_are_the_ones_counted_step_by_step() {
        let env = EnvConfig::new("CartPole-v1");
        let mut runner = EnvRunner::new(EnvRunnerConfig {
            module: module_spec(&env, &ModelConfig::default(), ModuleKind::ActorCritic).unwrap(),
            env,
            num_envs: 2,
            rollout_fragment_length: 1,
            seed: 11,
            worker_index: 0,
            explore: true,
            record_to: None,
        })
        .unwrap();
        let mut recorded = Vec::new();
        let stats = runner
            .record(EvaluationDuration::Episodes(6), &mut |episode| {
                recorded.push(episode);
                Ok(())
            })
            .unwrap();
        assert_eq!(recorded.len(), 6);
        let mut returns: Vec<f32> = recorded.iter().map(|e| e.rewards.iter().sum()).collect();
        let mut counted = stats.returns.clone();
        returns.sort_by(f32::total_cmp);
        counted.sort_by(f32::total_cmp);
        assert_eq!(returns, counted);
        for episode in &recorded {
            let steps = episode.obs.len();
            assert_eq!(
                (episode.actions.len(), episode.rewards.len()),
                (steps, steps)
            );
            assert!(
                episode.obs[0].iter().all(|x| x.abs() <= 0.05),
                "{:?}",
                episode.obs[0]
            );
            assert!(episode.actions.iter().all(|a| a[0] == 0.0 || a[0] == 1.0));
            assert!(episode.terminated || episode.truncated);
            let [x, _, theta, _] = episode.final_obs[..] else {
                panic!("final observation {:?}", episode.final_obs)
            };
            if episode.terminated {
                assert!(
                    x.abs() > 2.4 || theta.abs() > 0.2095,
                    "{:?}",
                    episode.final_obs
                );
            }
        }
    }
}
