//! Experiment configs: the YAML schema with its defaults, `--set` overrides,
//! and validation whose errors name the key and the line.
//!
//! Keys follow RLlib's `AlgorithmConfig` names, grouped in the sections RLlib
//! groups them in (`env_runners`, `learners`, `training`, `model`), so an
//! RLlib user can read a config at a glance. `algorithm:` selects which
//! algorithm's `training:` section is expected: the key is read first, then
//! the whole document with that section's type. Parsing is strict: every
//! section rejects unknown keys, and serde_yaml_ng reports the dotted path and
//! line of an unknown key or a wrong type. Range checks run after `--set`
//! overrides were applied; they look the key up in the file to give its
//! line.

use std::path::PathBuf;

use oxray_envs::EnvConfig;
use oxray_rl::checkpoint::Checkpoint;
use oxray_rl::metrics;
use oxray_rl::rl_module::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::algorithm::TrainError;
use crate::algorithms::{self, AlgorithmConfig, AlgorithmName};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("--set {assignment}: {message}")]
    Override { assignment: String, message: String },
}

/// A whole experiment: which algorithm on which env, how to sample and learn,
/// when to stop and when to checkpoint. `T` is the `training:` section: one
/// algorithm's while decoding, [`AlgorithmConfig`] (any of them) after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig<T = AlgorithmConfig> {
    pub algorithm: AlgorithmName,
    /// An env id, or the full section (`id`, `backend`, `config`,
    /// `max_episode_steps`, `wrappers`).
    #[serde(deserialize_with = "oxray_envs::deserialize_env")]
    pub env: EnvConfig,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub env_runners: EnvRunnersConfig,
    #[serde(default)]
    pub learners: LearnersConfig,
    #[serde(default)]
    pub training: T,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub stop: StopConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub reporting: ReportingConfig,
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    #[serde(default)]
    pub offline_data: OfflineDataConfig,
}

/// The first pass of decoding: only `algorithm:`, every other key ignored.
#[derive(Deserialize)]
pub(crate) struct AlgorithmKey {
    pub algorithm: AlgorithmName,
}

impl<T> ExperimentConfig<T> {
    /// The same config with its `training:` section mapped by `f`.
    pub fn map_training<U>(self, f: impl FnOnce(T) -> U) -> ExperimentConfig<U> {
        ExperimentConfig {
            algorithm: self.algorithm,
            env: self.env,
            seed: self.seed,
            env_runners: self.env_runners,
            learners: self.learners,
            training: f(self.training),
            model: self.model,
            stop: self.stop,
            checkpoint: self.checkpoint,
            reporting: self.reporting,
            evaluation: self.evaluation,
            offline_data: self.offline_data,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvRunnersConfig {
    /// 0 samples in the driver process.
    pub num_env_runners: usize,
    pub num_envs_per_env_runner: usize,
    pub num_cpus_per_env_runner: f64,
    /// Steps per env per `sample()`; `auto` divides `train_batch_size` evenly.
    pub rollout_fragment_length: FragmentLength,
}

impl Default for EnvRunnersConfig {
    fn default() -> Self {
        EnvRunnersConfig {
            num_env_runners: 0,
            num_envs_per_env_runner: 1,
            num_cpus_per_env_runner: 1.0,
            rollout_fragment_length: FragmentLength::Auto,
        }
    }
}

/// `rollout_fragment_length`: a number of steps or the word `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentLength {
    Steps(usize),
    Auto,
}

impl Serialize for FragmentLength {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            FragmentLength::Steps(steps) => s.serialize_u64(steps as u64),
            FragmentLength::Auto => s.serialize_str("auto"),
        }
    }
}

