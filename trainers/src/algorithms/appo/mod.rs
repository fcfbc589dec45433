//! APPO, RLlib's asynchronous PPO: IMPALA (Espeholt et al. 2018) with
//! PPO's clipped surrogate and a target network. It runs IMPALA's training
//! step ([`impala::training_step`]) and V-trace ([`impala::VTraceBatch`])
//! and adds:
//!
//! - `config`: APPO's keys beside IMPALA's, and their checks,
//! - `loss`: the clipped surrogate against the target policy, with
//!   IMPALA's value loss and entropy bonus and an optional KL penalty,
//! - `learner`: the target network and the minibatch steps,
//! - here, what the training step does for APPO: the target network follows
//!   every `target_network_update_freq` updates and the KL coefficient
//!   adapts after each.

mod config;
mod learner;
mod loss;

pub use config::{AppoConfig, AppoKeys};
pub use learner::{AppoLearner, AppoLearnerConfig, AppoUpdateParams};
pub use loss::{appo_loss, AppoLoss, Minibatch};

use oxray_rl::metrics::{self, Metrics};
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, TrainError};
use crate::algorithms::impala::{self, ImpalaState};
use crate::algorithms::{self as shared, Trainer, TrainerCore};
use crate::config::ExperimentConfig;

/// APPO's own training state beside IMPALA's (one level in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct AppoState {
    kl_coeff: f64,
    #[serde(flatten)]
    impala: ImpalaState,
}

impl AsMut<ImpalaState> for AppoState {
    fn as_mut(&mut self) -> &mut ImpalaState {
        &mut self.impala
    }
}

pub struct Appo {
    training: AppoConfig,
    trainer: Trainer<AppoLearner, AppoState>,
}

impl Appo {
    pub fn new(config: &ExperimentConfig, training: &AppoConfig) -> Result<Self, TrainError> {
        let module = shared::module_spec(config)?;
        let impala = &training.impala;
        let learner_config = AppoLearnerConfig {
            learner: shared::learner_config(config, &module, impala.lr, impala.grad_clip),
            impala: impala.clone(),
            appo: training.appo.clone(),
        };
        let sampling = impala::asynchronous_sampling(impala);
        let state = AppoState {
            kl_coeff: training.appo.kl_coeff,
            impala: ImpalaState::default(),
        };
        Ok(Appo {
            training: training.clone(),
            trainer: Trainer::new(config, learner_config, module, sampling, state)?,
        })
    }
}

impl Algorithm for Appo {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let cfg = &self.training.appo;
        impala::training_step(
            &mut self.trainer,
            &self.training.impala,
            |state, update| AppoUpdateParams {
                kl_coeff: state.kl_coeff,
                shuffle_seed: update.shuffle_seed,
                update_target: update
                    .num_updates
                    .is_multiple_of(cfg.target_network_update_freq),
            },
            |state, result| {
                if cfg.use_kl_loss {
                    state.kl_coeff = shared::adapt_kl_coeff(
                        state.kl_coeff,
                        result[metrics::MEAN_KL_LOSS],
                        cfg.kl_target,
                    );
                }
            },
        )
    }

    fn trainer(&self) -> &dyn TrainerCore {
        &self.trainer
    }

    fn trainer_mut(&mut self) -> &mut dyn TrainerCore {
        &mut self.trainer
    }
}
