//! Search spaces, as Ray Tune's `param_space`: any value of an experiment
//! config, in the file or in `--set KEY=VALUE`, may be a grid
//! (`{grid_search: [v1, v2, ...]}`, every value in turn) or a distribution
//! drawn once per trial (`{choice: [v1, v2, ...]}`, `{uniform: [low, high]}`,
//! `{loguniform: [low, high]}`, `{randint: [low, high]}` with `high`
//! excluded, as `tune.randint`). The experiment becomes `num_samples`
//! repetitions of every combination of the grids' values (their cartesian
//! product; the file's variables in document order, then `--set`'s, the
//! last grid varying fastest), each repetition drawing new values for the
//! distributions, from a generator seeded with the search seed so a search
//! can be repeated.
//!
//! Trials are expanded from the YAML document, not from the typed config,
//! because a grid or a distribution stands where the schema expects a number
//! or a string. Each trial is then decoded, overridden and validated exactly
//! as a config without variables, so a bad value in one trial is refused
//! with the key that holds it (and its line in the file) before any trial
//! starts.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_yaml_ng::{Mapping, Value};

use crate::config::{ConfigError, ExperimentConfig};

/// One combination of the variables' values.
#[derive(Debug)]
pub struct Trial {
    /// `lr=0.001,gamma=0.9`: each variable's key and this trial's value;
    /// empty for an experiment without variables.
    pub tag: String,
    pub config: ExperimentConfig,
}

/// How many times the grid is repeated and what seeds the draws (Tune's
/// `num_samples` and search seed).
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    pub num_samples: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            num_samples: 1,
            seed: 0,
        }
    }
}

/// The trials of the config at `path` with `overrides` applied.
pub fn load(
    path: &Path,
    overrides: &[String],
    sampling: Sampling,
) -> Result<Vec<Trial>, ConfigError> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: origin.clone(),
        error,
    })?;
    expand(&source, &origin, overrides, sampling)
}

/// The trials of YAML `source` (named `origin` in errors) with `overrides`
/// applied: `num_samples` copies of the config, untagged, when nothing
/// varies.
pub fn expand(
    source: &str,
    origin: &str,
    overrides: &[String],
    sampling: Sampling,
) -> Result<Vec<Trial>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: origin.to_string(),
        message,
    };
    // A document that is not YAML, or has no variable, is parsed as it is,
    // so its errors carry serde's line and column.
    let Ok(document) = serde_yaml_ng::from_str::<Value>(source) else {
        return repeated(source, origin, overrides, sampling);
    };
    let mut variables = Vec::new();
    find_variables(&document, &mut Vec::new(), &mut variables).map_err(invalid)?;
    let file_variables = variables.len();
    let mut assignments = Vec::new();
    for assignment in overrides {
        let variable = match assignment.split_once('=') {
            Some((key, value)) => domain_of(&serde_yaml_ng::from_str(value).unwrap_or(Value::Null))
                .map_err(|message| ConfigError::Override {
                    assignment: assignment.clone(),
                    message,
                })?
                .map(|domain| Variable {
                    key: key.split('.').map(str::to_string).collect(),
                    domain,
                }),
            None => None,
        };
        match variable {
            Some(variable) => {
                assignments.push(Assignment::Variable(variables.len()));
                variables.push(variable);
            }
            None => assignments.push(Assignment::Plain(assignment.clone())),
        }
    }
    if variables.is_empty() {
        return repeated(source, origin, overrides, sampling);
    }
    let names = tag_names(&variables);
    let mut rng = ChaCha8Rng::seed_from_u64(sampling.seed);
    let mut trials = Vec::new();
    for _ in 0..sampling.num_samples {
        for picks in grid_combinations(&variables) {
            let values: Vec<Value> = variables
                .iter()
                .zip(&picks)
                .map(|(variable, &pick)| variable.domain.value(pick, &mut rng))
                .collect();
            let mut variant = document.clone();
            for (variable, value) in variables[..file_variables].iter().zip(&values) {
                *slot(&mut variant, &variable.key) = value.clone();
            }
            let overrides: Vec<String> = assignments
                .iter()
                .map(|assignment| match assignment {
                    Assignment::Plain(text) => text.clone(),
                    Assignment::Variable(index) => format!(
                        "{}={}",
                        variables[*index].key.join("."),
                        inline_yaml(&values[*index])
                    ),
                })
                .collect();
            let tag = names
                .iter()
                .zip(variables.iter().zip(&values))
                .map(|(name, (variable, value))| {
                    format!("{name}={}", tag_value(&variable.domain, value))
                })
                .collect::<Vec<_>>()
                .join(",");
            let config = ExperimentConfig::from_document(&variant, source, origin, &overrides)
                .map_err(|error| match error {
                    ConfigError::Invalid { path, message } => ConfigError::Invalid {
                        path,
                        message: format!("trial {tag}: {message}"),
                    },
                    other => other,
                })?;
            trials.push(Trial { tag, config });
        }
    }
    Ok(trials)
}