/// A visitor rather than an untagged enum, so serde_yaml_ng can still name
/// the key and line of a bad value.
impl<'de> Deserialize<'de> for FragmentLength {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FragmentLength;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of steps or `auto`")
            }

            fn visit_u64<E: serde::de::Error>(self, steps: u64) -> Result<FragmentLength, E> {
                Ok(FragmentLength::Steps(steps as usize))
            }

            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<FragmentLength, E> {
                match word {
                    "auto" => Ok(FragmentLength::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(word), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnersConfig {
    /// 0 trains in the driver process; N ≥ 1 runs N Learner actors, which
    /// average their gradients (data-parallel) when N > 1.
    pub num_learners: usize,
    /// CPUs each Learner reserves (RLlib's key); its libtorch runs as many
    /// threads as whole CPUs, at least one.
    pub num_cpus_per_learner: CpusPerLearner,
    pub num_gpus_per_learner: f64,
}

/// `num_cpus_per_learner: auto` or a number of CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub enum CpusPerLearner {
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(untagged)]
    Count(f64),
}

impl<'de> Deserialize<'de> for CpusPerLearner {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match auto_or_number(d, "a number of CPUs or `auto`")? {
            None => CpusPerLearner::Auto,
            Some(cpus) => CpusPerLearner::Count(cpus),
        })
    }
}

/// Reads the word `auto` (`None`) or a number, for keys that take either.
/// A visitor rather than an untagged enum, whose error says only that no
/// variant matched: this one says what `expected` is, and serde_yaml_ng
/// still names the key and line of a bad value.
pub fn auto_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
    expected: &'static str,
) -> Result<Option<f64>, D::Error> {
    struct Visitor(&'static str);
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }

        fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Option<f64>, E> {
            Ok(Some(number))
        }

        fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Option<f64>, E> {
            Ok(Some(number as f64))
        }

        fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Option<f64>, E> {
            Ok(Some(number as f64))
        }

        fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Option<f64>, E> {
            match word {
                "auto" => Ok(None),
                _ => Err(E::invalid_value(serde::de::Unexpected::Str(word), &self)),
            }
        }
    }
    d.deserialize_any(Visitor(expected))
}

impl LearnersConfig {
    /// The CPUs each Learner reserves: RLlib's `auto` gives a CPU Learner one
    /// and a GPU Learner none (the GPU does its work). With `num_learners: 0`
    /// the one Learner runs in the driver and reserves nothing, but still
    /// runs this many libtorch threads.
    pub fn cpus_per_learner(&self) -> f64 {
        match self.num_cpus_per_learner {
            CpusPerLearner::Auto if self.num_gpus_per_learner > 0.0 => 0.0,
            CpusPerLearner::Auto => 1.0,
            CpusPerLearner::Count(cpus) => cpus,
        }
    }
}

/// Stop criteria; the first one reached ends the run, as in RLlib. Each is
/// also accepted under the name of the result it is compared with (Ray
/// Tune's `stop` keys, and what the run's `done:` line prints), so a stop
/// dict from an RLlib script carries over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopConfig {
    #[serde(alias = "env_runners/episode_return_mean")]
    pub episode_return_mean: Option<f64>,
    #[serde(alias = "num_env_steps_sampled_lifetime")]
    pub env_steps: Option<u64>,
    #[serde(alias = "training_iteration")]
    pub iterations: Option<u64>,
    #[serde(alias = "time_total_s")]
    pub time_s: Option<f64>,
    /// The mean return of the latest evaluation (`evaluation:`), the
    /// criterion of runs that sample nothing for training (BC).
    #[serde(alias = "evaluation/env_runners/episode_return_mean")]
    pub evaluation_return_mean: Option<f64>,
}

impl StopConfig {
    /// Each criterion's key beside the result key it is compared with,
    /// which the serde aliases above accept in a file and
    /// [`ExperimentConfig::with_override`] accepts in `--set stop.KEY=…`.
    pub const RESULT_KEYS: [(&'static str, &'static str); 5] = [
        ("episode_return_mean", metrics::EPISODE_RETURN_MEAN),
        ("env_steps", metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME),
        ("iterations", metrics::TRAINING_ITERATION),
        ("time_s", metrics::TIME_TOTAL_S),
        (
            "evaluation_return_mean",
            crate::evaluation::EPISODE_RETURN_MEAN,
        ),
    ];

    /// The criterion's own key for `key`, which may be a result key.
    fn criterion_key(key: &str) -> &str {
        Self::RESULT_KEYS
            .iter()
            .find(|(_, result)| *result == key)
            .map_or(key, |(criterion, _)| criterion)
    }

