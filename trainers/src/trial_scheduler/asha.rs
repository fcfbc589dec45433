//! Ray Tune's ASHA (`ASHAScheduler`, asynchronous successive halving with
//! one bracket, Li et al. 2018): stops the trials of a search that fall
//! behind.
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

use std::collections::HashMap;

use oxray_rl::metrics::{Metrics, EPISODE_RETURN_MEAN, TRAINING_ITERATION};
use serde::Deserialize;

use super::{percentile, require, round, Decision, SchedulerError};
use crate::config::ScoreOrder;

/// `--scheduler asha` with Tune's defaults, or a mapping with `type: asha`
/// and any of the keys below.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AshaConfig {
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

impl Default for AshaConfig {
    /// Tune's `ASHAScheduler` defaults, ranking by mean return.
    fn default() -> Self {
        AshaConfig {
            time_attr: TRAINING_ITERATION.to_string(),
            metric: EPISODE_RETURN_MEAN.to_string(),
            mode: ScoreOrder::Max,
            max_t: 100.0,
            grace_period: 1.0,
            reduction_factor: 4.0,
        }
    }
}

impl AshaConfig {
    /// Refuses values Tune's ASHA refuses.
    pub(super) fn check(&self) -> Result<(), SchedulerError> {
        require(
            self.grace_period > 0.0 && self.grace_period.is_finite(),
            "grace_period",
            "must be positive",
        )?;
        require(
            self.max_t >= self.grace_period && self.max_t.is_finite(),
            "max_t",
            "must be at least grace_period",
        )?;
        require(
            self.reduction_factor > 1.0 && self.reduction_factor.is_finite(),
            "reduction_factor",
            "must be above 1",
        )
    }
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
}
