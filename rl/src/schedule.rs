//! Piecewise-linear schedules over env steps (RLlib's `[[step, value], ...]`
//! lists), for learning rates and exploration.

use serde::{Deserialize, Serialize};

/// `[[env_steps, value], ...]` with ascending steps; the value is
/// interpolated linearly between points and held beyond the ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schedule(pub Vec<(u64, f64)>);

impl Schedule {
    /// A schedule that is `value` everywhere.
    pub fn constant(value: f64) -> Self {
        Schedule(vec![(0, value)])
    }

    /// Why the points do not form a schedule, if they do not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.0.is_empty() || self.0.windows(2).any(|w| w[1].0 < w[0].0) {
            Err("needs [env_steps, value] points with ascending steps")
        } else {
            Ok(())
        }
    }

    /// The smallest value the schedule takes.
    pub fn min(&self) -> f64 {
        self.0.iter().map(|p| p.1).fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max)
    }

    /// The value after `env_steps` sampled steps.
    pub fn value_at(&self, env_steps: u64) -> f64 {
        let points = &self.0;
        let after = points.partition_point(|p| p.0 <= env_steps);
        match (after.checked_sub(1).map(|i| points[i]), points.get(after)) {
            (Some((s0, v0)), Some(&(s1, v1))) => {
                v0 + (v1 - v0) * (env_steps - s0) as f64 / (s1 - s0) as f64
            }
            (Some((_, v)), None) | (None, Some(&(_, v))) => v,
            (None, None) => f64::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_between_points_and_holds_beyond_them() {
        let schedule = Schedule(vec![(100, 1.0), (1100, 0.0)]);
        assert_eq!(schedule.value_at(0), 1.0);
        assert_eq!(schedule.value_at(100), 1.0);
        assert!((schedule.value_at(350) - 0.75).abs() < 1e-12);
        assert_eq!(schedule.value_at(1100), 0.0);
        assert_eq!(schedule.value_at(5000), 0.0);
        assert!(Schedule(vec![(5, 1.0), (1, 0.0)]).check().is_err());
        assert!(Schedule(vec![]).check().is_err());
    }
}
