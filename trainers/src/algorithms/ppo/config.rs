//! PPO's `training:` section, with RLlib's names and defaults (except where a
//! comment says otherwise), and its range checks.

use oxray_rl::rl_module::ModuleKind;
use oxray_rl::schedule::Schedule;
use serde::{Deserialize, Serialize};

use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    pub lr: f64,
    /// Piecewise-linear `[[env_steps, lr], ...]`; overrides `lr` when set.
    pub lr_schedule: Option<Schedule>,
    pub gamma: f64,
    /// GAE λ (`lambda_` in RLlib's Python API, where `lambda` is reserved).
    #[serde(rename = "lambda", alias = "lambda_")]
    pub lambda: f64,
    /// ε of the clipped surrogate.
    pub clip_param: f64,
    /// Clip the squared value error at this value (RLlib's semantics).
    pub vf_clip_param: Option<f64>,
    pub vf_loss_coeff: f64,
    pub entropy_coeff: f64,
    pub use_kl_loss: bool,
    /// Initial KL coefficient; adapted towards `kl_target` every iteration.
    pub kl_coeff: f64,
    pub kl_target: f64,
    /// Normalise advantages per minibatch (CleanRL does; RLlib per batch).
    pub normalize_advantages: bool,
    pub num_epochs: usize,
    pub minibatch_size: usize,
    pub train_batch_size: usize,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
    /// Remote EnvRunners start the next iteration's sample while the Learner
    /// updates, with the weights one version old (faster, slightly off-policy;
    /// not in RLlib). Off by default: sampling is synchronous as in RLlib.
    pub sample_ahead: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            lr: 5e-5,
            lr_schedule: None,
            gamma: 0.99,
            lambda: 1.0,
            clip_param: 0.3,
            vf_clip_param: Some(10.0),
            vf_loss_coeff: 1.0,
            entropy_coeff: 0.0,
            use_kl_loss: true,
            kl_coeff: 0.2,
            kl_target: 0.01,
            normalize_advantages: true,
            num_epochs: 30,
            minibatch_size: 128,
            train_batch_size: 4000,
            grad_clip: None,
            sample_ahead: false,
        }
    }
}

impl PpoConfig {
    /// The learning rate after `env_steps` sampled steps.
    pub fn lr_at(&self, env_steps: u64) -> f64 {
        match &self.lr_schedule {
            Some(schedule) => schedule.value_at(env_steps),
            None => self.lr,
        }
    }
}

impl TrainingConfig for PpoConfig {
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        check::common(self.lr, self.gamma, self.train_batch_size, self.grad_clip)?;
        check::first_failed(&[
            (
                (0.0..=1.0).contains(&self.lambda),
                "lambda",
                "must be within [0, 1]",
            ),
            (self.clip_param > 0.0, "clip_param", "must be positive"),
            (
                self.vf_clip_param.is_none_or(|c| c > 0.0),
                "vf_clip_param",
                "must be positive",
            ),
            (
                self.vf_loss_coeff >= 0.0,
                "vf_loss_coeff",
                "must not be negative",
            ),
            (self.kl_coeff >= 0.0, "kl_coeff", "must not be negative"),
            (self.kl_target > 0.0, "kl_target", "must be positive"),
            (self.num_epochs >= 1, "num_epochs", "must be at least 1"),
            (
                self.minibatch_size >= 1,
                "minibatch_size",
                "must be at least 1",
            ),
            (
                envs_sampled_in_parallel <= self.train_batch_size,
                "train_batch_size",
                "must be at least num_env_runners × num_envs_per_env_runner (one step per env)",
            ),
        ])?;
        match &self.lr_schedule {
            Some(schedule) if schedule.check().is_err() || schedule.min() < 0.0 => Err((
                "training.lr_schedule".into(),
                "needs [env_steps, lr] points with ascending steps and lr ≥ 0".into(),
            )),
            _ => Ok(()),
        }
    }

    fn auto_rollout_fragment_length(&self, envs_sampled_in_parallel: usize) -> usize {
        self.train_batch_size.div_ceil(envs_sampled_in_parallel)
    }

    fn module_kind(&self) -> ModuleKind {
        ModuleKind::ActorCritic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_interpolates_between_points() {
        let config = PpoConfig {
            lr_schedule: Some(Schedule(vec![(0, 1e-3), (1000, 0.0)])),
            ..PpoConfig::default()
        };
        assert_eq!(config.lr_at(0), 1e-3);
        assert!((config.lr_at(250) - 7.5e-4).abs() < 1e-12);
        assert_eq!(config.lr_at(5000), 0.0);
        assert_eq!(PpoConfig::default().lr_at(5000), 5e-5);
    }
}
