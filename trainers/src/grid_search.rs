//! Grid search, as Ray Tune's `tune.grid_search`: any value of an experiment
//! config, in the file or in `--set KEY=VALUE`, may be
//! `{grid_search: [v1, v2, ...]}`, and the experiment becomes one trial per
//! combination of those values (their cartesian product; the file's grids in
//! document order, then `--set`'s, the last varying fastest).
//!
//! Trials are expanded from the YAML document, not from the typed config,
//! because a grid stands where the schema expects a number or a string. Each
//! trial is then decoded, overridden and validated exactly as a config
//! without grids, so a bad value in one trial is refused with the key that
//! holds it (and its line in the file) before any trial starts.

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use crate::config::{ConfigError, ExperimentConfig};

/// The key that marks a grid, as in Ray Tune.
const GRID_SEARCH: &str = "grid_search";

/// One combination of the grids' values.
#[derive(Debug)]
pub struct Trial {
    /// `lr=0.001,gamma=0.9`: each grid's key and this trial's value; empty
    /// for an experiment without grids.
    pub tag: String,
    pub config: ExperimentConfig,
}

/// The trials of the config at `path` with `overrides` applied.
pub fn load(path: &Path, overrides: &[String]) -> Result<Vec<Trial>, ConfigError> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: origin.clone(),
        error,
    })?;
    expand(&source, &origin, overrides)
}

/// The trials of YAML `source` (named `origin` in errors) with `overrides`
/// applied: one trial, tagged "", when nothing is a grid.
pub fn expand(source: &str, origin: &str, overrides: &[String]) -> Result<Vec<Trial>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: origin.to_string(),
        message,
    };
    // A document that is not YAML, or has no grid, is parsed as it is, so
    // its errors carry serde's line and column.
    let Ok(document) = serde_yaml_ng::from_str::<Value>(source) else {
        return single(source, origin, overrides);
    };
    let mut grids = Vec::new();
    find_grids(&document, &mut Vec::new(), &mut grids).map_err(invalid)?;
    let file_grids = grids.len();
    let mut assignments = Vec::new();
    for assignment in overrides {
        let grid = match assignment.split_once('=') {
            Some((key, value)) => {
                grid_values(&serde_yaml_ng::from_str(value).unwrap_or(Value::Null))
                    .map_err(|message| ConfigError::Override {
                        assignment: assignment.clone(),
                        message,
                    })?
                    .map(|values| Grid {
                        key: key.split('.').map(str::to_string).collect(),
                        values,
                    })
            }
            None => None,
        };
        match grid {
            Some(grid) => {
                assignments.push(Assignment::Grid(grids.len()));
                grids.push(grid);
            }
            None => assignments.push(Assignment::Plain(assignment.clone())),
        }
    }
    if grids.is_empty() {
        return single(source, origin, overrides);
    }
    let names = tag_names(&grids);
    let mut trials = Vec::new();
    for choice in combinations(&grids) {
        let mut variant = document.clone();
        for (grid, &pick) in grids[..file_grids].iter().zip(&choice) {
            *slot(&mut variant, &grid.key) = grid.values[pick].clone();
        }
        let overrides: Vec<String> = assignments
            .iter()
            .map(|assignment| match assignment {
                Assignment::Plain(text) => text.clone(),
                Assignment::Grid(index) => {
                    let grid = &grids[*index];
                    format!(
                        "{}={}",
                        grid.key.join("."),
                        inline_yaml(&grid.values[choice[*index]])
                    )
                }
            })
            .collect();
        let tag = names
            .iter()
            .zip(grids.iter().zip(&choice))
            .map(|(name, (grid, &pick))| format!("{name}={}", tag_value(&grid.values[pick])))
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
    Ok(trials)
}

/// The one trial of a config without grids.
fn single(source: &str, origin: &str, overrides: &[String]) -> Result<Vec<Trial>, ConfigError> {
    Ok(vec![Trial {
        tag: String::new(),
        config: ExperimentConfig::parse(source, origin, overrides)?,
    }])
}

/// One grid: where it stands (a path of mapping keys) and its values.
struct Grid {
    key: Vec<String>,
    values: Vec<Value>,
}

/// A `--set` as given, or the grid it became.
enum Assignment {
    Plain(String),
    Grid(usize),
}

/// The values of `value` if it is a grid (`{grid_search: [...]}`); an error
/// for a grid without a non-empty list.
fn grid_values(value: &Value) -> Result<Option<Vec<Value>>, String> {
    let Some(mapping) = value.as_mapping().filter(|m| m.len() == 1) else {
        return Ok(None);
    };
    match mapping.get(GRID_SEARCH) {
        None => Ok(None),
        Some(Value::Sequence(values)) if !values.is_empty() => Ok(Some(values.clone())),
        Some(_) => Err(format!("{GRID_SEARCH} takes a non-empty list of values")),
    }
}

/// Every grid below `value` (at `path`), in document order.
fn find_grids(value: &Value, path: &mut Vec<String>, grids: &mut Vec<Grid>) -> Result<(), String> {
    if let Some(values) = grid_values(value).map_err(|e| format!("{}: {e}", path.join(".")))? {
        grids.push(Grid {
            key: path.clone(),
            values,
        });
        return Ok(());
    }
    if let Value::Mapping(mapping) = value {
        for (key, child) in mapping {
            let Some(key) = key.as_str() else { continue };
            path.push(key.to_string());
            find_grids(child, path, grids)?;
            path.pop();
        }
    }
    Ok(())
}

/// The value at `key` in `document`, which `find_grids` found there.
fn slot<'a>(document: &'a mut Value, key: &[String]) -> &'a mut Value {
    key.iter().fold(document, |value, part| {
        value
            .as_mapping_mut()
            .and_then(|mapping: &mut Mapping| mapping.get_mut(part.as_str()))
            .expect("a grid's path leads to it")
    })
}

/// Every combination of one value per grid, as indices, the last grid
/// varying fastest.
fn combinations(grids: &[Grid]) -> Vec<Vec<usize>> {
    grids.iter().fold(vec![Vec::new()], |prefixes, grid| {
        prefixes
            .into_iter()
            .flat_map(|prefix| {
                (0..grid.values.len()).map(move |pick| {
                    let mut choice = prefix.clone();
                    choice.push(pick);
                    choice
                })
            })
            .collect()
    })
}

/// Each grid's name in trial tags: its last key, or its whole dotted key
/// where two grids share the last one.
fn tag_names(grids: &[Grid]) -> Vec<String> {
    let last = |grid: &Grid| grid.key.last().cloned().unwrap_or_default();
    grids
        .iter()
        .map(|grid| {
            let shared = grids
                .iter()
                .filter(|other| last(other) == last(grid))
                .count()
                > 1;
            if shared {
                grid.key.join(".")
            } else {
                last(grid)
            }
        })
        .collect()
}

/// `value` as YAML on one line, for a `--set`.
fn inline_yaml(value: &Value) -> String {
    match value {
        Value::String(text) => serde_yaml_ng::to_string(text)
            .map_or_else(|_| text.clone(), |s| s.trim_end().to_string()),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// `value` in a trial's tag, which names its run directory: strings as
/// they are, anything else as compact JSON, without path separators.
fn tag_value(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    };
    text.replace(['/', '\\'], "_")
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
        expand(source, "sweep.yaml", &overrides).map_err(|e| e.to_string())
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
}