/// `num_samples` untagged trials of a config without variables.
fn repeated(
    source: &str,
    origin: &str,
    overrides: &[String],
    sampling: Sampling,
) -> Result<Vec<Trial>, ConfigError> {
    let config = ExperimentConfig::parse(source, origin, overrides)?;
    Ok((0..sampling.num_samples)
        .map(|_| Trial {
            tag: String::new(),
            config: config.clone(),
        })
        .collect())
}

/// A value that varies between trials: where it stands (a path of mapping
/// keys) and how it varies.
struct Variable {
    key: Vec<String>,
    domain: Domain,
}

/// Tune's `grid_search`, `choice`, `uniform`, `loguniform` and `randint`.
#[derive(Debug)]
pub(crate) enum Domain {
    Grid(Vec<Value>),
    Choice(Vec<Value>),
    Uniform { low: f64, high: f64 },
    LogUniform { low: f64, high: f64 },
    RandInt { low: i64, high: i64 },
}

impl Domain {
    /// This trial's value: a grid's `pick`th, or a draw.
    pub(crate) fn value(&self, pick: usize, rng: &mut ChaCha8Rng) -> Value {
        match self {
            Domain::Grid(values) => values[pick].clone(),
            Domain::Choice(values) => values[rng.gen_range(0..values.len())].clone(),
            Domain::Uniform { low, high } => Value::from(rng.gen_range(*low..*high)),
            Domain::LogUniform { low, high } => {
                Value::from(rng.gen_range(low.ln()..high.ln()).exp())
            }
            Domain::RandInt { low, high } => Value::from(rng.gen_range(*low..*high)),
        }
    }

    /// How many trials of each sample it makes: a grid one per value, a
    /// distribution one.
    fn grid_len(&self) -> usize {
        match self {
            Domain::Grid(values) => values.len(),
            _ => 1,
        }
    }
}

/// A `--set` as given, or the variable it became.
enum Assignment {
    Plain(String),
    Variable(usize),
}

/// The domain `value` describes if it is a variable (a mapping with only a
/// `grid_search`, `choice`, `uniform`, `loguniform` or `randint` key); an
/// error for one whose arguments do not fit.
pub(crate) fn domain_of(value: &Value) -> Result<Option<Domain>, String> {
    let Some((kind, arguments)) = value
        .as_mapping()
        .filter(|mapping| mapping.len() == 1)
        .and_then(|mapping| mapping.iter().next())
        .and_then(|(kind, arguments)| Some((kind.as_str()?, arguments)))
    else {
        return Ok(None);
    };
    let list = || match arguments {
        Value::Sequence(values) if !values.is_empty() => Ok(values.clone()),
        _ => Err(format!("{kind} takes a non-empty list of values")),
    };
    let bounds = |positive: bool| -> Result<(f64, f64), String> {
        match arguments.as_sequence().map(|s| s.as_slice()) {
            Some([low, high]) => match (low.as_f64(), high.as_f64()) {
                (Some(low), Some(high))
                    if low.is_finite()
                        && high.is_finite()
                        && low < high
                        && (!positive || low > 0.0) =>
                {
                    Ok((low, high))
                }
                _ => Err(format!(
                    "{kind} takes [low, high], two finite numbers with low < high{}",
                    if positive { " and low > 0" } else { "" }
                )),
            },
            _ => Err(format!("{kind} takes [low, high]")),
        }
    };
    Ok(Some(match kind {
        "grid_search" => Domain::Grid(list()?),
        "choice" => Domain::Choice(list()?),
        "uniform" => {
            let (low, high) = bounds(false)?;
            Domain::Uniform { low, high }
        }
        "loguniform" => {
            let (low, high) = bounds(true)?;
            Domain::LogUniform { low, high }
        }
        "randint" => match arguments.as_sequence().map(|s| s.as_slice()) {
            Some([low, high]) => match (low.as_i64(), high.as_i64()) {
                (Some(low), Some(high)) if low < high => Domain::RandInt { low, high },
                _ => return Err("randint takes [low, high], whole numbers with low < high".into()),
            },
            _ => return Err("randint takes [low, high]".into()),
        },
        _ => return Ok(None),
    }))
}

