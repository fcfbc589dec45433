//! SAC's `training:` section, with RLlib's names and defaults (except where a
//! comment says otherwise), and its range checks.

use oxray_rl::rl_module::{ActionSpace, ModuleKind};
use serde::{Deserialize, Serialize};

use crate::algorithms::off_policy::{OffPolicySettings, ReplayBufferKind, ReplayBufferSettings};
use crate::algorithms::{check, TrainingConfig};
use crate::config::auto_or_number;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SacConfig {
    /// The policy's learning rate (RLlib's default is 3e-5; 3e-4 is the
    /// paper's and Stable-Baselines3's).
    pub actor_lr: f64,
    /// The twin Q-functions' learning rate.
    pub critic_lr: f64,
    /// log α's learning rate.
    pub alpha_lr: f64,
    pub gamma: f64,
    /// Target Q-networks: θ⁻ ← τ·θ + (1 − τ)·θ⁻ at each target update.
    pub tau: f64,
    /// α before any update.
    pub initial_alpha: f64,
    /// The entropy α is tuned towards; `auto` is −(action dimensions) for
    /// a Box, 0.98·ln n for n Discrete actions.
    pub target_entropy: TargetEntropy,
    /// Transitions per gradient step (RLlib's `train_batch_size_per_learner`).
    pub train_batch_size: usize,
    /// Steps summed into each return before bootstrapping.
    pub n_step: usize,
    /// Env steps between target network updates; 0 updates after every
    /// gradient step.
    pub target_network_update_freq: u64,
    pub num_steps_sampled_before_learning_starts: u64,
    /// Env steps trained per env step sampled (each replayed transition
    /// counts once per gradient step it is in); one gradient step per
    /// `sample()` round when absent.
    pub training_intensity: Option<f64>,
    pub replay_buffer_config: ReplayBufferSettings,
    /// Checkpoints keep the replay buffer's contents, so a resumed run
    /// learns from them at once instead of refilling the buffer first.
    pub store_buffer_in_checkpoints: bool,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
    /// An iteration runs sample-and-learn rounds until it has sampled this
    /// many env steps (RLlib's default is 100; 1000 keeps results fewer).
    pub min_sample_timesteps_per_iteration: usize,
}

/// `target_entropy: auto` or a number.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum TargetEntropy {
    #[serde(rename = "auto")]
    Auto,
    #[serde(untagged)]
    Value(f64),
}

impl<'de> Deserialize<'de> for TargetEntropy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match auto_or_number(d, "a number or `auto`")? {
            None => TargetEntropy::Auto,
            Some(value) => TargetEntropy::Value(value),
        })
    }
}

impl TargetEntropy {
    /// The target in `space`: `auto` is −d for a Box of d dimensions (the
    /// paper's), and 0.98 of the uniform policy's entropy, 0.98·ln n, for n
    /// Discrete actions (RLlib's).
    pub fn value(self, space: &ActionSpace) -> f64 {
        match (self, space) {
            (TargetEntropy::Value(value), _) => value,
            (TargetEntropy::Auto, ActionSpace::Box { low, .. }) => -(low.len() as f64),
            (TargetEntropy::Auto, ActionSpace::Discrete { n }) => 0.98 * (*n as f64).ln(),
        }
    }
}

impl Default for SacConfig {
    fn default() -> Self {
        SacConfig {
            actor_lr: 3e-4,
            critic_lr: 3e-4,
            alpha_lr: 3e-4,
            gamma: 0.99,
            tau: 5e-3,
            initial_alpha: 1.0,
            target_entropy: TargetEntropy::Auto,
            train_batch_size: 256,
            n_step: 1,
            target_network_update_freq: 0,
            num_steps_sampled_before_learning_starts: 1500,
            training_intensity: None,
            replay_buffer_config: ReplayBufferSettings {
                kind: ReplayBufferKind::Prioritized,
                capacity: 1_000_000,
                alpha: 0.6,
                beta: 0.4,
            },
            grad_clip: None,
            min_sample_timesteps_per_iteration: 1000,
            store_buffer_in_checkpoints: false,
        }
    }
}

impl SacConfig {
    /// The keys the off-policy training step reads (`lr` is the critics').
    pub fn off_policy(&self) -> OffPolicySettings {
        OffPolicySettings {
            lr: self.critic_lr,
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

impl TrainingConfig for SacConfig {
    fn validate(&self, _envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        // `lr` in the shared checks is critic_lr: name the key the file has.
        self.off_policy()
            .validate()
            .map_err(|(key, message)| match key.as_str() {
                "training.lr" => ("training.critic_lr".to_string(), message),
                _ => (key, message),
            })?;
        let positive = |x: f64| x > 0.0 && x.is_finite();
        check::first_failed(&[
            (positive(self.actor_lr), "actor_lr", "must be positive"),
            (positive(self.alpha_lr), "alpha_lr", "must be positive"),
            (
                self.tau > 0.0 && self.tau <= 1.0,
                "tau",
                "must be within (0, 1]",
            ),
            (
                positive(self.initial_alpha),
                "initial_alpha",
                "must be positive",
            ),
            (
                match self.target_entropy {
                    TargetEntropy::Auto => true,
                    TargetEntropy::Value(value) => value.is_finite(),
                },
                "target_entropy",
                "must be `auto` or a finite number",
            ),
        ])
    }

    /// One step per env per `sample()`, as RLlib's SAC: the Learner keeps
    /// pace with every step.
    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        1
    }

    fn module_kind(&self) -> ModuleKind {
        ModuleKind::SoftActorCritic {
            initial_alpha: self.initial_alpha,
            value_function: false,
        }
    }
}
