//! Early stopping across the trials of a search: Ray Tune's ASHA
//! (`ASHAScheduler`, asynchronous successive halving with one bracket,
//! Li et al. 2018), which `oxray train --scheduler asha` hands every trial's
//! results to.
//!
//! Rungs sit at `grace_period · reduction_factor^k` of `time_attr` below
//! `max_t`. The first result of a trial at or past a rung it has not been
//! recorded at is compared with what the trials before it recorded there:
//! below the top `1/reduction_factor` of them (their `1 − 1/reduction_factor`
//! quantile, interpolated as Tune's `nanpercentile` does) the trial stops;
//! either way its value joins the rung. A trial also stops at `max_t`. No
//! trial waits for another, so trials that run one after another are
//! compared with those before them, and the first to reach a rung always
//! passes it (Tune's behaviour too).
//!
//! One scheduler serves all trials of a search, so it sits behind a lock;
//! its decisions depend on the order results arrive in, as Tune's do when
//! trials run at once.

use std::collections::HashMap;

use oxray_rl::metrics::{Metrics, EPISODE_RETURN_MEAN, TRAINING_ITERATION};
use serde::Deserialize;

use crate::config::ScoreOrder;

/// `--scheduler`: `asha` with Tune's defaults, or a YAML mapping with
/// `type: asha` and any of the keys below.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AshaConfig {
    /// The scheduler: `asha` (Tune's `ASHAScheduler`) is the one there is.
    #[serde(rename = "type")]
    pub kind: SchedulerKind,
    /// The result key that measures a trial's progress.
    pub time_attr: String,
    /// The result key that ranks trials at a rung.
    pub metric: String,
    pub mode: ScoreOrder,
    /// A trial stops when `time_attr` reaches this.
    pub max_t: f64,
    /// The first rung: no trial stops before it.
    pub grace_period: f64,
    /// The factor between rungs; the top 1/reduction_factor of a rung
    /// goes on.
    pub reduction_factor: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    Asha,
}

impl Default for AshaConfig {
    /// Tune's `ASHAScheduler` defaults, ranking by mean return.
    fn default() -> Self {
        AshaConfig {
            kind: SchedulerKind::Asha,
            time_attr: TRAINING_ITERATION.to_string(),
            metric: EPISODE_RETURN_MEAN.to_string(),
            mode: ScoreOrder::Max,
            max_t: 100.0,
            grace_period: 1.0,
            reduction_factor: 4.0,
        }
    }
}

/// A `--scheduler` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("--scheduler: {0}")]
    Parse(String),
    #[error("--scheduler: {key} {message}")]
    Range { key: &'static str, message: String },
}

impl AshaConfig {
    /// Parses `--scheduler`'s value: a scheduler's name or a YAML mapping.
    pub fn parse(value: &str) -> Result<AshaConfig, SchedulerError> {
        let parse = |text: &str| {
            serde_yaml_ng::from_str::<AshaConfig>(text)
                .map_err(|e| SchedulerError::Parse(e.to_string()))
        };
        let config = match value.trim() {
            "asha" => AshaConfig::default(),
            name if !name.starts_with('{') => {
                return Err(SchedulerError::Parse(format!(
                    "unknown scheduler `{name}` (known: asha, or a mapping such as \
                     `{{type: asha, grace_period: 10, max_t: 100}}`)"
                )))
            }
            mapping => parse(mapping)?,
        };
        let range = |ok: bool, key: &'static str, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(SchedulerError::Range {
                    key,
                    message: message.to_string(),
                })
            }
        };
        range(
            config.grace_period > 0.0 && config.grace_period.is_finite(),
            "grace_period",
            "must be positive",
        )?;
        range(
            config.max_t >= config.grace_period && config.max_t.is_finite(),
            "max_t",
            "must be at least grace_period",
        )?;
        range(
            config.reduction_factor > 1.0 && config.reduction_factor.is_finite(),
            "reduction_factor",
            "must be above 1",
        )?;
        Ok(config)
    }
}

