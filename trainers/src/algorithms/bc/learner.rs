//! The BC Learner: shuffled minibatches of recorded (observation, action)
//! rows through [`bc_loss`], with several Learners each taking its slice of
//! every minibatch and averaging gradients, as PPO's do.

use oxray_rl::learner::{Learner, LearnerConfig};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, Histograms, Metrics};
use oxray_rl::minibatch_sgd::{minibatch_sgd, MinibatchPlan};
use oxray_rl::rl_module::ActorCritic;
use oxray_rl::ObsBuffer;
use serde::{Deserialize, Serialize};

use super::config::BcConfig;
use super::loss::bc_loss;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BcLearnerConfig {
    pub learner: LearnerConfig,
    pub training: BcConfig,
}

/// Recorded steps to learn from: `[rows, obs_dim]` and `[rows, action_dim]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BcBatch {
    pub obs: ObsBuffer,
    pub obs_dim: usize,
    pub actions: Vec<f32>,
    pub action_dim: usize,
}

impl BcBatch {
    pub fn len(&self) -> usize {
        self.actions.len() / self.action_dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Seeds the update's minibatch shuffling, so no RNG state needs saving.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BcParams {
    pub shuffle_seed: u64,
}

pub struct BcLearner {
    learner: Learner<ActorCritic>,
    training: BcConfig,
}

oxray_rl::learner_actor!(BcLearner);

impl AlgorithmLearner for BcLearner {
    type Config = BcLearnerConfig;
    type Batch = BcBatch;
    type Params = BcParams;
    const ALGORITHM: &'static str = "BC";

    fn build(config: BcLearnerConfig) -> Self {
        BcLearner {
            learner: Learner::new(&config.learner),
            training: config.training,
        }
    }

    /// One pass over `batch` in shuffled minibatches of `train_batch_size`.
    fn learn(&mut self, batch: BcBatch, params: BcParams) -> UpdateOutcome {
        let l = &self.learner;
        let obs = l.obs_tensor(&batch.obs, batch.obs_dim);
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let plan = MinibatchPlan {
            num_epochs: 1,
            minibatch_size: self.training.train_batch_size,
            shuffle_seed: params.shuffle_seed,
        };
        let sgd = minibatch_sgd(&mut self.learner, batch.len(), plan, |learner, mb| {
            let dist = learner.module().distribution(&mb.select(&obs));
            let loss = bc_loss(&dist, &mb.select(&actions));
            (loss.policy_loss.shallow_clone(), [loss.policy_loss, loss.entropy])
        });
        let sgd = match sgd {
            Ok(means) => means,
            Err(stopped) => return stopped,
        };
        let [policy_loss, entropy] = sgd.terms;
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
                (metrics::TOTAL_LOSS.into(), sgd.total_loss),
                (metrics::POLICY_LOSS.into(), policy_loss),
                (metrics::ENTROPY.into(), entropy),
                (metrics::GRADIENTS_GLOBAL_NORM.into(), sgd.grad_norm),
                (metrics::LEARNING_RATE.into(), self.training.lr),
            ]),
            histograms: Histograms::new(),
            td_errors: Vec::new(),
        })
    }

    fn learner(&self) -> &dyn LearnerCore {
        &self.learner
    }

    fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        &mut self.learner
    }
}
