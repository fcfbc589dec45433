//! One entry of the `env.wrappers:` list of an experiment config: which
//! Gymnasium wrapper to put around every sub-env, with its arguments.
//!
//! An entry is either a bare name (`normalize_observation`) or a one-key map
//! from the name to its arguments (`{frame_stack: 4}`,
//! `{atari_preprocessing: {noop_max: 30}}`). The names are Gymnasium's wrapper
//! classes in snake case, so one list means the same thing for both backends:
//! the native backend applies oxray-envs' Rust wrapper of that name, the
//! gymnasium backend the Python class. Arguments are typed and checked when
//! the config is read (unknown names and keys are errors with the YAML line),
//! not when a worker first builds the env. Any other Python wrapper, a
//! package's or your own, is named `module:Class` (minigrid's
//! `{minigrid.wrappers:ImgObsWrapper: {}}`); its keyword arguments go to it
//! as written, and Python checks them when the env is built.

use crate::env::Env;
use crate::error::EnvError;
use crate::wrappers::{
    ClipAction, FrameStack, NormalizeObservation, NormalizeReward, RescaleAction,
};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A wrapper and its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum WrapperConfig {
    /// Gymnasium's `AtariPreprocessing` (noop starts, frame skip, 84x84
    /// grayscale); gymnasium backend only.
    AtariPreprocessing(AtariPreprocessingArgs),
    /// `FrameStackObservation(stack_size)`: the last N observations, oldest first.
    FrameStack(usize),
    NormalizeObservation(NormalizeObservationArgs),
    NormalizeReward(NormalizeRewardArgs),
    ClipAction(NoArgs),
    RescaleAction(RescaleActionArgs),
    /// `FilterObservation(filter_keys)`: keeps these keys of a Dict
    /// observation; gymnasium backend only.
    FilterObservation(Vec<String>),
    /// A Python wrapper class named `module:Class`, with its keyword
    /// arguments; gymnasium backend only.
    Python {
        class: String,
        kwargs: serde_json::Map<String, serde_json::Value>,
    },
}

/// The wrapper names the config accepts.
pub const WRAPPER_NAMES: &[&str] = &[
    "atari_preprocessing",
    "frame_stack",
    "normalize_observation",
    "normalize_reward",
    "clip_action",
    "rescale_action",
    "filter_observation",
];

/// A wrapper without arguments (`clip_action` or `{clip_action: {}}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Gymnasium's `AtariPreprocessing` keyword arguments; unset ones keep
/// Gymnasium's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtariPreprocessingArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noop_max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_skip: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_on_life_loss: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grayscale_obs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grayscale_newaxis: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_obs: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeObservationArgs {
    pub epsilon: f64,
}