/// What a trial does after a result.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Continue,
    /// Stop, and why.
    Stop(String),
}

/// ASHA's state: each rung's recorded values by trial.
#[derive(Debug)]
pub struct Asha {
    config: AshaConfig,
    /// Highest milestone first, as Tune walks them.
    rungs: Vec<(f64, HashMap<usize, f64>)>,
}

impl Asha {
    pub fn new(config: AshaConfig) -> Asha {
        // Tune: int(log(max_t / grace_period) / log(reduction_factor) + 1)
        // rungs, the lowest at grace_period.
        let ratio = config.max_t / config.grace_period;
        let count = (ratio.ln() / config.reduction_factor.ln() + 1.0 + 1e-9).floor() as i32;
        let rungs = (0..count)
            .rev()
            .map(|k| {
                let milestone = config.grace_period * config.reduction_factor.powi(k);
                (milestone, HashMap::new())
            })
            .collect();
        Asha { config, rungs }
    }

    /// Records `trial`'s `result` and says whether it goes on.
    pub fn on_result(&mut self, trial: usize, result: &Metrics) -> Decision {
        let config = &self.config;
        let Some(&time) = result.get(&config.time_attr) else {
            return Decision::Continue;
        };
        let value = result.get(&config.metric).copied();
        let mut decision = Decision::Continue;
        if let Some((milestone, recorded)) = self
            .rungs
            .iter_mut()
            .find(|(milestone, recorded)| time >= *milestone && !recorded.contains_key(&trial))
        {
            // A result without the metric (no episode ended yet) neither
            // stops the trial nor fills its place at the rung.
            if let Some(value) = value.filter(|v| v.is_finite()) {
                let oriented = |v: f64| config.mode.oriented(v);
                let values: Vec<f64> = recorded.values().map(|&v| oriented(v)).collect();
                let quantile = 1.0 - 1.0 / config.reduction_factor;
                if let Some(cutoff) = percentile(values, quantile) {
                    if oriented(value) < cutoff {
                        decision = Decision::Stop(format!(
                            "{} {} is outside the best 1/{} at {} {milestone} (cutoff {}; ASHA)",
                            config.metric,
                            round(value),
                            config.reduction_factor,
                            config.time_attr,
                            round(oriented(cutoff)),
                        ));
                    }
                }
                recorded.insert(trial, value);
            }
        }
        if decision == Decision::Continue && time >= config.max_t {
            decision = Decision::Stop(format!(
                "{} {time} reached max_t {} (ASHA)",
                config.time_attr, config.max_t
            ));
        }
        decision
    }
}

