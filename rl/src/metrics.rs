//! Result metrics under RLlib's names, and the sliding window of finished
//! episodes that `env_runners/episode_return_mean` is averaged over.
//!
//! Results are flat maps keyed by RLlib's slash-separated names, the same keys
//! that become CSV columns, JSON fields and TensorBoard tags, so the three
//! outputs never disagree. Every key any algorithm reports is a constant here,
//! so the names are spelled once.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// One iteration's numeric results, keyed by RLlib-style names.
pub type Metrics = BTreeMap<String, f64>;

/// Value distributions of one iteration (sampled actions, advantages,
/// weights), keyed like [`Metrics`]; they become TensorBoard histograms.
pub type Histograms = BTreeMap<String, Vec<f32>>;

pub const EPISODE_RETURN_MEAN: &str = "env_runners/episode_return_mean";
pub const EPISODE_RETURN_MIN: &str = "env_runners/episode_return_min";
pub const EPISODE_RETURN_MAX: &str = "env_runners/episode_return_max";
pub const EPISODE_LEN_MEAN: &str = "env_runners/episode_len_mean";
pub const NUM_EPISODES_LIFETIME: &str = "env_runners/num_episodes_lifetime";
pub const NUM_ENV_STEPS_SAMPLED: &str = "env_runners/num_env_steps_sampled";
pub const NUM_ENV_STEPS_SAMPLED_PER_S: &str = "env_runners/num_env_steps_sampled_per_s";
pub const NUM_ENV_STEPS_SAMPLED_LIFETIME: &str = "num_env_steps_sampled_lifetime";
pub const NUM_ENV_STEPS_TRAINED_LIFETIME: &str = "num_env_steps_trained_lifetime";
pub const NUM_ENV_STEPS_TRAINED_PER_S: &str = "num_env_steps_trained_per_s";
pub const TRAINING_ITERATION: &str = "training_iteration";
pub const TIME_TOTAL_S: &str = "time_total_s";
pub const ENV_RUNNER_SAMPLING_TIMER: &str = "timers/env_runner_sampling_timer";
pub const LEARNER_UPDATE_TIMER: &str = "timers/learner_update_timer";
pub const NUM_HEALTHY_ENV_RUNNERS: &str = "fault_tolerance/num_healthy_env_runners";
pub const NUM_REMOTE_ENV_RUNNER_RESTARTS: &str = "fault_tolerance/num_remote_env_runner_restarts";

/// Learner results, under `learners/default_policy/` as in RLlib.
pub const TOTAL_LOSS: &str = "learners/default_policy/total_loss";
pub const POLICY_LOSS: &str = "learners/default_policy/policy_loss";
pub const VF_LOSS: &str = "learners/default_policy/vf_loss";
pub const ENTROPY: &str = "learners/default_policy/entropy";
pub const MEAN_KL_LOSS: &str = "learners/default_policy/mean_kl_loss";
pub const CURR_KL_COEFF: &str = "learners/default_policy/curr_kl_coeff";
pub const VF_EXPLAINED_VAR: &str = "learners/default_policy/vf_explained_var";
/// MARWIL: an update's mean squared advantage, and the running mean c² it
/// moves, which normalises the advantages.
pub const MEAN_SQD_ADVANTAGE: &str = "learners/default_policy/mean_sqd_advantage";
pub const MOVING_AVERAGE_SQD_ADV_NORM: &str = "learners/default_policy/moving_average_sqd_adv_norm";
pub const GRADIENTS_GLOBAL_NORM: &str =
    "learners/default_policy/gradients_default_optimizer_global_norm";
pub const LEARNING_RATE: &str = "learners/default_policy/default_optimizer_learning_rate";
pub const QF_LOSS: &str = "learners/default_policy/qf_loss";
pub const QF_MEAN: &str = "learners/default_policy/qf_mean";
pub const TD_ERROR_MEAN: &str = "learners/default_policy/td_error_mean";
/// How many weight versions behind the Learner's the actions of an
/// iteration's batch were drawn, averaged over its steps (APPO).
pub const MEAN_WEIGHTS_LAG: &str = "env_runners/mean_weights_lag";
/// APPO's mean π_target/μ over the batch: how far the EnvRunners' policy
/// lags the Learner's.
pub const MEAN_IMPORTANCE_RATIO: &str = "learners/default_policy/mean_importance_ratio";
pub const NUM_TARGET_UPDATES: &str = "learners/default_policy/num_target_updates";
pub const ALPHA_LOSS: &str = "learners/default_policy/alpha_loss";
pub const ALPHA_VALUE: &str = "learners/default_policy/alpha_value";
/// CQL: the conservative term of the critic loss (part of `qf_loss`).
pub const CQL_LOSS: &str = "learners/default_policy/cql_loss";
/// IQL: the expectile regression of V(s) on Q(s, a) (RLlib's name), and
/// the mean advantage Q(s, a) − V(s) its policy is weighted by.
pub const VALUE_LOSS: &str = "learners/default_policy/value_loss";
pub const ADVANTAGE_MEAN: &str = "learners/default_policy/advantage_mean";
pub const CURR_EPSILON: &str = "env_runners/curr_epsilon";
pub const REPLAY_BUFFER_SIZE: &str = "replay_buffer/num_env_steps_stored";

