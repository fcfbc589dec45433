//! The DQN Learner: the online Q-network in a [`Learner`] (Adam, clipping)
//! and a target network beside it. Each update is one gradient step on one
//! replayed minibatch through [`dqn_loss`], reporting the TD errors for the
//! replay priorities; the target network follows when the driver says so.
//!
//! Checkpoints hold the online network and Adam's state; a restored Learner
//! starts its target network as a copy of the online one.

use oxray_rl::learner::{Learner, LearnerConfig, LearnerState, Step};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::replay_buffer::ReplayBatch;
use oxray_rl::target_network::TargetNetwork;
use oxray_rl::rl_module::QNetwork;
use oxray_rl::{to_host, Error};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::DqnConfig;
use crate::algorithms::off_policy::{OffPolicyLearner, OffPolicySettings, TargetUpdate};
use super::loss::{dqn_loss, Minibatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DqnLearnerConfig {
    pub learner: LearnerConfig,
    pub training: DqnConfig,
}

pub struct DqnLearner {
    learner: Learner<QNetwork>,
    target: TargetNetwork<QNetwork>,
    training: DqnConfig,
}

oxray_rl::learner_actor!(DqnLearner);

impl AlgorithmLearner for DqnLearner {
    type Config = DqnLearnerConfig;
    type Batch = ReplayBatch;
    type Params = TargetUpdate;
    const ALGORITHM: &'static str = "DQN";
    /// One gradient step per replayed minibatch; the target network follows
    /// only after a step that was applied.
    const SINGLE_STEP: bool = true;

    fn build(config: DqnLearnerConfig) -> Self {
        let learner = Learner::<QNetwork>::new(&config.learner);
        let target = TargetNetwork::of(&learner);
        DqnLearner {
            learner,
            target,
            training: config.training,
        }
    }

    fn learn(&mut self, batch: ReplayBatch, params: TargetUpdate) -> UpdateOutcome {
        let l = &self.learner;
        let columns = batch.to_device(l.device());
        let mb = Minibatch {
            obs: columns.obs,
            actions: columns.actions.view(-1).to_kind(Kind::Int64),
            rewards: columns.rewards,
            next_obs: columns.next_obs,
            terminateds: columns.terminateds,
            discounts: columns.discounts,
            weights: columns.weights,
        };
        let q_values = l.module().q_values(&mb.obs);
        let (next_online_q, next_target_q) = tch::no_grad(|| {
            let online = if self.training.double_q {
                l.module().q_values(&mb.next_obs)
            } else {
                Tensor::zeros([0], (Kind::Float, l.device()))
            };
            (online, self.target.q_values(&mb.next_obs))
        });
        let loss = dqn_loss(
            &q_values,
            &next_online_q,
            &next_target_q,
            &mb,
            self.training.double_q,
            self.training.td_error_loss_fn,
        );
        let td_errors = to_host(&loss.td_errors);
        let (total, grad_norm) = match self.learner.apply_loss(&loss.total) {
            Ok(Step::Applied { loss, grad_norm }) => (loss, grad_norm),
            Ok(Step::NonFiniteLoss(total)) => {
                return UpdateOutcome::NonFiniteLoss(format!("loss is {total}"))
            }
            Err(e) => return UpdateOutcome::Failed(format!("gradient step failed: {e}")),
        };
        if params.update_target {
            self.target.follow(&self.learner, self.training.tau);
        }
        let td_error_mean =
            td_errors.iter().map(|&d| f64::from(d.abs())).sum::<f64>() / td_errors.len() as f64;
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
                (metrics::QF_LOSS.into(), total),
                (metrics::TOTAL_LOSS.into(), total),
                (metrics::QF_MEAN.into(), loss.q_mean.double_value(&[])),
                (metrics::TD_ERROR_MEAN.into(), td_error_mean),
                (metrics::GRADIENTS_GLOBAL_NORM.into(), grad_norm),
                (metrics::LEARNING_RATE.into(), self.training.lr),
            ]),
            histograms: Default::default(),
            td_errors,
        })
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

impl OffPolicyLearner for DqnLearner {
    type Training = DqnConfig;

    fn settings(training: &DqnConfig) -> OffPolicySettings {
        training.off_policy()
    }

    fn learner_config(learner: LearnerConfig, training: &DqnConfig) -> DqnLearnerConfig {
        DqnLearnerConfig {
            learner,
            training: training.clone(),
        }
    }

    fn exploration_metrics(training: &DqnConfig, env_steps: u64) -> Metrics {
        Metrics::from([(
            metrics::CURR_EPSILON.to_string(),
            training.epsilon.value_at(env_steps),
        )])
    }
}
