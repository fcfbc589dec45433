//! CQL's `training:` section, with RLlib's names and defaults (`CQLConfig`,
//! which extends `SACConfig`; the learning rates are SAC's defaults here),
//! its range checks, and the SAC config its shared keys amount to.

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::sac::{SacConfig, TargetEntropy};
use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqlConfig {
    // SAC's keys, as `SacConfig` documents them (`train_batch_size` counts
    // recorded transitions).
    pub actor_lr: f64,
    pub critic_lr: f64,
    pub alpha_lr: f64,
    pub gamma: f64,
    pub tau: f64,
    pub initial_alpha: f64,
    pub target_entropy: TargetEntropy,
    pub train_batch_size: usize,
    pub n_step: usize,
    pub grad_clip: Option<f64>,
    /// Gradient steps between target network updates; 0 updates after
    /// every one (CQL samples no env steps to count).
    pub target_network_update_freq: u64,
    /// Gradient steps at the start in which the policy learns by behaviour
    /// cloning of the recorded actions instead of from the Q-functions.
    pub bc_iters: u64,
    /// The temperature of the log-sum-exp over sampled actions.
    pub temperature: f64,
    /// Actions drawn per state from each of the three proposals (uniform,
    /// π at s, π at s').
    pub num_actions: usize,
    /// The weight of the conservative term in the critic loss.
    pub min_q_weight: f64,
    /// Leave the entropy bonus out of the Q target (the paper's default).
    pub deterministic_backup: bool,
    /// Gradient steps per iteration, each on `train_batch_size` transitions
    /// drawn uniformly from the recording; when absent, as many as make one
    /// pass over it (RLlib's `dataset_num_iters_per_learner`).
    pub dataset_num_iters_per_learner: Option<usize>,
}

impl Default for CqlConfig {
    fn default() -> Self {
        let sac = SacConfig::default();
        CqlConfig {
            actor_lr: sac.actor_lr,
            critic_lr: sac.critic_lr,
            alpha_lr: sac.alpha_lr,
            gamma: sac.gamma,
            tau: sac.tau,
            initial_alpha: sac.initial_alpha,
            target_entropy: sac.target_entropy,
            train_batch_size: sac.train_batch_size,
            n_step: sac.n_step,
            target_network_update_freq: 0,
            grad_clip: sac.grad_clip,
            bc_iters: 20_000,
            temperature: 1.0,
            num_actions: 10,
            min_q_weight: 5.0,
            deterministic_backup: true,
            dataset_num_iters_per_learner: None,
        }
    }
}

impl CqlConfig {
    /// The SAC config CQL's shared keys make: its Learner's networks,
    /// learning rates and target updates, and the checks of those keys.
    pub fn sac(&self) -> SacConfig {
        SacConfig {
            actor_lr: self.actor_lr,
            critic_lr: self.critic_lr,
            alpha_lr: self.alpha_lr,
            gamma: self.gamma,
            tau: self.tau,
            initial_alpha: self.initial_alpha,
            target_entropy: self.target_entropy,
            train_batch_size: self.train_batch_size,
            n_step: self.n_step,
            grad_clip: self.grad_clip,
            ..SacConfig::default()
        }
    }
}

/// The keys CQL shares with SAC are checked as SAC's (same names); then
/// its own.
impl TrainingConfig for CqlConfig {
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        self.sac().validate(envs_sampled_in_parallel)?;
        check::first_failed(&[
            (
                self.temperature > 0.0 && self.temperature.is_finite(),
                "temperature",
                "must be positive",
            ),
            (self.num_actions >= 1, "num_actions", "must be at least 1"),
            (
                self.min_q_weight >= 0.0 && self.min_q_weight.is_finite(),
                "min_q_weight",
                "must not be negative",
            ),
            (
                self.dataset_num_iters_per_learner.is_none_or(|n| n >= 1),
                "dataset_num_iters_per_learner",
                "must be at least 1 (leave it out for one pass over the recording)",
            ),
        ])
    }

    /// CQL samples nothing for training; evaluation runners step one at a
    /// time anyway.
    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        1
    }

    fn module_kind(&self) -> ModuleKind {
        self.sac().module_kind()
    }
}
