//! Ray Tune's population based training (`PopulationBasedTraining`,
//! Jaderberg et al. 2017): the trials of a search train at once, and every
//! `perturbation_interval` of `time_attr` a trial in the bottom
//! `quantile_fraction` of the population goes on from a trial in the top
//! one: that trial's weights, optimizer state and counters, and its config
//! with the `hyperparam_mutations` keys perturbed. So a search spends its
//! time on the hyperparameters that work, and those change during training
//! (a schedule found rather than fixed).
//!
//! As Tune's asynchronous PBT: a trial is ranked when its own result
//! crosses its next perturbation time, against the score every other
//! trial had at its latest one (trials that have finished left out). A top
//! trial then saves a checkpoint, which is what a bottom trial clones until
//! the top trial's next perturbation; a bottom trial clones a top trial
//! picked at random, if that one has a checkpoint, and takes over its
//! perturbation time. Exploring perturbs each mutated key of the donor's
//! config: a list's value moves to a neighbour in the list (or, with
//! `resample_probability` or when it is not in the list, is drawn from
//! it); a distribution's value is multiplied by one of
//! `perturbation_factors` (or, with `resample_probability`, drawn anew).
//!
//! Where oxray differs from Tune, and why: a perturbed value stays within
//! its distribution's bounds (Tune lets it leave them; oxray's config
//! refuses, say, a `gamma` above 1, and a perturbation the config still
//! refuses keeps the donor's value); a bottom trial clones only a strictly
//! better one (two trials tied at the cut would otherwise clone each other
//! in turn); `choice` is explored as a list; and mutations are checked
//! against every trial's config before the search starts, including that
//! they leave the network's shape alone, since a clone loads its donor's
//! weights.

use std::path::{Path, PathBuf};

use oxray_rl::metrics::{Metrics, EPISODE_RETURN_MEAN, TIME_TOTAL_S};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::{require, round, Decision, Exploit, SchedulerError};
use crate::config::{ConfigError, ExperimentConfig, ScoreOrder};
use crate::run::same_network;
use crate::search_space::{domain_of, inline_yaml, short_float, Domain};

/// `--scheduler '{type: pbt, hyperparam_mutations: {...}, ...}'`: Tune's
/// `PopulationBasedTraining` keys, with its defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbtConfig {
    /// The result key that measures a trial's progress.
    pub time_attr: String,
    /// The result key that ranks trials.
    pub metric: String,
    pub mode: ScoreOrder,
    /// How much `time_attr` passes between a trial's perturbations.
    pub perturbation_interval: f64,
    /// No perturbation before `time_attr` reaches this.
    pub burn_in_period: f64,
    /// Dotted config keys (or nested mappings of them) to a list of values
    /// or a distribution (`choice`, `uniform`, `loguniform`, `randint`).
    pub hyperparam_mutations: Mapping,
    /// The share of the population in the bottom (and the top) quantile.
    pub quantile_fraction: f64,
    /// The chance that a key is drawn anew instead of perturbed.
    pub resample_probability: f64,
    /// A distribution's value is multiplied by one of these.
    pub perturbation_factors: Vec<f64>,
}

impl Default for PbtConfig {
    fn default() -> Self {
        PbtConfig {
            time_attr: TIME_TOTAL_S.to_string(),
            metric: EPISODE_RETURN_MEAN.to_string(),
            mode: ScoreOrder::Max,
            perturbation_interval: 60.0,
            burn_in_period: 0.0,
            hyperparam_mutations: Mapping::new(),
            quantile_fraction: 0.25,
            resample_probability: 0.25,
            perturbation_factors: vec![1.2, 0.8],
        }
    }
}

