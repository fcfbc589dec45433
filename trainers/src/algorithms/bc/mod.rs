//! Behaviour cloning (Pomerleau 1991): the policy learns to act as recorded
//! episodes did, by maximum likelihood of their actions. As in RLlib, BC is
//! MARWIL with β = 0 (every recorded action weighted alike, no value
//! function): its own `training:` section, without MARWIL's advantage keys,
//! and MARWIL's training step.

mod config;

pub use config::BcConfig;

use oxray_rl::metrics::Metrics;

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::marwil::Marwil;
use crate::algorithms::TrainerCore;
use crate::config::ExperimentConfig;

pub struct Bc(Marwil);

impl Bc {
    pub fn new(config: &ExperimentConfig, training: &BcConfig) -> Result<Self, TrainError> {
        Ok(Bc(Marwil::new(config, &training.marwil())?))
    }
}

impl Algorithm for Bc {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        self.0.train()
    }

    fn trainer(&self) -> &dyn TrainerCore {
        self.0.trainer()
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        self.0.trainer_mut()
    }
}
