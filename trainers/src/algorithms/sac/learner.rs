//! The SAC Learner: the module (policy, twin Q, log α) in a [`Learner`] and
//! target Q-networks beside it. Each update is one gradient step on one
//! replayed minibatch: the three losses of [`sac_loss`] from one set of
//! forward passes (as RLlib's SAC Learner), each differentiated with respect
//! to its own part of the module only (the actor loss reaches the critics'
//! weights through Q(s, ã), and that gradient must not train them), the parts'
//! gradients laid end to end as the flat buffer, and one Adam step with each
//! part's learning rate. The target networks follow by Polyak averaging when
//! the driver says so.
//!
//! Checkpoints hold the module (log α included) and Adam's state; a restored
//! Learner starts its target networks as copies of the online ones.

use oxray_rl::learner::{Learner, LearnerConfig, LearnerState, Step};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::optim::flat_gradient;
use oxray_rl::replay_buffer::{DeviceReplayBatch, ReplayBatch};
use oxray_rl::target_network::TargetNetwork;
use oxray_rl::rl_module::SoftActorCritic;
use oxray_rl::{to_host, Error};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::SacConfig;
use super::loss::{sac_loss, Evaluations, Expectation, Minibatch, SacLoss};
use crate::algorithms::off_policy::{OffPolicyLearner, OffPolicySettings, TargetUpdate};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SacLearnerConfig {
    pub learner: LearnerConfig,
    pub training: SacConfig,
}

pub struct SacLearner {
    learner: Learner<SoftActorCritic>,
    target: TargetNetwork<SoftActorCritic>,
    training: SacConfig,
    target_entropy: f64,
}

oxray_rl::learner_actor!(SacLearner);

impl SacLearner {
    /// The online module (policy, twin Q, log α).
    pub(crate) fn module(&self) -> &SoftActorCritic {
        self.learner.module()
    }

    /// H̄, the entropy α is tuned towards.
    pub(crate) fn target_entropy(&self) -> f64 {
        self.target_entropy
    }

    /// What [`sac_loss`] reads, from one set of forward passes over a
    /// replayed minibatch: Q of its actions, π at s with the online
    /// Q-functions, π at s' with the target ones (without gradients).
    pub(crate) fn evaluate(&self, columns: &DeviceReplayBatch) -> Evaluations {
        let sac = self.learner.module();
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
            next: tch::no_grad(|| expectation(&self.target, &columns.next_obs)),
            log_alpha: sac.log_alpha().shallow_clone(),
        }
    }

    /// One gradient step on `loss` (each of its three losses on its own
    /// part of the module), then the target networks' Polyak step if
    /// `update_target`; the update's metrics.
    pub(crate) fn apply(&mut self, loss: &SacLoss, update_target: bool) -> UpdateOutcome {
        let value = |x: &Tensor| x.double_value(&[]);
        let (critic, actor, alpha) = (value(&loss.critic), value(&loss.actor), value(&loss.alpha));
        let total = critic + actor + alpha;
        if !total.is_finite() {
            return UpdateOutcome::NonFiniteLoss(format!(
                "critic loss {critic}, actor loss {actor}, alpha loss {alpha}"
            ));
        }
        let grad = self.gradient([&loss.actor, &loss.critic, &loss.alpha]);
        let td_errors = to_host(&loss.td_errors);
        let grad_norm = match self.learner.apply_gradient(total, grad) {
            Ok(Step::Applied { grad_norm, .. }) => grad_norm,
            Ok(Step::NonFiniteLoss(total)) => {
                return UpdateOutcome::NonFiniteLoss(format!("loss is {total}"))
            }
            Err(e) => return UpdateOutcome::Failed(format!("gradient step failed: {e}")),
        };
        if update_target {
            self.target.follow(&self.learner, self.training.tau);
        }
        let td_error_mean =
            td_errors.iter().map(|&d| f64::from(d)).sum::<f64>() / td_errors.len() as f64;
        let alpha_value = self.learner.module().log_alpha().exp().double_value(&[0]);
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
                (metrics::QF_LOSS.into(), critic),
                (metrics::POLICY_LOSS.into(), actor),
                (metrics::ALPHA_LOSS.into(), alpha),
                (metrics::TOTAL_LOSS.into(), total),
                (metrics::ALPHA_VALUE.into(), alpha_value),
                (metrics::ENTROPY.into(), value(&loss.entropy)),
                (metrics::QF_MEAN.into(), value(&loss.q_mean)),
                (metrics::TD_ERROR_MEAN.into(), td_error_mean),
                (metrics::GRADIENTS_GLOBAL_NORM.into(), grad_norm),
            ]),
            histograms: Default::default(),
            td_errors,
        })
    }

    /// The flat gradient: each loss's gradient with respect to its part
    /// (policy, critics, log α), in the buffer's order.
    fn gradient(&self, losses: [&Tensor; 3]) -> Tensor {
        let parts = self.learner.module().parts();
        let grads: Vec<Tensor> = losses
            .iter()
            .zip(&parts)
            .map(|(loss, part)| flat_gradient(loss, &part.variables))
            .collect();
        Tensor::cat(&grads, 0)
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
        let mut learner = Learner::<SoftActorCritic>::new(&config.learner);
        let target = TargetNetwork::of(&learner);
        let training = config.training;
        let lrs: Vec<Tensor> = learner
            .module()
            .parts()
            .iter()
            .zip([training.actor_lr, training.critic_lr, training.alpha_lr])
            .map(|(part, lr)| {
                let numel: i64 = part.variables.iter().map(|v| v.numel() as i64).sum();
                Tensor::full([numel], lr, (Kind::Float, tch::Device::Cpu))
            })
            .collect();
        learner.set_lr_per_parameter(Tensor::cat(&lrs, 0));
        let target_entropy = training
            .target_entropy
            .value(&config.learner.module.action_space);
        SacLearner {
            learner,
            target,
            target_entropy,
            training,
        }
    }

    fn learn(&mut self, batch: ReplayBatch, params: TargetUpdate) -> UpdateOutcome {
        let columns = batch.to_device(self.learner.device());
        let evaluations = self.evaluate(&columns);
        let loss = sac_loss(&evaluations, &minibatch(columns), self.target_entropy);
        self.apply(&loss, params.update_target)
    }

    fn learner(&self) -> &dyn LearnerCore {
        &self.learner
    }

    fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        &mut self.learner
    }

    fn restore_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        self.learner.set_state(state)?;
        self.target.follow(&self.learner, 1.0);
        Ok(())
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
