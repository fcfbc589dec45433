//! MARWIL's `training:` section, with RLlib's names and defaults
//! (`MARWILConfig`), and its range checks.

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarwilConfig {
    pub lr: f64,
    /// Discount of the returns the value function learns.
    pub gamma: f64,
    /// β: how strongly advantages weight the imitation; 0 is behaviour
    /// cloning.
    pub beta: f64,
    /// Weight of the value loss.
    pub vf_coeff: f64,
    /// c² before any update.
    pub moving_average_sqd_adv_norm_start: f64,
    /// How far each update moves c² towards its mean A².
    pub moving_average_sqd_adv_norm_update_rate: f64,
    /// Recorded steps per gradient step (RLlib's
    /// `train_batch_size_per_learner`).
    pub train_batch_size: usize,
    /// Gradient steps per iteration, each on `train_batch_size` steps drawn
    /// from the whole dataset; when absent, an iteration is one pass over
    /// the dataset in shuffled minibatches (RLlib's
    /// `dataset_num_iters_per_learner`).
    pub dataset_num_iters_per_learner: Option<usize>,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
}

impl Default for MarwilConfig {
    fn default() -> Self {
        MarwilConfig {
            lr: 1e-4,
            gamma: 0.99,
            beta: 1.0,
            vf_coeff: 1.0,
            moving_average_sqd_adv_norm_start: 100.0,
            moving_average_sqd_adv_norm_update_rate: 1e-8,
            train_batch_size: 2000,
            dataset_num_iters_per_learner: None,
            grad_clip: None,
        }
    }
}

impl TrainingConfig for MarwilConfig {
    fn validate(&self, _envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        check::common(self.lr, self.gamma, self.train_batch_size, self.grad_clip)?;
        check::first_failed(&[
            (self.beta >= 0.0, "beta", "must not be negative"),
            (self.vf_coeff >= 0.0, "vf_coeff", "must not be negative"),
            (
                self.moving_average_sqd_adv_norm_start > 0.0,
                "moving_average_sqd_adv_norm_start",
                "must be positive",
            ),
            (
                (0.0..=1.0).contains(&self.moving_average_sqd_adv_norm_update_rate),
                "moving_average_sqd_adv_norm_update_rate",
                "must be within [0, 1]",
            ),
            (
                self.dataset_num_iters_per_learner.is_none_or(|n| n >= 1),
                "dataset_num_iters_per_learner",
                "must be at least 1 (leave it out for one pass over the dataset)",
            ),
        ])
    }

    /// MARWIL samples nothing for training; evaluation runners step one at
    /// a time anyway.
    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        1
    }

    fn module_kind(&self) -> ModuleKind {
        ModuleKind::ActorCritic
    }
}