impl PbtConfig {
    /// Refuses values Tune's PBT refuses, and mutations that are neither a
    /// list nor a distribution.
    pub(super) fn check(&self) -> Result<(), SchedulerError> {
        require(
            self.perturbation_interval > 0.0 && self.perturbation_interval.is_finite(),
            "perturbation_interval",
            "must be positive",
        )?;
        require(
            self.burn_in_period >= 0.0 && self.burn_in_period.is_finite(),
            "burn_in_period",
            "must be zero or more",
        )?;
        require(
            self.quantile_fraction > 0.0 && self.quantile_fraction <= 0.5,
            "quantile_fraction",
            "must be in (0, 0.5]",
        )?;
        require(
            (0.0..=1.0).contains(&self.resample_probability),
            "resample_probability",
            "must be in [0, 1]",
        )?;
        require(
            !self.perturbation_factors.is_empty()
                && self
                    .perturbation_factors
                    .iter()
                    .all(|f| *f > 0.0 && f.is_finite()),
            "perturbation_factors",
            "must be a non-empty list of positive numbers",
        )?;
        self.mutations().map(drop)
    }

    /// `hyperparam_mutations` as a list of keys and how each varies.
    fn mutations(&self) -> Result<Vec<Mutation>, SchedulerError> {
        let mut mutations = Vec::new();
        collect_mutations(&self.hyperparam_mutations, &[], &mut mutations)?;
        require(
            !mutations.is_empty(),
            "hyperparam_mutations",
            "must name at least one key",
        )?;
        Ok(mutations)
    }
}

/// One key PBT perturbs.
#[derive(Debug)]
struct Mutation {
    key: Vec<String>,
    space: Space,
}

impl Mutation {
    fn name(&self) -> String {
        self.key.join(".")
    }
}

#[derive(Debug)]
enum Space {
    /// A list (or `choice`): explored by moving to a neighbour.
    Values(Vec<Value>),
    /// A numeric distribution: explored by scaling, within `[low, high]`.
    Numbers {
        domain: Domain,
        low: f64,
        high: f64,
        whole: bool,
    },
}

fn collect_mutations(
    mapping: &Mapping,
    prefix: &[String],
    mutations: &mut Vec<Mutation>,
) -> Result<(), SchedulerError> {
    for (key, value) in mapping {
        let mut path = prefix.to_vec();
        match key.as_str() {
            Some(key) => path.extend(key.split('.').map(str::to_string)),
            None => {
                return Err(SchedulerError::Mutation {
                    key: inline_yaml(key),
                    message: "keys are config keys, such as training.lr".into(),
                })
            }
        }
        let refused = |message: String| SchedulerError::Mutation {
            key: path.join("."),
            message,
        };
        let not_a_space = || {
            refused(format!(
                "a list or a distribution (choice, uniform, loguniform, randint), not {}",
                inline_yaml(value)
            ))
        };
        let space = match value {
            Value::Sequence(values) if !values.is_empty() => Space::Values(values.clone()),
            Value::Mapping(nested) => match domain_of(value).map_err(refused)? {
                Some(Domain::Choice(values)) => Space::Values(values),
                Some(Domain::Grid(_)) => return Err(not_a_space()),
                Some(domain) => {
                    let (low, high, whole) = match domain {
                        Domain::Uniform { low, high } | Domain::LogUniform { low, high } => {
                            (low, high, false)
                        }
                        // `high` is excluded, as when drawn.
                        Domain::RandInt { low, high } => (low as f64, (high - 1) as f64, true),
                        Domain::Grid(_) | Domain::Choice(_) => unreachable!("matched above"),
                    };
                    Space::Numbers {
                        domain,
                        low,
                        high,
                        whole,
                    }
                }
                None => {
                    collect_mutations(nested, &path, mutations)?;
                    continue;
                }
            },
            _ => return Err(not_a_space()),
        };
        mutations.push(Mutation { key: path, space });
    }
    Ok(())
}

/// PBT's state over a search's population.
#[derive(Debug)]
pub struct Pbt {
    config: PbtConfig,
    mutations: Vec<Mutation>,
    trials: Vec<TrialState>,
    rng: ChaCha8Rng,
}

#[derive(Debug, Default)]
struct TrialState {
    /// The score at the latest perturbation, larger is better.
    last_score: Option<f64>,
    last_perturbation_time: f64,
    /// Saved at the latest perturbation while in the top quantile, with
    /// the config it trained with.
    last_checkpoint: Option<(PathBuf, ExperimentConfig)>,
    complete: bool,
}

/// Where a perturbed config comes from, in its errors.
const ORIGIN: &str = "a perturbed config";

