//! APPO's `training:` section: IMPALA's keys ([`ImpalaConfig`]) plus APPO's
//! own for the clipped surrogate, the target network and the KL penalty,
//! with RLlib's names and defaults (as RLlib's `APPOConfig` derives from
//! `IMPALAConfig`), and its range checks. Both parts sit at the same level
//! of the YAML section; a key neither knows is rejected
//! ([`extended_section`] reads them).

use oxray_rl::rl_module::ModuleKind;
use serde::{Deserialize, Deserializer, Serialize};

use crate::algorithms::extended_section;
use crate::algorithms::impala::ImpalaConfig;
use crate::algorithms::{check, TrainingConfig};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AppoConfig {
    #[serde(flatten)]
    pub impala: ImpalaConfig,
    #[serde(flatten)]
    pub appo: AppoKeys,
}

impl<'de> Deserialize<'de> for AppoConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (impala, appo) = extended_section::deserialize(deserializer)?;
        Ok(AppoConfig { impala, appo })
    }
}

/// The keys APPO adds to IMPALA's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppoKeys {
    /// ε of the clipped surrogate (against the target network's policy).
    pub clip_param: f64,
    /// Clip of μ/π_target, the weight that moves the surrogate's ratio from
    /// the behaviour policy to the target network's.
    pub target_worker_clipping: f64,
    pub use_kl_loss: bool,
    /// Initial KL coefficient; adapted towards `kl_target` every update.
    pub kl_coeff: f64,
    pub kl_target: f64,
    /// Learner updates between target network updates (RLlib counts this in
    /// env steps trained; one update is one `train_batch_size`).
    pub target_network_update_freq: u64,
    /// Polyak factor of the target network update (1: a copy).
    pub tau: f64,
}

impl Default for AppoKeys {
    fn default() -> Self {
        AppoKeys {
            clip_param: 0.4,
            target_worker_clipping: 2.0,
            use_kl_loss: false,
            kl_coeff: 1.0,
            kl_target: 0.01,
            target_network_update_freq: 1,
            tau: 1.0,
        }
    }
}

impl TrainingConfig for AppoConfig {
    fn validate(&self, envs_sampled_in_parallel: usize) -> Result<(), (String, String)> {
        self.impala.validate(envs_sampled_in_parallel)?;
        let appo = &self.appo;
        check::first_failed(&[
            (appo.clip_param > 0.0, "clip_param", "must be positive"),
            (
                appo.target_worker_clipping > 0.0,
                "target_worker_clipping",
                "must be positive",
            ),
            (appo.kl_coeff >= 0.0, "kl_coeff", "must not be negative"),
            (appo.kl_target > 0.0, "kl_target", "must be positive"),
            (
                appo.target_network_update_freq >= 1,
                "target_network_update_freq",
                "must be at least 1",
            ),
            (
                appo.tau > 0.0 && appo.tau <= 1.0,
                "tau",
                "must be within (0, 1]",
            ),
        ])
    }

    fn auto_rollout_fragment_length(&self, envs_sampled_in_parallel: usize) -> usize {
        self.impala
            .auto_rollout_fragment_length(envs_sampled_in_parallel)
    }

    fn module_kind(&self) -> ModuleKind {
        self.impala.module_kind()
    }
}