impl Default for NormalizeObservationArgs {
    fn default() -> Self {
        Self { epsilon: 1e-8 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeRewardArgs {
    pub gamma: f64,
    pub epsilon: f64,
}

impl Default for NormalizeRewardArgs {
    fn default() -> Self {
        Self {
            gamma: 0.99,
            epsilon: 1e-8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescaleActionArgs {
    pub min_action: f64,
    pub max_action: f64,
}

impl WrapperConfig {
    /// The config name (`frame_stack`, or a Python wrapper's `module:Class`).
    pub fn name(&self) -> &str {
        match self {
            WrapperConfig::Python { class, .. } => class,
            WrapperConfig::AtariPreprocessing(_) => "atari_preprocessing",
            WrapperConfig::FrameStack(_) => "frame_stack",
            WrapperConfig::NormalizeObservation(_) => "normalize_observation",
            WrapperConfig::NormalizeReward(_) => "normalize_reward",
            WrapperConfig::ClipAction(_) => "clip_action",
            WrapperConfig::RescaleAction(_) => "rescale_action",
            WrapperConfig::FilterObservation(_) => "filter_observation",
        }
    }

    /// The Gymnasium class in `gymnasium.wrappers` (or a Python wrapper's
    /// `module:Class`) and its keyword arguments.
    pub fn gymnasium_class(&self) -> (&str, serde_json::Value) {
        match self {
            WrapperConfig::Python { class, kwargs } => (class, kwargs.clone().into()),
            WrapperConfig::AtariPreprocessing(a) => ("AtariPreprocessing", args(a)),
            WrapperConfig::FrameStack(n) => (
                "FrameStackObservation",
                serde_json::json!({ "stack_size": n }),
            ),
            WrapperConfig::NormalizeObservation(a) => ("NormalizeObservation", args(a)),
            WrapperConfig::NormalizeReward(a) => ("NormalizeReward", args(a)),
            WrapperConfig::ClipAction(a) => ("ClipAction", args(a)),
            WrapperConfig::RescaleAction(a) => ("RescaleAction", args(a)),
            WrapperConfig::FilterObservation(keys) => (
                "FilterObservation",
                serde_json::json!({ "filter_keys": keys }),
            ),
        }
    }

    /// Puts oxray-envs' Rust wrapper of this name around `env`.
    pub fn wrap_native(&self, env: Box<dyn Env>) -> Result<Box<dyn Env>, EnvError> {
        Ok(match self {
            WrapperConfig::FrameStack(n) => Box::new(FrameStack::new(env, *n)?),
            WrapperConfig::NormalizeObservation(a) => {
                Box::new(NormalizeObservation::new(env, a.epsilon))
            }
            WrapperConfig::NormalizeReward(a) => {
                Box::new(NormalizeReward::new(env, a.gamma, a.epsilon))
            }
            WrapperConfig::ClipAction(_) => Box::new(ClipAction::new(env)?),
            WrapperConfig::RescaleAction(a) => {
                Box::new(RescaleAction::new(env, a.min_action, a.max_action)?)
            }
            WrapperConfig::AtariPreprocessing(_)
            | WrapperConfig::FilterObservation(_)
            | WrapperConfig::Python { .. } => {
                return Err(EnvError::Unsupported {
                    env: env.id().to_string(),
                    operation: format!(
                        "wrapper `{}` (it exists for `backend: gymnasium` only)",
                        self.name()
                    ),
                })
            }
        })
    }
}

/// A Python wrapper entry, its name checked to be `module:Class`.
fn python_wrapper<E: de::Error>(
    name: &str,
    kwargs: serde_json::Map<String, serde_json::Value>,
) -> Result<WrapperConfig, E> {
    let identifier = |part: &str| {
        !part.is_empty()
            && part.split('.').all(|word| {
                !word.is_empty() && word.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    match name.split_once(':') {
        Some((module, class)) if identifier(module) && identifier(class) => {
            Ok(WrapperConfig::Python {
                class: name.to_string(),
                kwargs,
            })
        }
        _ => Err(E::custom(format!(
            "wrapper `{name}`: a Python wrapper is named `module:Class`, e.g. \
             `minigrid.wrappers:ImgObsWrapper`"
        ))),
    }
}

/// Wrapper arguments as Python keyword arguments.
fn args<T: Serialize>(args: &T) -> serde_json::Value {
    serde_json::to_value(args).expect("wrapper arguments serialize")
}

/// Always the one-key map form (`{frame_stack: 4}`), which reads back the
/// same; a derived enum would come out of serde_yaml_ng as a YAML tag.
impl Serialize for WrapperConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            WrapperConfig::AtariPreprocessing(a) => map.serialize_entry(self.name(), a)?,
            WrapperConfig::FrameStack(n) => map.serialize_entry(self.name(), n)?,
            WrapperConfig::NormalizeObservation(a) => map.serialize_entry(self.name(), a)?,
            WrapperConfig::NormalizeReward(a) => map.serialize_entry(self.name(), a)?,
            WrapperConfig::ClipAction(a) => map.serialize_entry(self.name(), a)?,
            WrapperConfig::RescaleAction(a) => map.serialize_entry(self.name(), a)?,
            WrapperConfig::FilterObservation(keys) => map.serialize_entry(self.name(), keys)?,
            WrapperConfig::Python { kwargs, .. } => map.serialize_entry(self.name(), kwargs)?,
        }
        map.end()
    }
}

/// A visitor rather than a derived enum, so a bare name and a one-key map
/// both work and serde_yaml_ng still names the line of a bad entry.
impl<'de> Deserialize<'de> for WrapperConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = WrapperConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a wrapper name or a one-key map from a wrapper name to its arguments")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<WrapperConfig, E> {
                if name.contains(':') {
                    return python_wrapper(name, serde_json::Map::new());
                }
                Ok(match name {
                    "atari_preprocessing" => {
                        WrapperConfig::AtariPreprocessing(AtariPreprocessingArgs::default())
                    }
                    "normalize_observation" => {
                        WrapperConfig::NormalizeObservation(NormalizeObservationArgs::default())
                    }
                    "normalize_reward" => {
                        WrapperConfig::NormalizeReward(NormalizeRewardArgs::default())
                    }
                    "clip_action" => WrapperConfig::ClipAction(NoArgs {}),
                    "frame_stack" | "rescale_action" | "filter_observation" => {
                        return Err(E::custom(format!(
                            "wrapper `{name}` needs arguments, e.g. {}",
                            match name {
                                "frame_stack" => "`{frame_stack: 4}`",
                                "rescale_action" =>
                                    "`{rescale_action: {min_action: -1, max_action: 1}}`",
                                _ => "`{filter_observation: [image]}`",
                            }
                        )))
                    }
                    other => return Err(E::unknown_variant(other, WRAPPER_NAMES)),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WrapperConfig, A::Error> {
                let name: String = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("empty map: expected one wrapper name"))?;
                fn read_args<'de, A: MapAccess<'de>, T: Default + Deserialize<'de>>(
                    map: &mut A,
                ) -> Result<T, A::Error> {
                    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
                }
                let wrapper = match name.as_str() {
                    python if python.contains(':') => {
                        let kwargs = map.next_value::<Option<_>>()?.unwrap_or_default();
                        python_wrapper(python, kwargs)?
                    }
                    "atari_preprocessing" => {
                        WrapperConfig::AtariPreprocessing(read_args(&mut map)?)
                    }
                    "frame_stack" => WrapperConfig::FrameStack(map.next_value()?),
                    "normalize_observation" => {
                        WrapperConfig::NormalizeObservation(read_args(&mut map)?)
                    }
                    "normalize_reward" => WrapperConfig::NormalizeReward(read_args(&mut map)?),
                    "clip_action" => WrapperConfig::ClipAction(read_args(&mut map)?),
                    "rescale_action" => WrapperConfig::RescaleAction(map.next_value()?),
                    "filter_observation" => WrapperConfig::FilterObservation(map.next_value()?),
                    other => return Err(de::Error::unknown_variant(other, WRAPPER_NAMES)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "one wrapper per list entry; found `{extra}` beside `{name}`"
                    )));
                }
                Ok(wrapper)
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}
