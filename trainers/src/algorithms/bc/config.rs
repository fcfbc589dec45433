//! BC's `training:` section, with RLlib's names and defaults (RLlib's
//! `BCConfig`, which is `MARWILConfig` with β = 0), its range checks, and
//! the MARWIL config it amounts to.

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::marwil::MarwilConfig;
use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BcConfig {
    pub lr: f64,
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

impl Default for BcConfig {
    fn default() -> Self {
        BcConfig {
            lr: 1e-4,
            train_batch_size: 2000,
            dataset_num_iters_per_learner: None,
            grad_clip: None,
        }
    }
}

impl BcConfig {
    /// MARWIL with β = 0: every recorded action weighted alike.
    pub fn marwil(&self) -> MarwilConfig {
        MarwilConfig {
            lr: self.lr,
            beta: 0.0,
            vf_coeff: 0.0,
            train_batch_size: self.train_batch_size,
            dataset_num_iters_per_learner: self.dataset_num_iters_per_learner,
            grad_clip: self.grad_clip,
            ..MarwilConfig::default()
        }
    }
}

impl TrainingConfig for BcConfig {
    fn validate(&self, _envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        check::first_failed(&[
            (self.lr > 0.0, "lr", "must be positive"),
            (
                self.train_batch_size >= 1,
                "train_batch_size",
                "must be at least 1",
            ),
            (
                self.dataset_num_iters_per_learner.is_none_or(|n| n >= 1),
                "dataset_num_iters_per_learner",
                "must be at least 1 (leave it out for one pass over the dataset)",
            ),
            (
                self.grad_clip.is_none_or(|c| c > 0.0),
                "grad_clip",
                "must be positive",
            ),
        ])
    }

    /// BC samples nothing for training; evaluation runners step one at a
    /// time anyway.
    fn auto_rollout_fragment_length(&self, _envs_sampled_in_parallel: usize) -> usize {
        1
    }

    fn module_kind(&self) -> ModuleKind {
        ModuleKind::ActorCritic
    }
}