/// The `q` quantile (0..=1) of `values` with linear interpolation between
/// the two nearest ranks (NumPy's default); none of no values.
fn percentile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = q * (values.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(values[low] + (values[high] - values[low]) * (rank - low as f64))
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(time: f64, value: f64) -> Metrics {
        Metrics::from([
            (TRAINING_ITERATION.to_string(), time),
            (EPISODE_RETURN_MEAN.to_string(), value),
        ])
    }

    fn config(max_t: f64, grace_period: f64, reduction_factor: f64) -> AshaConfig {
        AshaConfig {
            max_t,
            grace_period,
            reduction_factor,
            ..AshaConfig::default()
        }
    }

    #[test]
    fn rungs_follow_tunes_formula() {
        let milestones = |asha: Asha| -> Vec<f64> { asha.rungs.iter().map(|(m, _)| *m).collect() };
        assert_eq!(
            milestones(Asha::new(AshaConfig::default())),
            [64.0, 16.0, 4.0, 1.0]
        );
        assert_eq!(
            milestones(Asha::new(config(8.0, 2.0, 2.0))),
            [8.0, 4.0, 2.0]
        );
        assert_eq!(milestones(Asha::new(config(10.0, 10.0, 3.0))), [10.0]);
    }

    #[test]
    fn percentile_interpolates_between_ranks() {
        assert_eq!(percentile(vec![], 0.5), None);
        assert_eq!(percentile(vec![3.0], 0.75), Some(3.0));
        assert_eq!(percentile(vec![4.0, 0.0, 8.0], 0.5), Some(4.0));
        assert_eq!(percentile(vec![0.0, 10.0], 0.75), Some(7.5));
    }

    /// Three trials one after another, rungs at 2 and 4 (factor 2, so the
    /// better half goes on): the first passes every rung and stops at max_t;
    /// the second is below the first at rung 2; the third beats the median
    /// of the two at rung 2 but not the first at rung 4.
    #[test]
    fn trials_below_a_rungs_cutoff_stop_there() {
        let mut asha = Asha::new(config(8.0, 2.0, 2.0));
        for t in 1..8 {
            assert_eq!(
                asha.on_result(0, &result(t as f64, 10.0 * t as f64)),
                Decision::Continue
            );
        }
        assert!(
            matches!(asha.on_result(0, &result(8.0, 80.0)), Decision::Stop(why) if why.contains("max_t"))
        );

        assert_eq!(asha.on_result(1, &result(1.0, 1.0)), Decision::Continue);
        let Decision::Stop(why) = asha.on_result(1, &result(2.0, 5.0)) else {
            panic!("5 < 20 at rung 2");
        };
        assert!(
            why.contains("at training_iteration 2 (cutoff 20; ASHA)"),
            "{why}"
        );

        // Rung 2 holds 20 and 5: the median is 12.5.
        assert_eq!(asha.on_result(2, &result(2.0, 13.0)), Decision::Continue);
        assert_eq!(asha.on_result(2, &result(3.0, 30.0)), Decision::Continue);
        assert!(matches!(
            asha.on_result(2, &result(4.0, 39.0)),
            Decision::Stop(_)
        ));
    }

    /// In `min` mode the lower values go on; a result without the metric
    /// neither stops a trial nor takes its place at the rung, and a result
    /// past several rungs is recorded at the highest only (Tune's walk).
    #[test]
    fn min_mode_missing_metrics_and_skipped_rungs() {
        let mut asha = Asha::new(AshaConfig {
            mode: ScoreOrder::Min,
            ..config(8.0, 2.0, 2.0)
        });
        assert_eq!(asha.on_result(0, &result(2.0, 5.0)), Decision::Continue);
        assert_eq!(asha.on_result(1, &result(2.0, 3.0)), Decision::Continue);
        assert!(matches!(
            asha.on_result(2, &result(2.0, 9.0)),
            Decision::Stop(_)
        ));
        let no_metric = Metrics::from([(TRAINING_ITERATION.to_string(), 4.0)]);
        assert_eq!(asha.on_result(3, &no_metric), Decision::Continue);
        assert!(!asha.rungs[1].1.contains_key(&3));
        assert_eq!(asha.on_result(4, &result(5.0, 1.0)), Decision::Continue);
        assert!(asha.rungs[1].1.contains_key(&4) && !asha.rungs[2].1.contains_key(&4));
    }

    #[test]
    fn scheduler_values_parse_or_name_the_problem() {
        assert_eq!(AshaConfig::parse("asha").unwrap(), AshaConfig::default());
        let custom =
            AshaConfig::parse("{type: asha, grace_period: 5, max_t: 50, mode: min}").unwrap();
        assert_eq!(
            (custom.grace_period, custom.max_t, custom.mode),
            (5.0, 50.0, ScoreOrder::Min)
        );
        for (value, expected) in [
            ("hyperband", "unknown scheduler `hyperband`"),
            ("{type: asha, grace: 5}", "unknown field `grace`"),
            (
                "{type: asha, reduction_factor: 1}",
                "reduction_factor must be above 1",
            ),
            (
                "{type: asha, grace_period: 0}",
                "grace_period must be positive",
            ),
            (
                "{type: asha, grace_period: 20, max_t: 10}",
                "max_t must be at least grace_period",
            ),
        ] {
            let error = AshaConfig::parse(value).unwrap_err().to_string();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
