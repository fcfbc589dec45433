//! The SAC Learner: the module (policy, twin Q, log α) in a
//! [`PartwiseLearner`] with target Q-networks. Each update is one gradient
//! step on one replayed minibatch: the three losses of [`sac_loss`] from one
//! set of forward passes (as RLlib's SAC Learner), each on its own part of
//! the module with its own learning rate. The target networks follow by
//! Polyak averaging when the driver says so.

use oxray_rl::learner::{LearnerConfig, LearnerState};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, UpdateOutcome};
use oxray_rl::metrics;
use oxray_rl::partwise_learner::PartwiseLearner;
use oxray_rl::replay_buffer::{DeviceReplayBatch, ReplayBatch};
use oxray_rl::rl_module::SoftActorCritic;
use oxray_rl::Error;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::config::SacConfig;
use super::loss::{sac_loss, Evaluations, Expectation, Minibatch, SacLoss};
use crate::algorithms::off_policy::{OffPolicyLearner, OffPolicySettings, TargetUpdate};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SacLearnerConfig {
    pub learner: LearnerConfig,
    pub training: SacConfig,
}

pub struct SacLearner {
    parts: PartwiseLearner,
    training: SacConfig,
    target_entropy: f64,
}

oxray_rl::learner_actor!(SacLearner);

impl SacLearner {
    /// The online module (policy, twin Q, log α).
    pub(crate) fn module(&self) -> &SoftActorCritic {
        self.parts.module()
    }

    /// H̄, the entropy α is tuned towards.
    pub(crate) fn target_entropy(&self) -> f64 {
        self.target_entropy
    }

    /// What [`sac_loss`] reads, from one set of forward passes over a
    /// replayed minibatch: Q of its actions, π at s with the online
    /// Q-functions, π at s' with the target ones (without gradients).
    pub(crate) fn evaluate(&self, columns: &DeviceReplayBatch) -> Evaluations {
        let sac = self.parts.module();
        let expectation = |q_of: &SoftActorCritic, obs: &Tensor| {
            let policy = sac.policy_expectation(obs);
            Expectation {
                q: q_of.expected_q(obs, &policy),
                weights: policy.weights,
                logp: policy.logp,
            }
        };
        Evaluations {
            q: sac.replayed_q(&columns.obs, &columns.actions),
            policy: expectation(sac, &columns.obs),
            next: tch::no_grad(|| expectation(self.parts.target(), &columns.next_obs)),
            log_alpha: sac.log_alpha().shallow_clone(),
        }
    }

    /// One gradient step on `loss` (each of its three losses on its own
    /// part of the module), then the target networks' Polyak step if
    /// `update_target`; the update's metrics.
    pub(crate) fn apply(&mut self, loss: &SacLoss, update_target: bool) -> UpdateOutcome {
        let losses = [
            Some((metrics::POLICY_LOSS, &loss.actor)),
            Some((metrics::QF_LOSS, &loss.critic)),
            Some((metrics::ALPHA_LOSS, &loss.alpha)),
            None,
        ];
        let target_tau = update_target.then_some(self.training.tau);
        let mut outcome = self.parts.step(losses, &loss.td_errors, target_tau);
        if let UpdateOutcome::Trained(trained) = &mut outcome {
            let value = |x: &Tensor| x.double_value(&[]);
            let alpha = self.parts.module().log_alpha().exp().double_value(&[0]);
            trained.metrics.extend([
                (metrics::ALPHA_VALUE.into(), alpha),
                (metrics::ENTROPY.into(), value(&loss.entropy)),
                (metrics::QF_MEAN.into(), value(&loss.q_mean)),
            ]);
        }
        outcome
    }
}

/// The reward columns of a replayed minibatch, as the losses read them.
pub(crate) fn minibatch(columns: DeviceReplayBatch) -> Minibatch {
    Minibatch {
        rewards: columns.rewards,
        terminateds: columns.terminateds,
        discounts: columns.discounts,
        weights: columns.weights,
    }
}

impl AlgorithmLearner for SacLearner {
    type Config = SacLearnerConfig;
    type Batch = ReplayBatch;
    type Params = TargetUpdate;
    const ALGORITHM: &'static str = "SAC";

    fn build(config: SacLearnerConfig) -> Self {
        let training = config.training;
        // SAC's module has no V, so the fourth rate is never used.
        let lrs = [training.actor_lr, training.critic_lr, training.alpha_lr, 0.0];
        let parts = PartwiseLearner::new(&config.learner, lrs);
        let target_entropy = training
            .target_entropy
            .value(&config.learner.module.action_space);
        SacLearner {
            parts,
            target_entropy,
            training,
        }
    }

    fn learn(&mut self, batch: ReplayBatch, params: TargetUpdate) -> UpdateOutcome {
        let columns = batch.to_device(self.parts.device());
        let evaluations = self.evaluate(&columns);
        let loss = sac_loss(&evaluations, &minibatch(columns), self.target_entropy);
        self.apply(&loss, params.update_target)
    }

    fn learner(&self) -> &dyn LearnerCore {
        self.parts.learner()
    }

    fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        self.parts.learner_mut()
    }

    fn restore_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        self.parts.restore_state(state)
    }
}

impl OffPolicyLearner for SacLearner {
    type Training = SacConfig;

    fn settings(training: &SacConfig) -> OffPolicySettings {
        training.off_policy()
    }

    fn learner_config(learner: LearnerConfig, training: &SacConfig) -> SacLearnerConfig {
        SacLearnerConfig {
            learner,
            training: training.clone(),
        }
    }
}
