//! BC's `training:` section, with RLlib's names and defaults (RLlib's
//! `BCConfig`, which is `MARWILConfig` with β = 0), its range checks, and
//! the MARWIL config it amounts to.

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Serialize};

use crate::algorithms::marwil::MarwilConfig;
use crate::algorithms::TrainingConfig;

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

/// Every key BC has is MARWIL's, under the same name: MARWIL's checks
/// name them alike.
impl TrainingConfig for BcConfig {
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        self.marwil().validate(envs_sampled_in_parallel)
    }

    fn auto_rollout_fragment_length(&self, envs_sampled_in_parallel: usize) -> usize {
        self.marwil()
            .auto_rollout_fragment_length(envs_sampled_in_parallel)
    }

    fn module_kind(&self) -> ModuleKind {
        self.marwil().module_kind()
    }
}
