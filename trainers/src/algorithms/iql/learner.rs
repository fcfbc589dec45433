//! The IQL Learner: the module (policy, twin Q, V; SAC's with a value
//! function) in a [`PartwiseLearner`] with target Q-networks. Each update
//! is one gradient step on one minibatch of recorded transitions: the three
//! losses of [`iql_loss`] from one set of forward passes, each on its own
//! network with its own learning rate (`actor_lr`, `critic_lr`,
//! `value_lr`), as RLlib's IQL Learner's three optimizers. The target
//! networks follow by Polyak averaging when the driver says so.

use oxray_rl::learner::{LearnerConfig, LearnerState};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, UpdateOutcome};
use oxray_rl::metrics;
use oxray_rl::partwise_learner::PartwiseLearner;
use oxray_rl::replay_buffer::ReplayBatch;
use oxray_rl::Error;
use serde::{Deserialize, Serialize};

use super::config::IqlConfig;
use super::loss::{iql_loss, Coefficients, Evaluations};
use crate::algorithms::off_policy::TargetUpdate;
use crate::algorithms::sac;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IqlLearnerConfig {
    pub learner: LearnerConfig,
    pub training: IqlConfig,
}

pub struct IqlLearner {
    parts: PartwiseLearner,
    coefficients: Coefficients,
    tau: f64,
}

oxray_rl::learner_actor!(IqlLearner);

impl AlgorithmLearner for IqlLearner {
    type Config = IqlLearnerConfig;
    type Batch = ReplayBatch;
    type Params = TargetUpdate;
    const ALGORITHM: &'static str = "IQL";

    fn build(config: IqlLearnerConfig) -> Self {
        let t = config.training;
        // log α is not trained: its rate is never used.
        let lrs = [t.actor_lr, t.critic_lr, 0.0, t.value_lr];
        IqlLearner {
            parts: PartwiseLearner::new(&config.learner, lrs),
            coefficients: Coefficients {
                expectile: t.expectile,
                beta: t.beta,
            },
            tau: t.tau,
        }
    }

    fn learn(&mut self, batch: ReplayBatch, params: TargetUpdate) -> UpdateOutcome {
        let columns = batch.to_device(self.parts.device());
        let (module, target) = (self.parts.module(), self.parts.target());
        let recorded = module.unit_actions(&columns.actions);
        let evaluations = Evaluations {
            target_q: tch::no_grad(|| {
                let (q_1, q_2) = target.box_q(&columns.obs, &recorded);
                q_1.minimum(&q_2)
            }),
            q: module.box_q(&columns.obs, &recorded),
            value: module.value(&columns.obs),
            next_value: tch::no_grad(|| module.value(&columns.next_obs)),
            recorded_logp: module.box_log_prob(&columns.obs, &columns.actions),
        };
        let loss = iql_loss(&evaluations, &sac::minibatch(columns), &self.coefficients);
        let losses = [
            Some((metrics::POLICY_LOSS, &loss.actor)),
            Some((metrics::QF_LOSS, &loss.critic)),
            None,
            Some((metrics::VALUE_LOSS, &loss.value)),
        ];
        let target_tau = params.update_target.then_some(self.tau);
        let mut outcome = self.parts.step(losses, &loss.td_errors, target_tau);
        if let UpdateOutcome::Trained(trained) = &mut outcome {
            trained.metrics.extend([
                (metrics::QF_MEAN.into(), loss.q_mean.double_value(&[])),
                (
                    metrics::ADVANTAGE_MEAN.into(),
                    loss.advantage_mean.double_value(&[]),
                ),
            ]);
        }
        outcome
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