    /// The result key `criterion` may also be written as.
    fn result_key(criterion: &str) -> Option<&'static str> {
        Self::RESULT_KEYS
            .iter()
            .find(|(name, _)| *name == criterion)
            .map(|(_, result)| *result)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every N iterations; 0 never does.
    pub checkpoint_frequency: u64,
    pub checkpoint_at_end: bool,
    /// Checkpoints kept on disk, the best by `checkpoint_score_attribute`
    /// (the most recent without one) plus always the newest; all when
    /// absent (Ray's `CheckpointConfig`).
    pub num_to_keep: Option<usize>,
    /// The result key that ranks checkpoints for `num_to_keep`.
    pub checkpoint_score_attribute: Option<String>,
    pub checkpoint_score_order: ScoreOrder,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            checkpoint_frequency: 0,
            checkpoint_at_end: true,
            num_to_keep: None,
            checkpoint_score_attribute: None,
            checkpoint_score_order: ScoreOrder::Max,
        }
    }
}

/// Whether a higher or a lower score is better (a checkpoint's, a trial's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreOrder {
    Max,
    Min,
}

impl ScoreOrder {
    /// `score` turned so that larger is better whichever the order.
    pub fn oriented(self, score: f64) -> f64 {
        match self {
            ScoreOrder::Max => score,
            ScoreOrder::Min => -score,
        }
    }
}

/// What a run reports besides its per-iteration results (RLlib's
/// `reporting` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// Write TensorBoard histograms (sampled actions, advantages, weights) at
    /// the first iteration and every N iterations after it; 0 never does.
    pub histogram_frequency: u64,
    /// Episode metrics (`env_runners/episode_return_mean` and the rest, and
    /// so `stop.episode_return_mean`) are means over this many of the latest
    /// finished episodes, as RLlib's option of the same name.
    pub metrics_num_episodes_for_smoothing: usize,
}

impl Default for ReportingConfig {
    fn default() -> Self {
        ReportingConfig {
            histogram_frequency: 10,
            metrics_num_episodes_for_smoothing: oxray_rl::metrics::EPISODE_WINDOW,
        }
    }
}

impl ReportingConfig {
    /// Whether iteration `iteration` (1-based) writes histograms.
    pub fn histograms_due(&self, iteration: u64) -> bool {
        (iteration.saturating_sub(1))
            .checked_rem(self.histogram_frequency)
            .is_some_and(|r| r == 0)
    }
}

/// Evaluation during training (RLlib's `evaluation_interval`,
/// `evaluation_duration`, `evaluation_duration_unit`,
/// `evaluation_config.explore`, `evaluation_num_env_runners`): every
/// `interval` iterations the current policy plays `duration` episodes or
/// env steps on EnvRunners of its own, reported under `evaluation/`. The
/// RLlib names are accepted too, in a file and in `--set`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    /// Evaluate every N iterations; 0 never does.
    #[serde(alias = "evaluation_interval")]
    pub interval: u64,
    #[serde(alias = "evaluation_duration")]
    pub duration: u64,
    #[serde(alias = "evaluation_duration_unit")]
    pub duration_unit: DurationUnit,
    /// Sample actions as in training rather than take the greedy ones.
    pub explore: bool,
    /// 0 evaluates in the driver process.
    #[serde(alias = "evaluation_num_env_runners")]
    pub num_env_runners: usize,
}

impl EvaluationConfig {
    /// The key an RLlib name stands for (the serde aliases above), for
    /// `--set evaluation.KEY=…`, which writes the canonical key.
    fn canonical_key(name: &str) -> &str {
        match name {
            "evaluation_interval" => "interval",
            "evaluation_duration" => "duration",
            "evaluation_duration_unit" => "duration_unit",
            "evaluation_num_env_runners" => "num_env_runners",
            name => name,
        }
    }
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            interval: 0,
            duration: 10,
            duration_unit: DurationUnit::Episodes,
            explore: false,
            num_env_runners: 0,
        }
    }
}