impl Pbt {
    /// PBT over trials starting from `trials`; refuses a population of one
    /// and a mutation that a trial's config cannot take.
    pub fn new(
        config: PbtConfig,
        trials: &[&ExperimentConfig],
        seed: u64,
    ) -> Result<Pbt, SchedulerError> {
        if trials.len() < 2 {
            return Err(SchedulerError::NoPopulation(trials.len()));
        }
        let mutations = config.mutations()?;
        for trial in trials {
            for mutation in &mutations {
                check_mutation(mutation, trial)?;
            }
        }
        Ok(Pbt {
            config,
            mutations,
            trials: trials.iter().map(|_| TrialState::default()).collect(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Records `trial`'s `result`; at a perturbation time, a top trial
    /// checkpoints and a bottom trial exploits a better one.
    pub fn on_result(&mut self, trial: usize, result: &Metrics) -> Decision {
        let config = &self.config;
        let (Some(&time), Some(&score)) =
            (result.get(&config.time_attr), result.get(&config.metric))
        else {
            return Decision::Continue;
        };
        let state = &mut self.trials[trial];
        if !score.is_finite()
            || time < config.burn_in_period
            || time - state.last_perturbation_time < config.perturbation_interval
        {
            return Decision::Continue;
        }
        let score = config.mode.oriented(score);
        state.last_score = Some(score);
        state.last_perturbation_time = time;
        let (bottom, top) = self.quantiles();
        if top.contains(&trial) {
            return Decision::Checkpoint;
        }
        self.trials[trial].last_checkpoint = None;
        if !bottom.contains(&trial) {
            return Decision::Continue;
        }
        let better: Vec<usize> = top
            .into_iter()
            .filter(|&donor| self.trials[donor].last_score > Some(score))
            .collect();
        if better.is_empty() {
            return Decision::Continue;
        }
        let donor = better[self.rng.gen_range(0..better.len())];
        let Some((checkpoint, donor_config)) = self.trials[donor].last_checkpoint.clone() else {
            return Decision::Continue;
        };
        let (config, changes, tag) = self.explore(&donor_config);
        let donor_state = &self.trials[donor];
        let donor_time = donor_state.last_perturbation_time;
        let description = format!(
            "clones trial {donor} as of {} {} ({} {} below its {}; PBT): {}",
            self.config.time_attr,
            round(donor_time),
            self.config.metric,
            round(self.config.mode.oriented(score)),
            round(
                self.config
                    .mode
                    .oriented(donor_state.last_score.unwrap_or(score))
            ),
            changes.join(", ")
        );
        self.trials[trial].last_perturbation_time = donor_time;
        Decision::Exploit(Exploit {
            checkpoint,
            config: Box::new(config),
            description,
            tag,
        })
    }

    /// The config a trial whose run last trained with `run` resumes with:
    /// that one, which PBT may have cloned from another trial and
    /// explored, with the search's `stop:` (`trial`'s), so that a resumed
    /// search can be given further to go (`--set stop.iterations=...`).
    pub fn resumed_config(
        &self,
        trial: &ExperimentConfig,
        run: &ExperimentConfig,
    ) -> ExperimentConfig {
        ExperimentConfig {
            stop: trial.stop.clone(),
            ..run.clone()
        }
    }

    /// `trial` saved `checkpoint` while training with `config`.
    pub fn on_checkpoint(&mut self, trial: usize, checkpoint: &Path, config: &ExperimentConfig) {
        self.trials[trial].last_checkpoint = Some((checkpoint.to_path_buf(), config.clone()));
    }

    /// `trial` trains no more: it is no longer ranked or cloned.
    pub fn on_trial_complete(&mut self, trial: usize) {
        self.trials[trial].complete = true;
    }

    /// The bottom and top quantiles of the trials still training that have
    /// a score: `ceil(n · quantile_fraction)` each, at most half of them;
    /// none while fewer than two have one.
    fn quantiles(&self) -> (Vec<usize>, Vec<usize>) {
        let mut ranked: Vec<(usize, f64)> = self
            .trials
            .iter()
            .enumerate()
            .filter(|(_, state)| !state.complete)
            .filter_map(|(trial, state)| Some((trial, state.last_score?)))
            .collect();
        if ranked.len() < 2 {
            return (Vec::new(), Vec::new());
        }
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
        let count = ((ranked.len() as f64 * self.config.quantile_fraction).ceil() as usize)
            .min(ranked.len() / 2);
        let trials = |slice: &[(usize, f64)]| slice.iter().map(|(trial, _)| *trial).collect();
        (
            trials(&ranked[..count]),
            trials(&ranked[ranked.len() - count..]),
        )
    }

    /// `donor`'s config with every mutated key perturbed, what changed,
    /// and the keys' new values as a tag.
    fn explore(&mut self, donor: &ExperimentConfig) -> (ExperimentConfig, Vec<String>, String) {
        let yaml = donor.to_yaml();
        let document: Value = serde_yaml_ng::from_str(&yaml).expect("a config's YAML parses");
        let mut explored = donor.clone();
        let mut overrides = Vec::new();
        let mut changes = Vec::new();
        let mut tag = Vec::new();
        for mutation in &self.mutations {
            let current = lookup(&document, &mutation.key)
                .cloned()
                .unwrap_or(Value::Null);
            let value = perturb(mutation, &current, &self.config, &mut self.rng);
            let mut candidate = overrides.clone();
            candidate.push(format!("{}={}", mutation.name(), inline_yaml(&value)));
            let name = mutation.key.last().map_or("", String::as_str);
            match ExperimentConfig::parse(&yaml, ORIGIN, &candidate) {
                Ok(config) => {
                    explored = config;
                    overrides = candidate;
                    tag.push(format!("{name}={}", tag_value(&value)));
                    changes.push(format!(
                        "{} {} -> {}",
                        mutation.name(),
                        inline_yaml(&current),
                        inline_yaml(&value)
                    ));
                }
                Err(_) => {
                    tag.push(format!("{name}={}", tag_value(&current)));
                    changes.push(format!(
                        "{} {} kept ({} refused)",
                        mutation.name(),
                        inline_yaml(&current),
                        inline_yaml(&value)
                    ))
                }
            }
        }
        (explored, changes, tag.join(","))
    }
}

/// Tune's `_explore` for one key (within bounds; see the module's doc).
fn perturb(
    mutation: &Mutation,
    current: &Value,
    config: &PbtConfig,
    rng: &mut ChaCha8Rng,
) -> Value {
    match &mutation.space {
        Space::Values(values) => {
            let last = values.len() - 1;
            let position = values.iter().position(|value| same(value, current));
            match position {
                Some(at) if rng.gen::<f64>() >= config.resample_probability => {
                    if rng.gen_bool(0.5) {
                        values[at.saturating_sub(1)].clone()
                    } else {
                        values[(at + 1).min(last)].clone()
                    }
                }
                _ => values[rng.gen_range(0..=last)].clone(),
            }
        }
        Space::Numbers {
            domain,
            low,
            high,
            whole,
        } => {
            if rng.gen::<f64>() < config.resample_probability {
                return domain.value(0, rng);
            }
            let factors = &config.perturbation_factors;
            let factor = factors[rng.gen_range(0..factors.len())];
            let scaled = (current.as_f64().unwrap_or(*low) * factor).clamp(*low, *high);
            if *whole {
                Value::from(scaled.trunc() as i64)
            } else {
                Value::from(scaled)
            }
        }
    }
}

/// Refuses `mutation` if `trial`'s config has no such key, holds something
/// a distribution cannot scale there, refuses one of the values it could
/// take, or would build another network with it.
fn check_mutation(mutation: &Mutation, trial: &ExperimentConfig) -> Result<(), SchedulerError> {
    let refused = |message: String| SchedulerError::Mutation {
        key: mutation.name(),
        message,
    };
    let yaml = trial.to_yaml();
    let document: Value = serde_yaml_ng::from_str(&yaml).expect("a config's YAML parses");
    let Some(current) = lookup(&document, &mutation.key) else {
        return Err(refused(
            "is not a key of the config (a run's params.yaml lists every key)".into(),
        ));
    };
    let candidates: Vec<Value> = match &mutation.space {
        Space::Values(values) => values.clone(),
        Space::Numbers {
            low, high, whole, ..
        } => {
            if current.as_f64().is_none() {
                return Err(refused(format!(
                    "is {}, which a distribution cannot perturb",
                    inline_yaml(current)
                )));
            }
            if *whole {
                vec![Value::from(*low as i64), Value::from(*high as i64)]
            } else {
                vec![Value::from(*low), Value::from(*high)]
            }
        }
    };
    for value in candidates {
        let assignment = format!("{}={}", mutation.name(), inline_yaml(&value));
        let perturbed = ExperimentConfig::parse(&yaml, ORIGIN, &[assignment]).map_err(|error| {
            let reason = match error {
                ConfigError::Invalid { message, .. } | ConfigError::Override { message, .. } => {
                    message
                }
                other => other.to_string(),
            };
            refused(format!("{} is refused: {reason}", inline_yaml(&value)))
        })?;
        if !same_network(trial, &perturbed).map_err(|error| refused(error.to_string()))? {
            return Err(refused(format!(
                "{} builds another network, whose weights a clone could not load from \
                 its donor; mutate keys that leave the network's shape alone",
                inline_yaml(&value)
            )));
        }
    }
    Ok(())
}

/// The value at dotted `key` in a config's YAML document.
fn lookup<'a>(document: &'a Value, key: &[String]) -> Option<&'a Value> {
    key.iter().try_fold(document, |value, part| {
        value.as_mapping()?.get(part.as_str())
    })
}

/// `value` in a trial's tag: floats shortened, as a drawn value's.
fn tag_value(value: &Value) -> String {
    match value {
        Value::Number(number) if number.is_f64() => short_float(number.as_f64().unwrap_or(0.0)),
        other => inline_yaml(other),
    }
}

/// Equal values, numbers compared as numbers (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    a == b || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::AlgorithmConfig;
    use oxray_rl::metrics::TRAINING_ITERATION;

    const PPO: &str = "\
algorithm: PPO
env: CartPole-v1
training:
  lr: 1.0e-3
  gamma: 0.95
  num_epochs: 4
";

    fn ppo() -> ExperimentConfig {
        ExperimentConfig::parse(PPO, "test.yaml", &[]).unwrap()
    }

    fn training(config: &ExperimentConfig) -> (f64, f64, usize) {
        match &config.training {
            AlgorithmConfig::Ppo(ppo) => (ppo.lr, ppo.gamma, ppo.num_epochs),
            other => panic!("a PPO config gave {other:?}"),
        }
    }

    fn population(scheduler: &str, size: usize) -> Result<Pbt, SchedulerError> {
        let config: PbtConfig = serde_yaml_ng::from_str(scheduler).unwrap();
        config.check()?;
        let trial = ppo();
        Pbt::new(config, &vec![&trial; size], 7)
    }

    fn result(iteration: f64, score: f64) -> Metrics {
        Metrics::from([
            (TRAINING_ITERATION.to_string(), iteration),
            (EPISODE_RETURN_MEAN.to_string(), score),
        ])
    }

    const EVERY_TWO: &str = "{time_attr: training_iteration, perturbation_interval: 2, \
        resample_probability: 0, hyperparam_mutations: {training.lr: [1.0e-4, 1.0e-3, 1.0e-2]}}";

    /// Two trials, perturbed every two iterations: nothing happens between
    /// perturbation times or while one trial alone has a score; the bottom
    /// trial waits for the top one's checkpoint, then clones it with the
    /// learning rate moved to a neighbour and takes over its perturbation
    /// time.
    #[test]
    fn top_trials_checkpoint_and_bottom_trials_clone_them() {
        let mut pbt = population(EVERY_TWO, 2).unwrap();
        assert_eq!(pbt.on_result(0, &result(1.0, 10.0)), Decision::Continue);
        assert_eq!(pbt.on_result(0, &result(2.0, 10.0)), Decision::Continue);
        // Ranked below trial 0, which has no checkpoint yet.
        assert_eq!(pbt.on_result(1, &result(2.0, 5.0)), Decision::Continue);
        assert_eq!(pbt.on_result(0, &result(3.0, 30.0)), Decision::Continue);
        assert_eq!(pbt.on_result(0, &result(4.0, 20.0)), Decision::Checkpoint);
        pbt.on_checkpoint(0, Path::new("trial0/checkpoint_4"), &ppo());
        assert_eq!(pbt.on_result(1, &result(3.0, 6.0)), Decision::Continue);
        let Decision::Exploit(exploit) = pbt.on_result(1, &result(4.0, 6.0)) else {
            panic!("trial 1 is below trial 0, which has a checkpoint");
        };
        assert_eq!(exploit.checkpoint, Path::new("trial0/checkpoint_4"));
        let (lr, gamma, _) = training(&exploit.config);
        assert!(lr == 1e-4 || lr == 1e-2, "{lr}");
        assert_eq!(gamma, 0.95, "only the mutated keys change");
        assert_eq!(
            exploit.tag,
            format!("lr={}", if lr == 1e-4 { "1.000e-4" } else { "0.01" })
        );
        assert!(
            exploit.description.starts_with(
                "clones trial 0 as of training_iteration 4 (env_runners/episode_return_mean \
                 6 below its 20; PBT): training.lr 0.001 -> "
            ),
            "{}",
            exploit.description
        );
        // Its next perturbation is two iterations after trial 0's.
        assert_eq!(pbt.trials[1].last_perturbation_time, 4.0);
        // A trial that falls out of the top quantile gives up its checkpoint.
        assert_eq!(pbt.on_result(1, &result(6.0, 50.0)), Decision::Checkpoint);
        assert_eq!(pbt.on_result(0, &result(6.0, 40.0)), Decision::Continue);
        assert!(pbt.trials[0].last_checkpoint.is_none());
    }

    /// A bottom trial tied with the top one, or whose only better trial
    /// has finished, goes on as it is; results without the metric, before
    /// the burn-in or not finite are not ranked.
    #[test]
    fn no_clone_of_an_equal_or_finished_trial() {
        let mut pbt = population(EVERY_TWO, 3).unwrap();
        assert_eq!(pbt.on_result(0, &result(2.0, 9.0)), Decision::Continue);
        assert_eq!(pbt.on_result(1, &result(2.0, 9.0)), Decision::Checkpoint);
        pbt.on_checkpoint(1, Path::new("trial1"), &ppo());
        assert_eq!(pbt.quantiles(), (vec![0], vec![1]));
        assert_eq!(pbt.on_result(0, &result(4.0, 9.0)), Decision::Continue);

        pbt.on_trial_complete(1);
        assert_eq!(pbt.on_result(2, &result(2.0, 1.0)), Decision::Continue);
        assert_eq!(pbt.quantiles(), (vec![2], vec![0]));

        let no_metric = Metrics::from([(TRAINING_ITERATION.to_string(), 8.0)]);
        assert_eq!(pbt.on_result(2, &no_metric), Decision::Continue);
        assert_eq!(pbt.on_result(2, &result(8.0, f64::NAN)), Decision::Continue);
        assert_eq!(pbt.trials[2].last_perturbation_time, 2.0);

        let mut burning_in = population(
            "{time_attr: training_iteration, perturbation_interval: 1, burn_in_period: 5, \
             hyperparam_mutations: {training.lr: [1]}}",
            2,
        )
        .unwrap();
        assert_eq!(
            burning_in.on_result(0, &result(4.0, 1.0)),
            Decision::Continue
        );
        assert_eq!(burning_in.trials[0].last_score, None);
    }

    /// Quantiles hold `ceil(n · fraction)` trials, at most half of them,
    /// ranked by score with `min` turned around.
    #[test]
    fn quantiles_take_the_fraction_at_most_half() {
        let mut pbt = population(
            "{time_attr: training_iteration, perturbation_interval: 1, mode: min, \
             quantile_fraction: 0.5, hyperparam_mutations: {training.lr: [1]}}",
            5,
        )
        .unwrap();
        for (trial, loss) in [3.0, 1.0, 4.0, 5.0, 2.0].into_iter().enumerate() {
            pbt.on_result(trial, &result(1.0, loss));
        }
        // ceil(5 · 0.5) = 3 is over half of 5: two each.
        assert_eq!(pbt.quantiles(), (vec![3, 2], vec![4, 1]));
    }

    /// A distribution's value is scaled by a factor and kept within its
    /// bounds (whole numbers stay whole), or drawn anew when resampled.
    #[test]
    fn explore_scales_within_bounds_or_draws_anew() {
        let mut scaled = population(
            "{resample_probability: 0, perturbation_factors: [2.0], hyperparam_mutations: \
             {training: {gamma: {uniform: [0.9, 0.99]}, num_epochs: {randint: [1, 20]}}}}",
            2,
        )
        .unwrap();
        let (config, changes, tag) = scaled.explore(&ppo());
        let (_, gamma, epochs) = training(&config);
        assert_eq!((gamma, epochs), (0.99, 8));
        assert_eq!(
            changes,
            ["training.gamma 0.95 -> 0.99", "training.num_epochs 4 -> 8"]
        );
        assert_eq!(tag, "gamma=0.99,num_epochs=8");

        let mut drawn = population(
            "{resample_probability: 1, hyperparam_mutations: {training.lr: {loguniform: [1.0e-5, 1.0e-4]}}}",
            2,
        )
        .unwrap();
        let (lr, _, _) = training(&drawn.explore(&ppo()).0);
        assert!((1e-5..1e-4).contains(&lr), "{lr}");

        // Tune's factor 1.2 would take gamma past 1, which the config
        // refuses; the distribution's bound stops it at 1.
        let mut past_one = population(
            "{resample_probability: 0, perturbation_factors: [1.2], hyperparam_mutations: \
             {training.gamma: {uniform: [0.5, 1.0]}}}",
            2,
        )
        .unwrap();
        let near_one =
            ExperimentConfig::parse(PPO, "test.yaml", &["training.gamma=0.9".into()]).unwrap();
        let (config, changes, _) = past_one.explore(&near_one);
        assert_eq!(training(&config).1, 1.0);
        assert_eq!(changes, ["training.gamma 0.9 -> 1.0"]);
    }

    /// A resumed trial trains on with its run's last config (cloned and
    /// explored) and the search's stop criteria.
    #[test]
    fn a_resumed_trial_keeps_its_runs_config_and_takes_the_searchs_stop() {
        let pbt = population(EVERY_TWO, 2).unwrap();
        let run = ExperimentConfig::parse(
            PPO,
            "params.yaml",
            &["training.lr=1.0e-4".into(), "training.gamma=0.5".into()],
        )
        .unwrap();
        let trial =
            ExperimentConfig::parse(PPO, "search.yaml", &["stop.iterations=50".into()]).unwrap();
        let resumed = pbt.resumed_config(&trial, &run);
        assert_eq!(training(&resumed), (1e-4, 0.5, 4));
        assert_eq!(resumed.stop.iterations, Some(50));
    }

    /// Mutations are checked against each trial's config before the
    /// search: the key must exist, hold what its space can perturb, take
    /// every value the space can give and leave the network's shape alone.
    #[test]
    fn mutations_a_config_cannot_take_are_refused() {
        for (scheduler, expected) in [
            (
                "{hyperparam_mutations: {training.lrr: [1]}}",
                "training.lrr: is not a key of the config",
            ),
            (
                "{hyperparam_mutations: {env.id: {uniform: [0, 1]}}}",
                "env.id: is CartPole-v1, which a distribution cannot perturb",
            ),
            (
                "{hyperparam_mutations: {training.gamma: [0.9, 2.0]}}",
                "training.gamma: 2.0 is refused: training.gamma:",
            ),
            (
                "{hyperparam_mutations: {model.fcnet_hiddens: [[32], [64, 64]]}}",
                "model.fcnet_hiddens: [32] builds another network",
            ),
        ] {
            let error = population(scheduler, 2).unwrap_err().to_string();
            assert!(error.contains(expected), "{scheduler}: {error}");
        }
        let error = population("{hyperparam_mutations: {training.lr: [1]}}", 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs a population"), "{error}");
    }
}
