//! The `env:` section of an experiment: which env, from which backend, built
//! with which keyword arguments, time limit and wrappers (RLlib's `env` and
//! `env_config`, Gymnasium's `make(id, max_episode_steps, **kwargs)` plus a
//! wrapper list).
//!
//! ```yaml
//! env:
//!   id: ALE/Pong-v5          # CartPole-v1, my_pkg.envs:GridWorld, MyRustEnv-v0
//!   backend: auto            # native | gymnasium | auto (native when oxray has the id)
//!   config: {frameskip: 1}   # constructor keyword arguments
//!   max_episode_steps: 1000
//!   wrappers: [{atari_preprocessing: {}}, {frame_stack: 4}]
//! ```
//!
//! A bare string (`env: CartPole-v1`) is shorthand for `{id: CartPole-v1}`.
//! The section is data only; the native backend is built here
//! ([`EnvConfig::make_native_vec`]), the gymnasium backend by `oxray-gym`,
//! which also picks between them.

use crate::env::Env;
use crate::error::EnvError;
use crate::registry::{self, Kwargs, MakeOptions, VecOptions, Vectorization};
use crate::vector::{AutoresetMode, SyncVectorEnv, VectorEnv};
use crate::wrapper_config::WrapperConfig;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Where an env's code comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Native when oxray-envs' registry has the id, else gymnasium.
    #[default]
    Auto,
    /// oxray-envs' Rust envs, built-in or registered by the user's binary.
    Native,
    /// A Python Gymnasium env stepped through the embedded interpreter.
    Gymnasium,
}

/// One env as an experiment describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// A registered id (`CartPole-v1`, `ALE/Pong-v5`) or, for Python envs, an
    /// entry point `module:Class`.
    pub id: String,
    #[serde(default)]
    pub backend: Backend,
    /// Keyword arguments for the env's constructor.
    #[serde(default)]
    pub config: Kwargs,
    /// Overrides the registered time limit.
    #[serde(default)]
    pub max_episode_steps: Option<u64>,
    /// Wrappers around every sub-env, innermost first.
    #[serde(default)]
    pub wrappers: Vec<WrapperConfig>,
}

impl EnvConfig {
    /// `{id}` with every other field at its default.
    pub fn new(id: impl Into<String>) -> Self {
        EnvConfig {
            id: id.into(),
            backend: Backend::Auto,
            config: Kwargs::new(),
            max_episode_steps: None,
            wrappers: Vec::new(),
        }
    }

    /// `auto` resolved: native when the registry (built-in envs and those the
    /// binary registered) has the id.
    pub fn resolved_backend(&self) -> Backend {
        match self.backend {
            Backend::Auto if registry::spec(&self.id).is_ok() => Backend::Native,
            Backend::Auto => Backend::Gymnasium,
            chosen => chosen,
        }
    }

    /// One native env with the time limit and wrappers applied.
    pub fn make_native(&self) -> Result<Box<dyn Env>, EnvError> {
        let options = MakeOptions {
            max_episode_steps: self.max_episode_steps,
            kwargs: self.config.clone(),
        };
        let mut env = registry::make_with(&self.id, &options)?;
        for wrapper in &self.wrappers {
            env = wrapper.wrap_native(env)?;
        }
        Ok(env)
    }

    /// `num_envs` native sub-envs, not yet reset: the registry's fast vector
    /// env when there are no wrappers, else a [`SyncVectorEnv`] of wrapped envs.
    pub fn make_native_vec(
        &self,
        num_envs: usize,
        autoreset_mode: AutoresetMode,
    ) -> Result<Box<dyn VectorEnv>, EnvError> {
        if self.wrappers.is_empty() {
            let options = VecOptions {
                make: MakeOptions {
                    max_episode_steps: self.max_episode_steps,
                    kwargs: self.config.clone(),
                },
                autoreset_mode,
                vectorization: Vectorization::Auto,
            };
            return registry::make_vec_with(&self.id, num_envs, &options);
        }
        if num_envs == 0 {
            return Err(EnvError::InvalidOption {
                env: self.id.clone(),
                name: "num_envs".into(),
                reason: "must be at least 1".into(),
            });
        }
        let envs = (0..num_envs)
            .map(|_| self.make_native())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(SyncVectorEnv::new(envs, autoreset_mode)?))
    }
}

impl From<&str> for EnvConfig {
    fn from(id: &str) -> Self {
        EnvConfig::new(id)
    }
}

/// Accepts the bare-string shorthand besides the full map. Written as a
/// visitor (not an untagged enum) so serde_yaml_ng still reports the key and
/// line of an unknown field or a wrong type inside the map.
pub fn deserialize_env<'de, D: Deserializer<'de>>(d: D) -> Result<EnvConfig, D::Error> {
    struct EnvVisitor;
    impl<'de> Visitor<'de> for EnvVisitor {
        type Value = EnvConfig;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an env id or a map with `id` and optionally `backend`, `config`, `max_episode_steps`, `wrappers`")
        }

        fn visit_str<E: de::Error>(self, id: &str) -> Result<EnvConfig, E> {
            Ok(EnvConfig::new(id))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EnvConfig, A::Error> {
            EnvConfig::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(EnvVisitor)
}

/// `#[serde(with = "oxray_envs::env_config::json_string")]`: an [`EnvConfig`]
/// as one JSON string, for binary formats that cannot carry its free-form
/// `config` map (postcard, which actor arguments travel in).
pub mod json_string {
    use super::EnvConfig;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(env: &EnvConfig, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serde_json::to_string(env).expect("env configs serialize"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EnvConfig, D::Error> {
        let json = String::deserialize(d)?;
        serde_json::from_str(&json).map_err(de::Error::custom)
    }
}
