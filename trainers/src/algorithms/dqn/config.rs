//! DQN's `training:` section, with RLlib's names and defaults (except where a
//! comment says otherwise), and its range checks.

use oxray_rl::rl_module::{ModuleKind, ValueSupport};
use oxray_rl::schedule::Schedule;
use serde::{Deserialize, Serialize};

use crate::algorithms::off_policy::{OffPolicySettings, ReplayBufferSettings};
use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DqnConfig {
    pub lr: f64,
    pub gamma: f64,
    /// Transitions per gradient step (RLlib's `train_batch_size_per_learner`).
    pub train_batch_size: usize,
    /// Double Q-learning (van Hasselt et al. 2016): the online network picks
    /// the next action, the target network values it.
    pub double_q: bool,
    /// Dueling head (Wang et al. 2016).
    pub dueling: bool,
    /// Steps summed into each return before bootstrapping.
    pub n_step: usize,
    /// Env steps between target network updates.
    pub target_network_update_freq: u64,
    /// θ⁻ ← τ·θ + (1 − τ)·θ⁻ at each target update; 1 is a hard copy.
    pub tau: f64,
    /// ε-greedy exploration, `[[env_steps, ε], ...]`.
    pub epsilon: Schedule,
    pub num_steps_sampled_before_learning_starts: u64,
    /// Env steps trained per env step sampled (each replayed transition
    /// counts once per gradient step it is in); one gradient step per
    /// `sample()` round when absent.
    pub training_intensity: Option<f64>,
    pub replay_buffer_config: ReplayBufferSettings,
    /// Checkpoints keep the replay buffer's contents, so a resumed run
    /// learns from them at once instead of refilling the buffer first.
    pub store_buffer_in_checkpoints: bool,
    pub td_error_loss_fn: TdErrorLoss,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
    /// Atoms of C51's return distribution (Bellemare et al. 2017); 1 learns
    /// expected values only. Above 1 the loss is the cross-entropy to the
    /// projected target distribution (`td_error_loss_fn` does not apply).
    pub num_atoms: usize,
    /// Lowest return C51's support holds.
    pub v_min: f64,
    /// Highest return C51's support holds.
    pub v_max: f64,
    /// NoisyNets (Fortunato et al. 2018): the Q head's layers learn how
    /// much noise to add to their weights, and the EnvRunners explore by
    /// acting greedily under fresh noise each step; `epsilon` is then not
    /// used (as in Rainbow). Trains through libtorch.
    pub noisy: bool,
    /// σ₀ of the noisy layers: each weight's noise starts at σ₀/√inputs.
    pub sigma0: f64,
    /// An iteration runs sample-and-learn rounds until it has sampled this
    /// many env steps, so results are reported per ~1000 steps, not per step.
    pub min_sample_timesteps_per_iteration: usize,
}

/// The loss on the TD error δ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TdErrorLoss {
    /// Quadratic for |δ| ≤ 1, linear beyond (RLlib's default).
    Huber,
    Mse,
}

impl Default for DqnConfig {
    fn default() -> Self {
        DqnConfig {
            lr: 5e-4,
            gamma: 0.99,
            train_batch_size: 32,
            double_q: true,
            dueling: true,
            n_step: 1,
            target_network_update_freq: 500,
            tau: 1.0,
            epsilon: Schedule(vec![(0, 1.0), (10_000, 0.05)]),
            num_steps_sampled_before_learning_starts: 1000,
            training_intensity: None,
            replay_buffer_config: ReplayBufferSettings::default(),
            td_error_loss_fn: TdErrorLoss::Huber,
            grad_clip: Some(40.0),
            num_atoms: 1,
            v_min: -10.0,
            v_max: 10.0,
            noisy: false,
            sigma0: 0.5,
            min_sample_timesteps_per_iteration: 1000,
            store_buffer_in_checkpoints: false,
        }
    }
}

impl DqnConfig {
    /// The keys the off-policy training step reads.
    pub fn off_policy(&self) -> OffPolicySettings {
        OffPolicySettings {
            lr: self.lr,
            grad_clip: self.grad_clip,
            gamma: self.gamma,
            train_batch_size: self.train_batch_size,
            n_step: self.n_step,
            target_network_update_freq: self.target_network_update_freq,
            num_steps_sampled_before_learning_starts: self
                .num_steps_sampled_before_learning_starts,
            training_intensity: self.training_intensity,
            replay_buffer_config: self.replay_buffer_config.clone(),
            min_sample_timesteps_per_iteration: self.min_sample_timesteps_per_iteration,
            store_buffer_in_checkpoints: self.store_buffer_in_checkpoints,
        }
    }
}

impl TrainingConfig for DqnConfig {
    fn validate(&self, _envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        self.off_policy().validate()?;
        check::first_failed(&[
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
            (
                self.epsilon.check().is_ok()
                    && self.epsilon.min() >= 0.0
                    && self.epsilon.max() <= 1.0,
                "epsilon",
                "needs [env_steps, ε] points with ascending steps and ε within [0, 1]",
            ),
            (self.num_atoms >= 1, "num_atoms", "must be at least 1"),
            (
                self.num_atoms == 1 || (self.v_min.is_finite() && self.v_max.is_finite() && self.v_min < self.v_max),
                "v_min",
                "must be finite and below v_max when num_atoms is above 1",
            ),
            (
                self.sigma0.is_finite() && self.sigma0 > 0.0,
                "sigma0",
                "must be a positive number",
            ),
        ])
    }

    /// One step per env per `sample()`, as RLlib's DQN: the Learner keeps
    /// pace with every step.
    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        1
    }

    fn module_kind(&self) -> ModuleKind {
        ModuleKind::QNetwork {
            dueling: self.dueling,
            epsilon: self.epsilon.clone(),
            distributional: (self.num_atoms > 1).then_some(ValueSupport {
                num_atoms: self.num_atoms,
                v_min: self.v_min,
                v_max: self.v_max,
            }),
            noisy_sigma0: self.noisy.then_some(self.sigma0),
        }
    }
}
