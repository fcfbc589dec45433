//! The environment registry: ids to constructors, with the time limits and
//! keyword arguments Gymnasium registers them with.
//!
//! `make("CartPole-v1")` builds the env and wraps it in `TimeLimit(500)` as
//! `gymnasium.make` does; `make_vec` picks the structure-of-arrays fast path
//! for the built-in envs and a [`SyncVectorEnv`] otherwise. User envs are
//! registered at link time with `#[register_env("Id-v0")]`, which makes them
//! exist in every worker process of the binary, or at run time with
//! [`register`], which reaches only the calling process. An unknown id is an
//! error naming the closest known ids.

use crate::classic::{
    Acrobot, CartPole, ClassicEnv, Dynamics, MountainCar, MountainCarContinuous, Pendulum,
};
use crate::env::Env;
use crate::error::EnvError;
use crate::private::{LinkedEnv, LINKED_ENVS};
use crate::vector::{AutoresetMode, SoaVectorEnv, SyncVectorEnv, VectorEnv};
use crate::wrappers::TimeLimit;
use std::sync::{Arc, LazyLock, RwLock};

/// Constructor keyword arguments (Gymnasium's `**kwargs` to `make`).
pub type Kwargs = serde_json::Map<String, serde_json::Value>;

/// Builds an unwrapped env from keyword arguments.
pub type EntryPoint = Arc<dyn Fn(&Kwargs) -> Result<Box<dyn Env>, EnvError> + Send + Sync>;

/// Builds a vector env natively: `(kwargs, num_envs, max_episode_steps, mode)`.
pub type VectorEntryPoint = Arc<
    dyn Fn(&Kwargs, usize, u64, AutoresetMode) -> Result<Box<dyn VectorEnv>, EnvError>
        + Send
        + Sync,
>;

/// A registered env: Gymnasium's `EnvSpec`.
#[derive(Clone)]
pub struct EnvSpec {
    pub id: String,
    pub max_episode_steps: Option<u64>,
    pub reward_threshold: Option<f64>,
    pub entry_point: EntryPoint,
    pub vector_entry_point: Option<VectorEntryPoint>,
}

impl std::fmt::Debug for EnvSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSpec")
            .field("id", &self.id)
            .field("max_episode_steps", &self.max_episode_steps)
            .field("reward_threshold", &self.reward_threshold)
            .field("vectorized", &self.vector_entry_point.is_some())
            .finish()
    }
}

/// Options for [`make_with`].
#[derive(Debug, Clone, Default)]
pub struct MakeOptions {
    /// Overrides the registered time limit.
    pub max_episode_steps: Option<u64>,
    pub kwargs: Kwargs,
}

/// How [`make_vec_with`] vectorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vectorization {
    /// The env's native vector implementation when it has one, else sync.
    #[default]
    Auto,
    /// Always a [`SyncVectorEnv`] of `make`d envs.
    Sync,
}

/// Options for [`make_vec_with`].
#[derive(Debug, Clone, Default)]
pub struct VecOptions {
    pub make: MakeOptions,
    pub autoreset_mode: AutoresetMode,
    pub vectorization: Vectorization,
}

/// Constructor keyword arguments of a built-in env.
trait FromKwargs: Sized {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, EnvError>;
}

/// Reads the optional float keywords `names` (rejecting any other keyword).
fn float_kwargs<const N: usize>(
    id: &str,
    kwargs: &Kwargs,
    names: [&str; N],
    defaults: [f64; N],
) -> Result<[f64; N], EnvError> {
    if let Some(unknown) = kwargs.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(EnvError::InvalidOption {
            env: id.into(),
            name: unknown.clone(),
            reason: format!("unknown keyword argument (accepted: {names:?})"),
        });
    }
    let mut values = defaults;
    for (value, name) in values.iter_mut().zip(names) {
        if let Some(given) = kwargs.get(name) {
            *value = given.as_f64().ok_or_else(|| EnvError::InvalidOption {
                env: id.into(),
                name: name.into(),
                reason: format!("{given} is not a number"),
            })?;
        }
    }
    Ok(values)
}

impl FromKwargs for CartPole {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, EnvError> {
        let name = "sutton_barto_reward";
        let mut others = kwargs.clone();
        let sutton_barto_reward = match others.remove(name) {
            None => false,
            Some(value) => value.as_bool().ok_or_else(|| EnvError::InvalidOption {
                env: Self::ID.into(),
                name: name.into(),
                reason: format!("{value} is not a boolean"),
            })?,
        };
        float_kwargs(Self::ID, &others, [], []).map(|[]| CartPole {
            sutton_barto_reward,
        })
    }
}

impl FromKwargs for Acrobot {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, EnvError> {
        float_kwargs(Self::ID, kwargs, [], []).map(|[]| Acrobot)
    }
}

impl FromKwargs for MountainCar {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, EnvError> {
        float_kwargs(Self::ID, kwargs, ["goal_velocity"], [0.0])
            .map(|[goal_velocity]| MountainCar { goal_velocity })
    }
}

impl FromKwargs for MountainCarContinuous {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, EnvError> {
        float_kwargs(Self::ID, kwargs, ["goal_velocity"], [0.0])
            .map(|[goal_velocity]| MountainCarContinuous { goal_velocity })
    }
}

impl FromKwargs for Pendulum {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, EnvError> {
        float_kwargs(Self::ID, kwargs, ["g"], [10.0]).map(|[gravity]| Pendulum { gravity })
    }
}