/// Every variable below `value` (at `path`), in document order.
fn find_variables(
    value: &Value,
    path: &mut Vec<String>,
    variables: &mut Vec<Variable>,
) -> Result<(), String> {
    if let Some(domain) = domain_of(value).map_err(|e| format!("{}: {e}", path.join(".")))? {
        variables.push(Variable {
            key: path.clone(),
            domain,
        });
        return Ok(());
    }
    if let Value::Mapping(mapping) = value {
        for (key, child) in mapping {
            let Some(key) = key.as_str() else { continue };
            path.push(key.to_string());
            find_variables(child, path, variables)?;
            path.pop();
        }
    }
    Ok(())
}

/// The value at `key` in `document`, which `find_variables` found there.
fn slot<'a>(document: &'a mut Value, key: &[String]) -> &'a mut Value {
    key.iter().fold(document, |value, part| {
        value
            .as_mapping_mut()
            .and_then(|mapping: &mut Mapping| mapping.get_mut(part.as_str()))
            .expect("a variable's path leads to it")
    })
}

/// Every combination of one value per grid (index 0 for a distribution),
/// the last grid varying fastest.
fn grid_combinations(variables: &[Variable]) -> Vec<Vec<usize>> {
    variables
        .iter()
        .fold(vec![Vec::new()], |prefixes, variable| {
            prefixes
                .into_iter()
                .flat_map(|prefix| {
                    (0..variable.domain.grid_len()).map(move |pick| {
                        let mut picks = prefix.clone();
                        picks.push(pick);
                        picks
                    })
                })
                .collect()
        })
}

/// Each variable's name in trial tags: its last key, or its whole dotted
/// key where two variables share the last one.
fn tag_names(variables: &[Variable]) -> Vec<String> {
    let last = |variable: &Variable| variable.key.last().cloned().unwrap_or_default();
    variables
        .iter()
        .map(|variable| {
            let shared = variables
                .iter()
                .filter(|other| last(other) == last(variable))
                .count()
                > 1;
            if shared {
                variable.key.join(".")
            } else {
                last(variable)
            }
        })
        .collect()
}

