//! IQL's `training:` section, with RLlib's names and defaults (`IQLConfig`,
//! which extends `MARWILConfig`: `beta` is the advantage temperature here
//! too), its range checks, and the SAC config its network keys amount to.
//! The Q-functions are always twin (RLlib's default `twin_q: true`; there
//! is no key).

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::sac::SacConfig;
use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IqlConfig {
    /// β, the inverse temperature of the advantage weights exp(β·A): near 0
    /// the policy clones the recording, larger values favour the actions
    /// with the highest advantage.
    pub beta: f64,
    /// τ of the expectile regression of V(s) on Q(s, a): 0.5 is the mean,
    /// towards 1 V approaches the best recorded action's value.
    pub expectile: f64,
    pub actor_lr: f64,
    pub critic_lr: f64,
    pub value_lr: f64,
    pub gamma: f64,
    /// Target Q-networks: θ⁻ ← τ·θ + (1 − τ)·θ⁻ at each target update.
    pub tau: f64,
    /// Gradient steps between target network updates; 0 updates after
    /// every one (IQL samples no env steps to count).
    pub target_network_update_freq: u64,
    /// Recorded transitions per gradient step (RLlib's
    /// `train_batch_size_per_learner`).
    pub train_batch_size: usize,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
    /// Gradient steps per iteration, each on `train_batch_size` transitions
    /// drawn uniformly from the recording; when absent, as many as make one
    /// pass over it (RLlib's `dataset_num_iters_per_learner`).
    pub dataset_num_iters_per_learner: Option<usize>,
}

impl Default for IqlConfig {
    fn default() -> Self {
        IqlConfig {
            beta: 0.1,
            expectile: 0.8,
            actor_lr: 3e-4,
            critic_lr: 3e-4,
            value_lr: 3e-4,
            gamma: 0.99,
            tau: 1.0,
            target_network_update_freq: 0,
            train_batch_size: 2000,
            grad_clip: None,
            dataset_num_iters_per_learner: None,
        }
    }
}

impl IqlConfig {
    /// The SAC config IQL's shared keys make: the checks of those keys.
    fn sac(&self) -> SacConfig {
        SacConfig {
            actor_lr: self.actor_lr,
            critic_lr: self.critic_lr,
            gamma: self.gamma,
            tau: self.tau,
            train_batch_size: self.train_batch_size,
            grad_clip: self.grad_clip,
            ..SacConfig::default()
        }
    }
}

/// The keys IQL shares with SAC are checked as SAC's (same names); then
/// its own.
impl TrainingConfig for IqlConfig {
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        self.sac().validate(envs_sampled_in_parallel)?;
        let positive = |x: f64| x > 0.0 && x.is_finite();
        check::first_failed(&[
            (positive(self.value_lr), "value_lr", "must be positive"),
            (positive(self.beta), "beta", "must be positive"),
            (
                self.expectile > 0.0 && self.expectile < 1.0,
                "expectile",
                "must be within (0, 1)",
            ),
            (
                self.dataset_num_iters_per_learner.is_none_or(|n| n >= 1),
                "dataset_num_iters_per_learner",
                "must be at least 1 (leave it out for one pass over the recording)",
            ),
        ])
    }

    /// IQL samples nothing for training; evaluation runners step one at a
    /// time anyway.
    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        1
    }

    /// SAC's module with V(s); its α is never used.
    fn module_kind(&self) -> ModuleKind {
        ModuleKind::SoftActorCritic {
            initial_alpha: 1.0,
            value_function: true,
        }
    }
}