/// Histograms of the Learner's per-row quantities and weights.
pub const ADVANTAGES: &str = "learners/default_policy/advantages";
pub const TD_ERRORS: &str = "learners/default_policy/td_errors";
pub const WEIGHTS: &str = "learners/default_policy/weights";

/// Histogram of the actions the EnvRunners sampled (one per dimension,
/// `.../0`, `.../1`, ..., for a multi-dimensional action).
pub const SAMPLED_ACTIONS: &str = "env_runners/sampled_actions";

/// What a result's progress is counted in: env steps sampled, as in RLlib,
/// or, for a run that samples nothing for training (an offline algorithm),
/// the recorded steps trained on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProgressSteps {
    Sampled(f64),
    Trained(f64),
}

impl ProgressSteps {
    pub fn of(result: &Metrics) -> Self {
        let count = |key: &str| result.get(key).copied().unwrap_or(0.0);
        let sampled = count(NUM_ENV_STEPS_SAMPLED_LIFETIME);
        match sampled > 0.0 {
            true => ProgressSteps::Sampled(sampled),
            false => ProgressSteps::Trained(count(NUM_ENV_STEPS_TRAINED_LIFETIME)),
        }
    }

    pub fn count(self) -> f64 {
        match self {
            ProgressSteps::Sampled(steps) | ProgressSteps::Trained(steps) => steps,
        }
    }
}

/// Adds the histogram(s) of a batch's `actions` (`action_dim` columns per
/// row) to `out`.
pub fn add_action_histograms(actions: &[f32], action_dim: usize, out: &mut Histograms) {
    if action_dim <= 1 {
        out.insert(SAMPLED_ACTIONS.into(), actions.to_vec());
        return;
    }
    for column in 0..action_dim {
        let values = actions.iter().skip(column).step_by(action_dim).copied();
        out.insert(format!("{SAMPLED_ACTIONS}/{column}"), values.collect());
    }
}

/// RLlib's default `metrics_num_episodes_for_smoothing`: episode metrics are
/// means over the last 100 finished episodes.
pub const EPISODE_WINDOW: usize = 100;

/// Episodes that finished during one `sample()` call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    pub returns: Vec<f32>,
    pub lengths: Vec<u32>,
}

/// The last `capacity` finished episodes over all EnvRunners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeWindow {
    returns: VecDeque<f64>,
    lengths: VecDeque<f64>,
    episodes_lifetime: u64,
    /// Checkpoints written before the window was configurable hold none.
    #[serde(default = "default_capacity")]
    capacity: usize,
}

fn default_capacity() -> usize {
    EPISODE_WINDOW
}

impl Default for EpisodeWindow {
    fn default() -> Self {
        EpisodeWindow::with_capacity(EPISODE_WINDOW)
    }
}

impl EpisodeWindow {
    /// A window over the last `capacity` (at least one) episodes.
    pub fn with_capacity(capacity: usize) -> Self {
        EpisodeWindow {
            returns: VecDeque::new(),
            lengths: VecDeque::new(),
            episodes_lifetime: 0,
            capacity: capacity.max(1),
        }
    }

    /// Averages over the last `capacity` episodes from now on (a resumed run
    /// may be given another window than it was saved with); the oldest
    /// episodes beyond it are dropped.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.returns.len() > self.capacity {
            self.returns.pop_front();
            self.lengths.pop_front();
        }
    }

    pub fn push(&mut self, stats: &EpisodeStats) {
        for (&ret, &len) in stats.returns.iter().zip(&stats.lengths) {
            if self.returns.len() == self.capacity {
                self.returns.pop_front();
                self.lengths.pop_front();
            }
            self.returns.push_back(f64::from(ret));
            self.lengths.push_back(f64::from(len));
            self.episodes_lifetime += 1;
        }
    }

    /// Adds the episode keys to `metrics` (absent until an episode finished).
    pub fn report(&self, metrics: &mut Metrics) {
        let returns = &self.returns;
        if let Some(m) = mean(returns) {
            metrics.insert(EPISODE_RETURN_MEAN.into(), m);
            metrics.insert(EPISODE_RETURN_MIN.into(), fold(returns, f64::min));
            metrics.insert(EPISODE_RETURN_MAX.into(), fold(returns, f64::max));
        }
        if let Some(m) = mean(&self.lengths) {
            metrics.insert(EPISODE_LEN_MEAN.into(), m);
        }
        metrics.insert(NUM_EPISODES_LIFETIME.into(), self.episodes_lifetime as f64);
    }
}