/// `offline_data:` (RLlib's `offline_data()`): where an offline algorithm
/// reads its recorded episodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineDataConfig {
    /// A `.jsonl` file of episodes, or a directory of them (`oxray
    /// evaluate --output DIR` records some); relative to the working
    /// directory. `input_` in RLlib's Python API (`input` is a builtin).
    #[serde(rename = "input_", alias = "input")]
    pub input: Option<PathBuf>,
    /// Record every episode the training EnvRunners finish here, each
    /// runner into a file of its own (RLlib's `output`); relative to the
    /// working directory, on the node each runner runs on.
    pub output: Option<PathBuf>,
}

impl OfflineDataConfig {
    /// `output` as an absolute path, which a runner in another process
    /// (whatever its working directory) writes to.
    pub fn output_dir(&self) -> Result<Option<PathBuf>, TrainError> {
        self.output
            .as_ref()
            .map(|dir| {
                std::path::absolute(dir).map_err(|error| TrainError::Io {
                    path: dir.clone(),
                    error,
                })
            })
            .transpose()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationUnit {
    Episodes,
    Timesteps,
}

impl ExperimentConfig {
    /// Parses YAML `source` (named `origin` in errors), applies `overrides`,
    /// validates.
    pub fn parse(source: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let config = algorithms::decode(|| serde_yaml_ng::Deserializer::from_str(source))
            .map_err(|e| invalid(e.to_string()))?;
        config.finish(source, origin, overrides)
    }

    /// Decodes a config from `document`, a variant of the YAML `source`
    /// (one trial of a grid search), applies `overrides`, validates; range
    /// errors give the key's line in `source`.
    pub(crate) fn from_document(
        document: &serde_yaml_ng::Value,
        source: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let config = algorithms::decode(|| document).map_err(|e| ConfigError::Invalid {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.finish(source, origin, overrides)
    }

    /// Applies `overrides` to a decoded config and validates it.
    fn finish(
        mut self,
        source: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        for assignment in overrides {
            self = self.with_override(assignment)?;
        }
        self.validate().map_err(|(key, message)| {
            // A stop criterion may be written under its result key.
            let written_as = match key.split_once('.') {
                Some(("stop", criterion)) => {
                    StopConfig::result_key(criterion).map(|result| format!("stop.{result}"))
                }
                _ => None,
            };
            // The value a `--set` gave is that assignment's, whatever line
            // of the file holds the key.
            let assigned = overrides.iter().rev().find(|assignment| {
                assignment.split_once('=').is_some_and(|(assigned, _)| {
                    assigned == key || Some(assigned) == written_as.as_deref()
                })
            });
            let line =
                line_of(source, &key).or_else(|| written_as.and_then(|key| line_of(source, &key)));
            let location = match (assigned, line) {
                (Some(assignment), _) => format!(" (--set {assignment})"),
                (None, Some(line)) => format!(" at line {line}"),
                (None, None) => String::new(),
            };
            invalid(format!("{key}: {message}{location}"))
        })?;
        Ok(self)
    }

    /// The config with one `dotted.key=value` applied. The key must exist in
    /// the schema; the value is read as YAML and type-checked.
    fn with_override(&self, assignment: &str) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::Override {
            assignment: assignment.to_string(),
            message,
        };
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| fail("expected KEY=VALUE".into()))?;
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(value)
            .map_err(|e| fail(format!("value is not valid YAML: {e}")))?;
        // Refused here as well as by `validate`, so that the error names the
        // override rather than a line of the file.
        if first_non_finite_number(&value, String::new()).is_some() {
            return Err(fail("numbers must be finite (no .nan or .inf)".into()));
        }
        // Applied to the config as YAML, not JSON: JSON has no NaN, so a NaN
        // elsewhere in the file would turn into null and be blamed on its type.
        let mut tree = serde_yaml_ng::to_value(self).expect("configs serialize");
        let key = match key.split_once('.') {
            Some(("stop", criterion)) => format!("stop.{}", StopConfig::criterion_key(criterion)),
            Some(("training", name)) => format!("training.{}", training_key(name)),
            Some(("evaluation", name)) => {
                format!("evaluation.{}", EvaluationConfig::canonical_key(name))
            }
            _ => key.to_string(),
        };
        let mut slot = &mut tree;
        for part in key.split('.') {
            slot = slot
                .as_mapping_mut()
                .and_then(|section| section.get_mut(part))
                .ok_or_else(|| fail(format!("no config key `{key}`")))?;
        }
        *slot = value;
        algorithms::decode(|| &tree).map_err(|e| fail(e.to_string()))
    }

    /// A config as serialised into checkpoints (JSON).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        algorithms::decode(|| value)
    }

    /// The config `checkpoint` was saved with.
    pub fn of_checkpoint(checkpoint: &Checkpoint) -> Result<Self, TrainError> {
        Self::from_json(&checkpoint.config)
            .map_err(|e| TrainError::Restore(format!("config in checkpoint: {e}")))
    }

    /// The first out-of-range value, as (dotted key, what is wrong).
    fn validate(&self) -> Result<(), (String, String)> {
        let check = |ok: bool, key: &str, message: &str| {
            if ok {
                Ok(())
            } else {
                Err((key.to_string(), message.to_string()))
            }
        };
        // Checked once for every number, so that no range check below can
        // let a NaN through (every comparison with NaN is false).
        let tree = serde_yaml_ng::to_value(self).expect("configs serialize");
        if let Some(key) = first_non_finite_number(&tree, String::new()) {
            return Err((key, "must be a finite number".to_string()));
        }
        let runners = &self.env_runners;
        check(
            runners.num_envs_per_env_runner >= 1,
            "env_runners.num_envs_per_env_runner",
            "must be at least 1",
        )?;
        check(
            runners.num_cpus_per_env_runner >= 0.0,
            "env_runners.num_cpus_per_env_runner",
            "must not be negative",
        )?;
        check(
            runners.rollout_fragment_length != FragmentLength::Steps(0),
            "env_runners.rollout_fragment_length",
            "must be at least 1",
        )?;
        check(
            self.learners.num_gpus_per_learner >= 0.0,
            "learners.num_gpus_per_learner",
            "must not be negative",
        )?;
        check(
            self.learners.cpus_per_learner() >= 0.0,
            "learners.num_cpus_per_learner",
            "must be `auto` or a number that is not negative",
        )?;
        check(
            !self.model.fcnet_hiddens.iter().any(|&h| h < 1),
            "model.fcnet_hiddens",
            "layer sizes must be at least 1",
        )?;
        check(
            self.evaluation.interval == 0 || self.evaluation.duration >= 1,
            "evaluation.duration",
            "must be at least 1",
        )?;
        check(
            self.reporting.metrics_num_episodes_for_smoothing >= 1,
            "reporting.metrics_num_episodes_for_smoothing",
            "must be at least 1",
        )?;
        check(
            self.stop.time_s.is_none_or(|t| t > 0.0),
            "stop.time_s",
            "must be positive",
        )?;
        check(
            self.checkpoint.num_to_keep.is_none_or(|n| n >= 1),
            "checkpoint.num_to_keep",
            "must be at least 1 (leave it out to keep every checkpoint)",
        )?;
        check(
            self.checkpoint
                .checkpoint_score_attribute
                .as_ref()
                .is_none_or(|key| !key.is_empty()),
            "checkpoint.checkpoint_score_attribute",
            "must name a result key",
        )?;
        check(
            self.stop.evaluation_return_mean.is_none() || self.evaluation.interval >= 1,
            "stop.evaluation_return_mean",
            "needs evaluation.interval of at least 1 (nothing is evaluated otherwise)",
        )?;
        let learns_offline = self.algorithm.learns_offline();
        check(
            !learns_offline || self.offline_data.input.is_some(),
            "offline_data.input_",
            "BC, MARWIL, CQL and IQL learn from recorded episodes: set it to a .jsonl file or a \
             directory of them (`oxray evaluate CHECKPOINT --output DIR` records some)",
        )?;
        check(
            learns_offline || self.offline_data.input.is_none(),
            "offline_data.input_",
            "only the offline algorithms (BC, MARWIL, CQL, IQL) learn from offline data",
        )?;
        check(
            !learns_offline || self.offline_data.output.is_none(),
            "offline_data.output",
            "BC, MARWIL, CQL and IQL sample nothing to record (`oxray evaluate --output` records a \
             policy)",
        )?;
        self.training
            .training()
            .validate(self.envs_sampled_in_parallel())
    }

    fn envs_sampled_in_parallel(&self) -> usize {
        self.env_runners.num_env_runners.max(1) * self.env_runners.num_envs_per_env_runner
    }

    /// Steps per env per `sample()`: the configured length, or what `auto`
    /// means for the algorithm (PPO: `train_batch_size / (runners × envs)`,
    /// rounded up).
    pub fn rollout_fragment_length(&self) -> usize {
        match self.env_runners.rollout_fragment_length {
            FragmentLength::Steps(steps) => steps,
            FragmentLength::Auto => self
                .training
                .training()
                .auto_rollout_fragment_length(self.envs_sampled_in_parallel()),
        }
    }

    /// The resolved config as YAML, for `params.yaml` and checkpoints.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("configs serialize")
    }
}

