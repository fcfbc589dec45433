//! APPO's `training:` section, with RLlib's names and defaults (IMPALA's
//! V-trace settings plus APPO's clipped surrogate and target network) except
//! where a comment says otherwise, and its range checks.

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppoConfig {
    pub lr: f64,
    pub gamma: f64,
    /// ρ̄: V-trace's clip of the importance weights in the value targets.
    pub vtrace_clip_rho_threshold: f64,
    /// ρ̄_pg: the clip of the importance weights in the policy gradient.
    pub vtrace_clip_pg_rho_threshold: f64,
    /// ε of the clipped surrogate (against the target network's policy).
    pub clip_param: f64,
    /// Clip of μ/π_target, the weight that moves the surrogate's ratio from
    /// the behaviour policy to the target network's.
    pub target_worker_clipping: f64,
    pub vf_loss_coeff: f64,
    pub entropy_coeff: f64,
    pub use_kl_loss: bool,
    /// Initial KL coefficient; adapted towards `kl_target` every update.
    pub kl_coeff: f64,
    pub kl_target: f64,
    /// Learner updates between target network updates (RLlib counts this in
    /// env steps trained; one update is one `train_batch_size`).
    pub target_network_update_freq: u64,
    /// Polyak factor of the target network update (1: a copy).
    pub tau: f64,
    pub num_epochs: usize,
    /// Rows per gradient step; the whole train batch when absent.
    pub minibatch_size: Option<usize>,
    /// Env steps per Learner update.
    pub train_batch_size: usize,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
    /// `sample()` calls each remote EnvRunner keeps queued, so it never
    /// waits for the Learner.
    pub max_requests_in_flight_per_env_runner: usize,
    /// Learner updates between weight broadcasts to the EnvRunners.
    pub broadcast_interval: u64,
}

impl Default for AppoConfig {
    fn default() -> Self {
        AppoConfig {
            lr: 5e-4,
            gamma: 0.99,
            vtrace_clip_rho_threshold: 1.0,
            vtrace_clip_pg_rho_threshold: 1.0,
            clip_param: 0.4,
            target_worker_clipping: 2.0,
            vf_loss_coeff: 0.5,
            entropy_coeff: 0.01,
            use_kl_loss: false,
            kl_coeff: 1.0,
            kl_target: 0.01,
            target_network_update_freq: 1,
            tau: 1.0,
            num_epochs: 1,
            minibatch_size: None,
            train_batch_size: 500,
            grad_clip: Some(40.0),
            max_requests_in_flight_per_env_runner: 2,
            broadcast_interval: 1,
        }
    }
}

/// IMPALA's and APPO's rollout fragment length.
const DEFAULT_ROLLOUT_FRAGMENT_LENGTH: usize = 50;

impl TrainingConfig for AppoConfig {
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        check::common(self.lr, self.gamma, self.train_batch_size, self.grad_clip)?;
        check::first_failed(&[
            (
                self.vtrace_clip_rho_threshold > 0.0,
                "vtrace_clip_rho_threshold",
                "must be positive",
            ),
            (
                self.vtrace_clip_pg_rho_threshold > 0.0,
                "vtrace_clip_pg_rho_threshold",
                "must be positive",
            ),
            (self.clip_param > 0.0, "clip_param", "must be positive"),
            (
                self.target_worker_clipping > 0.0,
                "target_worker_clipping",
                "must be positive",
            ),
            (
                self.vf_loss_coeff >= 0.0,
                "vf_loss_coeff",
                "must not be negative",
            ),
            (
                self.kl_coeff >= 0.0 && self.kl_target > 0.0,
                "kl_coeff",
                "kl_coeff ≥ 0 and kl_target > 0",
            ),
            (
                self.target_network_update_freq >= 1,
                "target_network_update_freq",
                "must be at least 1",
            ),
            (
                self.tau > 0.0 && self.tau <= 1.0,
                "tau",
                "must be within (0, 1]",
            ),
            (self.num_epochs >= 1, "num_epochs", "must be at least 1"),
            (
                self.minibatch_size.is_none_or(|m| m >= 1),
                "minibatch_size",
                "must be at least 1",
            ),
            (
                self.max_requests_in_flight_per_env_runner >= 1,
                "max_requests_in_flight_per_env_runner",
                "must be at least 1",
            ),
            (
                self.broadcast_interval >= 1,
                "broadcast_interval",
                "must be at least 1",
            ),
            (
                envs_sampled_in_parallel <= self.train_batch_size,
                "train_batch_size",
                "must be at least num_env_runners × num_envs_per_env_runner (one step per env)",
            ),
        ])
    }

    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        DEFAULT_ROLLOUT_FRAGMENT_LENGTH
    }

    fn module_kind(&self) -> ModuleKind {
        ModuleKind::ActorCritic
    }
}
