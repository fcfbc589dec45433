//! IMPALA's `training:` section, with RLlib's names and defaults except
//! where a comment says otherwise, and its range checks. APPO's section is
//! this one plus APPO's own keys (as RLlib's `APPOConfig` derives from
//! `IMPALAConfig`).

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImpalaConfig {
    pub lr: f64,
    pub gamma: f64,
    /// ρ̄: V-trace's clip of the importance weights in the value targets.
    pub vtrace_clip_rho_threshold: f64,
    /// ρ̄_pg: the clip of the importance weights in the policy gradient.
    pub vtrace_clip_pg_rho_threshold: f64,
    pub vf_loss_coeff: f64,
    pub entropy_coeff: f64,
    pub num_epochs: usize,
    /// Rows per gradient step; the whole train batch when absent.
    pub minibatch_size: Option<usize>,
    /// Env steps per Learner update.
    pub train_batch_size: usize,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
    /// `sample()` calls each remote EnvRunner keeps queued, so it never
    /// waits for the Learner (RLlib's default is 1; with 2 a runner has its
    /// next request in hand while the driver collects the previous one).
    pub max_requests_in_flight_per_env_runner: usize,
    /// Learner updates between weight broadcasts to the EnvRunners.
    pub broadcast_interval: u64,
}

impl Default for ImpalaConfig {
    fn default() -> Self {
        ImpalaConfig {
            lr: 5e-4,
            gamma: 0.99,
            vtrace_clip_rho_threshold: 1.0,
            vtrace_clip_pg_rho_threshold: 1.0,
            vf_loss_coeff: 0.5,
            entropy_coeff: 0.01,
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

impl TrainingConfig for ImpalaConfig {
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
            (
                self.vf_loss_coeff >= 0.0,
                "vf_loss_coeff",
                "must not be negative",
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