/// 1-based line of `dotted_key` in a YAML block mapping, found by walking the
/// key's parts at increasing indentation.
fn line_of(source: &str, dotted_key: &str) -> Option<usize> {
    let mut parts = dotted_key.split('.').peekable();
    let mut min_indent = 0;
    for (number, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('#') || trimmed.is_empty() || indent < min_indent {
            continue;
        }
        let part = *parts.peek()?;
        if trimmed
            .strip_prefix(part)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
        {
            parts.next();
            if parts.peek().is_none() {
                return Some(number + 1);
            }
            min_indent = indent + 1;
        }
    }
    None
}

/// The `training:` key a config file may also spell `name` (RLlib's
/// Python spelling of a key that is a Python keyword, `lambda_`, which the
/// file's sections take as a serde alias); `--set` writes the serialised
/// config, which only has the canonical name.
fn training_key(name: &str) -> &str {
    match name {
        "lambda_" => "lambda",
        name => name,
    }
}

/// The dotted key (below `key`) of the first NaN or infinity in `value`.
fn first_non_finite_number(value: &serde_yaml_ng::Value, key: String) -> Option<String> {
    use serde_yaml_ng::Value;
    match value {
        Value::Number(number) => number
            .as_f64()
            .is_some_and(|f| !f.is_finite())
            .then_some(key),
        Value::Sequence(items) => items
            .iter()
            .find_map(|item| first_non_finite_number(item, key.clone())),
        Value::Mapping(entries) => entries.iter().find_map(|(name, entry)| {
            let name = name.as_str().unwrap_or_default();
            let key = if key.is_empty() {
                name.to_string()
            } else {
                format!("{key}.{name}")
            };
            first_non_finite_number(entry, key)
        }),
        Value::Tagged(tagged) => first_non_finite_number(&tagged.value, key),
        Value::Null | Value::Bool(_) | Value::String(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_due_at_the_first_iteration_and_every_nth_after() {
        let every = |n| ReportingConfig {
            histogram_frequency: n,
            ..ReportingConfig::default()
        };
        let due = |n, until| {
            (1..=until)
                .filter(|&i| every(n).histograms_due(i))
                .collect::<Vec<u64>>()
        };
        assert_eq!(due(10, 25), [1, 11, 21]);
        assert_eq!(due(1, 3), [1, 2, 3]);
        assert!(due(0, 25).is_empty());
    }

    #[test]
    fn evaluation_takes_rllibs_names_in_a_file_and_in_set() {
        let parse = |evaluation: &str, overrides: &[&str]| {
            let source = format!("algorithm: PPO\nenv: CartPole-v1\nevaluation: {evaluation}\n");
            let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            ExperimentConfig::parse(&source, "config.yaml", &overrides)
                .unwrap()
                .evaluation
        };
        let ours = parse(
            "{interval: 2, duration: 300, duration_unit: timesteps, num_env_runners: 1}",
            &[],
        );
        let rllibs = parse(
            "{evaluation_interval: 2, evaluation_duration: 300, \
             evaluation_duration_unit: timesteps, evaluation_num_env_runners: 1}",
            &[],
        );
        assert_eq!(rllibs, ours);
        let set = parse(
            "{}",
            &[
                "evaluation.evaluation_interval=2",
                "evaluation.evaluation_duration=300",
                "evaluation.evaluation_duration_unit=timesteps",
                "evaluation.evaluation_num_env_runners=1",
            ],
        );
        assert_eq!(set, ours);
        assert_ne!(ours, EvaluationConfig::default());
    }
}