fn classic_spec<D: Dynamics + FromKwargs>(reward_threshold: Option<f64>) -> EnvSpec {
    EnvSpec {
        id: D::ID.to_string(),
        max_episode_steps: Some(u64::from(D::MAX_EPISODE_STEPS)),
        reward_threshold,
        entry_point: Arc::new(|kwargs| Ok(Box::new(ClassicEnv::new(D::from_kwargs(kwargs)?)))),
        vector_entry_point: Some(Arc::new(|kwargs, num_envs, max_steps, mode| {
            Ok(Box::new(SoaVectorEnv::<D>::new(
                D::from_kwargs(kwargs)?,
                num_envs,
                max_steps,
                mode,
            )))
        })),
    }
}

fn linked_spec(linked: &'static LinkedEnv) -> EnvSpec {
    EnvSpec {
        id: linked.id.to_string(),
        max_episode_steps: linked.max_episode_steps,
        reward_threshold: linked.reward_threshold,
        entry_point: Arc::new(linked.make),
        vector_entry_point: None,
    }
}

/// The built-in envs, then those the binary registered with
/// `#[register_env]` (present in every process of the binary, workers
/// included), then whatever [`register`] adds at run time.
static REGISTRY: LazyLock<RwLock<Vec<EnvSpec>>> = LazyLock::new(|| {
    let mut specs = vec![
        classic_spec::<CartPole>(Some(475.0)),
        classic_spec::<MountainCar>(Some(-110.0)),
        classic_spec::<MountainCarContinuous>(Some(90.0)),
        classic_spec::<Pendulum>(None),
        classic_spec::<Acrobot>(Some(-100.0)),
    ];
    for linked in LINKED_ENVS.iter() {
        // Two link-time registrations of one id: the first one linked wins,
        // as a second `register` call would be refused.
        if !specs.iter().any(|s| s.id == linked.id) {
            specs.push(linked_spec(linked));
        }
    }
    RwLock::new(specs)
});

fn read_registry() -> std::sync::RwLockReadGuard<'static, Vec<EnvSpec>> {
    // A panic while registering cannot leave the list half-written.
    REGISTRY
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds an env; an id that is already registered is an error.
pub fn register(spec: EnvSpec) -> Result<(), EnvError> {
    let mut registry = REGISTRY
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if registry.iter().any(|s| s.id == spec.id) {
        return Err(EnvError::InvalidOption {
            env: spec.id,
            name: "id".into(),
            reason: "already registered".into(),
        });
    }
    registry.push(spec);
    Ok(())
}

/// Every registered spec, in registration order.
pub fn specs() -> Vec<EnvSpec> {
    read_registry().clone()
}

/// The registered ids, in registration order.
pub fn ids() -> Vec<String> {
    read_registry().iter().map(|s| s.id.clone()).collect()
}

/// The spec registered under `id`, or an error naming the closest ids.
pub fn spec(id: &str) -> Result<EnvSpec, EnvError> {
    let registry = read_registry();
    if let Some(spec) = registry.iter().find(|s| s.id == id) {
        return Ok(spec.clone());
    }
    let mut by_distance: Vec<(usize, &str)> = registry
        .iter()
        .map(|s| {
            (
                edit_distance(&s.id.to_lowercase(), &id.to_lowercase()),
                s.id.as_str(),
            )
        })
        .collect();
    by_distance.sort();
    Err(EnvError::UnknownEnv {
        id: id.to_string(),
        suggestions: by_distance
            .iter()
            .take(3)
            .map(|(_, s)| s.to_string())
            .collect(),
    })
}

/// Levenshtein distance, for suggesting ids.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// `gymnasium.make(id)`: the env with its registered time limit.
pub fn make(id: &str) -> Result<Box<dyn Env>, EnvError> {
    make_with(id, &MakeOptions::default())
}

/// `gymnasium.make(id, max_episode_steps=..., **kwargs)`.
pub fn make_with(id: &str, options: &MakeOptions) -> Result<Box<dyn Env>, EnvError> {
    let spec = spec(id)?;
    let env = (spec.entry_point)(&options.kwargs)?;
    Ok(match options.max_episode_steps.or(spec.max_episode_steps) {
        Some(limit) => Box::new(TimeLimit::new(env, limit)),
        None => env,
    })
}

/// `num_envs` copies of `id` (fast path where available), reset with `seed`
/// so that [`VectorEnv::observations`] holds the first observations.
pub fn make_vec(
    id: &str,
    num_envs: usize,
    seed: Option<u64>,
) -> Result<Box<dyn VectorEnv>, EnvError> {
    let mut env = make_vec_with(id, num_envs, &VecOptions::default())?;
    env.reset(seed)?;
    Ok(env)
}

/// A vector env with explicit options; not yet reset.
pub fn make_vec_with(
    id: &str,
    num_envs: usize,
    options: &VecOptions,
) -> Result<Box<dyn VectorEnv>, EnvError> {
    if num_envs == 0 {
        return Err(EnvError::InvalidOption {
            env: id.into(),
            name: "num_envs".into(),
            reason: "must be at least 1".into(),
        });
    }
    let spec = spec(id)?;
    let limit = options.make.max_episode_steps.or(spec.max_episode_steps);
    if let (Vectorization::Auto, Some(native)) = (options.vectorization, &spec.vector_entry_point) {
        return native(
            &options.make.kwargs,
            num_envs,
            limit.unwrap_or(u64::MAX),
            options.autoreset_mode,
        );
    }
    let envs = (0..num_envs)
        .map(|_| make_with(id, &options.make))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(SyncVectorEnv::new(envs, options.autoreset_mode)?))
}