/// `value` as YAML on one line, for a `--set`.
pub(crate) fn inline_yaml(value: &Value) -> String {
    match value {
        Value::String(text) => serde_yaml_ng::to_string(text)
            .map_or_else(|_| text.clone(), |s| s.trim_end().to_string()),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// `value` in a trial's tag, which names its run directory: strings as
/// they are, anything else as compact JSON (a drawn float shortened), no
/// path separators.
fn tag_value(domain: &Domain, value: &Value) -> String {
    let text = match (domain, value.as_f64()) {
        (Domain::Uniform { .. } | Domain::LogUniform { .. }, Some(x)) => short_float(x),
        _ => match value {
            Value::String(text) => text.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        },
    };
    text.replace(['/', '\\'], "_")
}

/// `x` to about four significant digits: `0.9512`, `1.235e-4`.
pub(crate) fn short_float(x: f64) -> String {
    if (0.01..1000.0).contains(&x.abs()) {
        let fixed = format!("{x:.4}");
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{x:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::AlgorithmConfig;

    const PPO: &str = "\
algorithm: PPO
env: CartPole-v1
training:
  lr: {grid_search: [1.0e-3, 1.0e-4]}
  gamma: 0.99
model:
  fcnet_hiddens: {grid_search: [[32], [64, 64]]}
stop:
  iterations: 1
";

    fn trials(source: &str, overrides: &[&str]) -> Result<Vec<Trial>, String> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        expand(source, "sweep.yaml", &overrides, Sampling::default()).map_err(|e| e.to_string())
    }

    fn lr(trial: &Trial) -> f64 {
        match &trial.config.training {
            AlgorithmConfig::Ppo(training) => training.lr,
            other => panic!("a PPO sweep gave {other:?}"),
        }
    }

    #[test]
    fn every_combination_is_a_trial_the_last_grid_varying_fastest() {
        let trials = trials(PPO, &["training.gamma={grid_search: [0.9, 0.95]}"]).unwrap();
        let tags: Vec<&str> = trials.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(
            tags,
            [
                "lr=0.001,fcnet_hiddens=[32],gamma=0.9",
                "lr=0.001,fcnet_hiddens=[32],gamma=0.95",
                "lr=0.001,fcnet_hiddens=[64,64],gamma=0.9",
                "lr=0.001,fcnet_hiddens=[64,64],gamma=0.95",
                "lr=0.0001,fcnet_hiddens=[32],gamma=0.9",
                "lr=0.0001,fcnet_hiddens=[32],gamma=0.95",
                "lr=0.0001,fcnet_hiddens=[64,64],gamma=0.9",
                "lr=0.0001,fcnet_hiddens=[64,64],gamma=0.95",
            ]
        );
        let last = &trials[7];
        assert_eq!(lr(last), 1e-4);
        assert_eq!(last.config.model.fcnet_hiddens, [64, 64]);
        match &last.config.training {
            AlgorithmConfig::Ppo(training) => assert_eq!(training.gamma, 0.95),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_set_applies_to_every_trial_and_no_grid_is_one_untagged_trial() {
        let trials_with_set = trials(PPO, &["stop.iterations=3"]).unwrap();
        assert_eq!(trials_with_set.len(), 4);
        assert!(trials_with_set
            .iter()
            .all(|t| t.config.stop.iterations == Some(3)));
        let plain = PPO
            .replace("{grid_search: [1.0e-3, 1.0e-4]}", "1.0e-3")
            .replace("{grid_search: [[32], [64, 64]]}", "[32]");
        let single = trials(&plain, &[]).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].tag, "");
        assert_eq!(
            single[0].config,
            ExperimentConfig::parse(&plain, "x", &[]).unwrap()
        );
    }

    #[test]
    fn grids_sharing_a_last_key_are_tagged_with_their_whole_key() {
        let source = PPO.replace(
            "stop:",
            "env_runners:\n  num_env_runners: {grid_search: [0]}\nstop:",
        );
        let trials = trials(
            &source,
            &[
                "evaluation.num_env_runners={grid_search: [1]}",
                "env={grid_search: [ALE/Pong-v5]}",
            ],
        )
        .unwrap();
        assert_eq!(
            trials[0].tag,
            "lr=0.001,fcnet_hiddens=[32],env_runners.num_env_runners=0,\
             evaluation.num_env_runners=1,env=ALE_Pong-v5"
        );
        assert_eq!(trials[0].config.evaluation.num_env_runners, 1);
        assert_eq!(trials[0].config.env.id, "ALE/Pong-v5");
    }

    #[test]
    fn a_bad_grid_or_a_bad_value_in_one_trial_is_refused_with_its_key() {
        let empty = PPO.replace("[1.0e-3, 1.0e-4]", "[]");
        let error = trials(&empty, &[]).unwrap_err();
        assert!(
            error.contains("training.lr: grid_search takes a non-empty list"),
            "{error}"
        );
        let error = trials(PPO, &["training.lr={grid_search: 3}"]).unwrap_err();
        assert!(
            error.contains("--set training.lr={grid_search: 3}: grid_search takes"),
            "{error}"
        );
        // The second lr is out of range: its trial is named, with the line.
        let negative = PPO.replace("[1.0e-3, 1.0e-4]", "[1.0e-3, -1.0]");
        let error = trials(&negative, &[]).unwrap_err();
        assert!(
            error.contains("trial lr=-1.0,fcnet_hiddens=[32]: training.lr"),
            "{error}"
        );
        assert!(error.contains("at line 4"), "{error}");
        let error = trials(PPO, &["training.lrr={grid_search: [1, 2]}"]).unwrap_err();
        assert!(error.contains("no config key `training.lrr`"), "{error}");
    }
    fn sampled(source: &str, overrides: &[&str], num_samples: usize, seed: u64) -> Vec<Trial> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        expand(
            source,
            "search.yaml",
            &overrides,
            Sampling { num_samples, seed },
        )
        .unwrap()
    }

    fn ppo(trial: &Trial) -> &crate::algorithms::ppo::PpoConfig {
        match &trial.config.training {
            AlgorithmConfig::Ppo(training) => training,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn distributions_draw_within_their_bounds_once_per_trial_of_every_sample() {
        let source = "\
algorithm: PPO
env: CartPole-v1
training:
  lr: {loguniform: [1.0e-5, 1.0e-2]}
  gamma: {uniform: [0.9, 0.999]}
  num_epochs: {randint: [1, 4]}
  minibatch_size: {choice: [64, 128]}
  entropy_coeff: {grid_search: [0.0, 0.01]}
";
        let trials = sampled(source, &[], 100, 7);
        assert_eq!(trials.len(), 200);
        // The grid cycles within each sample; every trial draws anew.
        for (index, trial) in trials.iter().enumerate() {
            let training = ppo(trial);
            assert_eq!(training.entropy_coeff, [0.0, 0.01][index % 2]);
            assert!((1e-5..1e-2).contains(&training.lr), "{}", training.lr);
            assert!((0.9..0.999).contains(&training.gamma));
            assert!((1..4).contains(&training.num_epochs));
            assert!([64, 128].contains(&training.minibatch_size));
        }
        let distinct = |values: Vec<String>| {
            values
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        assert_eq!(
            distinct(
                trials
                    .iter()
                    .map(|t| ppo(t).num_epochs.to_string())
                    .collect()
            ),
            3
        );
        assert_eq!(
            distinct(
                trials
                    .iter()
                    .map(|t| ppo(t).minibatch_size.to_string())
                    .collect()
            ),
            2
        );
        assert_eq!(
            distinct(trials.iter().map(|t| ppo(t).lr.to_string()).collect()),
            200
        );
        // Log-uniform: as many draws in each decade (about 67 of 200 each).
        for decade in [1e-5, 1e-4, 1e-3] {
            let count = trials
                .iter()
                .filter(|t| (decade..decade * 10.0).contains(&ppo(t).lr))
                .count();
            assert!(
                (40..95).contains(&count),
                "{count} draws in [{decade}, {})",
                decade * 10.0
            );
        }
        // A drawn value's tag is short; the config keeps the exact draw.
        let tag = &trials[0].tag;
        assert!(tag.starts_with("lr="), "{tag}");
        assert!(tag.len() < 90, "{tag}");
    }

    #[test]
    fn the_search_seed_repeats_a_search_and_another_seed_draws_another() {
        let source = PPO.replace(
            "{grid_search: [1.0e-3, 1.0e-4]}",
            "{uniform: [1.0e-4, 1.0e-3]}",
        );
        let lrs = |seed| {
            sampled(&source, &["seed={randint: [0, 1000]}"], 4, seed)
                .iter()
                .map(|t| (lr(t), t.config.seed))
                .collect::<Vec<_>>()
        };
        assert_eq!(lrs(3), lrs(3));
        assert_ne!(lrs(3), lrs(4));
        assert_eq!(lrs(3).len(), 8);
    }

    #[test]
    fn a_distribution_whose_bounds_do_not_fit_is_refused() {
        for (spec, message) in [
            (
                "{uniform: [2.0, 1.0]}",
                "uniform takes [low, high], two finite numbers with low < high",
            ),
            ("{uniform: [1.0]}", "uniform takes [low, high]"),
            (
                "{loguniform: [0.0, 1.0]}",
                "loguniform takes [low, high], two finite numbers with low < high and low > 0",
            ),
            (
                "{randint: [1.5, 3]}",
                "randint takes [low, high], whole numbers",
            ),
            ("{choice: []}", "choice takes a non-empty list"),
        ] {
            let source = PPO.replace("{grid_search: [1.0e-3, 1.0e-4]}", spec);
            let overrides: Vec<String> = Vec::new();
            let error = expand(&source, "s.yaml", &overrides, Sampling::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("training.lr: {message}")),
                "{spec}: {error}"
            );
        }
    }
}