fn mean(values: &VecDeque<f64>) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn fold(values: &VecDeque<f64>, f: fn(f64, f64) -> f64) -> f64 {
    values.iter().copied().reduce(f).unwrap_or(f64::NAN)
}

/// 1 − Var[targets − values] / Var[targets]: how much of the return the value
/// function explains.
pub fn explained_variance(values: &[f32], targets: &[f32]) -> f64 {
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let xs: Vec<f64> = xs.collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64
    };
    let target_var = var(&mut targets.iter().map(|&t| f64::from(t)));
    let residual_var = var(&mut targets.iter().zip(values).map(|(&t, &v)| f64::from(t - v)));
    if target_var == 0.0 {
        f64::NAN
    } else {
        1.0 - residual_var / target_var
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Online runs count env steps sampled; one that samples nothing counts
    /// what it trained on.
    #[test]
    fn progress_is_counted_in_sampled_steps_unless_nothing_is_sampled() {
        let online = Metrics::from([
            (NUM_ENV_STEPS_SAMPLED_LIFETIME.into(), 4096.0),
            (NUM_ENV_STEPS_TRAINED_LIFETIME.into(), 8192.0),
        ]);
        assert_eq!(ProgressSteps::of(&online), ProgressSteps::Sampled(4096.0));
        let offline = Metrics::from([
            (NUM_ENV_STEPS_SAMPLED_LIFETIME.into(), 0.0),
            (NUM_ENV_STEPS_TRAINED_LIFETIME.into(), 2560.0),
        ]);
        assert_eq!(ProgressSteps::of(&offline), ProgressSteps::Trained(2560.0));
        assert_eq!(ProgressSteps::of(&offline).count(), 2560.0);
    }

    #[test]
    fn explained_variance_is_one_for_perfect_values_and_zero_for_the_mean() {
        let targets = [1.0, 2.0, 3.0];
        assert_eq!(explained_variance(&targets, &targets), 1.0);
        assert!(explained_variance(&[2.0; 3], &targets).abs() < 1e-12);
    }

    #[test]
    fn window_keeps_the_last_hundred_episodes() {
        let mut window = EpisodeWindow::default();
        let mut metrics = Metrics::new();
        window.report(&mut metrics);
        assert!(!metrics.contains_key(EPISODE_RETURN_MEAN));
        let stats = EpisodeStats {
            returns: (0..150).map(|i| i as f32).collect(),
            lengths: vec![1; 150],
        };
        window.push(&stats);
        // Episodes 50..150 remain: mean 99.5.
        window.report(&mut metrics);
        assert_eq!(metrics[EPISODE_RETURN_MEAN], 99.5);
        assert_eq!(metrics[EPISODE_RETURN_MIN], 50.0);
        assert_eq!(metrics[NUM_EPISODES_LIFETIME], 150.0);
    }

    #[test]
    fn a_smaller_window_averages_only_the_latest_episodes() {
        let mut window = EpisodeWindow::with_capacity(5);
        window.push(&EpisodeStats {
            returns: (0..10).map(|i| i as f32).collect(),
            lengths: vec![1; 10],
        });
        let mut metrics = Metrics::new();
        window.report(&mut metrics);
        // Episodes 5..10 remain: mean 7.
        assert_eq!(metrics[EPISODE_RETURN_MEAN], 7.0);
        assert_eq!(metrics[NUM_EPISODES_LIFETIME], 10.0);
        // Shrinking keeps the newest; growing keeps what is there.
        window.set_capacity(2);
        window.report(&mut metrics);
        assert_eq!(metrics[EPISODE_RETURN_MEAN], 8.5);
        window.set_capacity(100);
        window.push(&EpisodeStats {
            returns: vec![10.0],
            lengths: vec![1],
        });
        window.report(&mut metrics);
        assert_eq!(metrics[EPISODE_RETURN_MEAN], 9.0);
    }

    #[test]
    fn a_window_saved_without_a_capacity_restores_with_the_default() {
        let json = r#"{"returns":[1.0],"lengths":[2.0],"episodes_lifetime":1}"#;
        let window: EpisodeWindow = serde_json::from_str(json).unwrap();
        assert_eq!(window, {
            let mut w = EpisodeWindow::default();
            w.push(&EpisodeStats {
                returns: vec![1.0],
                lengths: vec![2],
            });
            w
        });
    }

    #[test]
    fn actions_get_one_histogram_per_dimension() {
        let mut histograms = Histograms::new();
        add_action_histograms(&[0.0, 1.0, 1.0], 1, &mut histograms);
        assert_eq!(histograms[SAMPLED_ACTIONS], [0.0, 1.0, 1.0]);
        let mut histograms = Histograms::new();
        add_action_histograms(&[0.1, -1.0, 0.2, -2.0], 2, &mut histograms);
        assert_eq!(histograms.len(), 2);
        assert_eq!(histograms["env_runners/sampled_actions/0"], [0.1, 0.2]);
        assert_eq!(histograms["env_runners/sampled_actions/1"], [-1.0, -2.0]);
    }
}
