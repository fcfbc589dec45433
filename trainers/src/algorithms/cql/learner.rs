//! The CQL Learner: SAC's Learner (module, target networks, per-part
//! learning rates and gradient step) with CQL's extra forward passes: each
//! state of the minibatch repeated N times, Q of N uniform actions and of N
//! draws from π at s and at s', all at s; and, while the policy clones the
//! recording, log π of the recorded actions.

use oxray_rl::learner::{LearnerConfig, LearnerState};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, UpdateOutcome};
use oxray_rl::metrics;
use oxray_rl::replay_buffer::ReplayBatch;
use oxray_rl::rl_module::{RLModule, SoftActorCritic};
use oxray_rl::Error;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::CqlConfig;
use super::loss::{cql_loss, Coefficients, Evaluations, Proposal};
use crate::algorithms::sac::{self, SacLearner, SacLearnerConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CqlLearnerConfig {
    pub learner: LearnerConfig,
    pub training: CqlConfig,
}

/// Sent with each minibatch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CqlParams {
    /// Move the target networks towards the online ones after this step.
    pub update_target: bool,
    /// The policy learns by behaviour cloning at this step (the first
    /// `bc_iters`).
    pub behaviour_cloning: bool,
}

pub struct CqlLearner {
    sac: SacLearner,
    coefficients: Coefficients,
    num_actions: i64,
}

oxray_rl::learner_actor!(CqlLearner);

/// The N actions of a proposal at states repeated N times, `[B·N, 1]`
/// outputs laid out `[B, N]`.
fn per_state(x: &Tensor, states: i64) -> Tensor {
    x.reshape([states, -1])
}

impl AlgorithmLearner for CqlLearner {
    type Config = CqlLearnerConfig;
    type Batch = ReplayBatch;
    type Params = CqlParams;
    const ALGORITHM: &'static str = "CQL";

    fn build(config: CqlLearnerConfig) -> Self {
        let training = config.training;
        let sac = SacLearner::build(SacLearnerConfig {
            learner: config.learner,
            training: training.sac(),
        });
        let coefficients = Coefficients {
            target_entropy: sac.target_entropy(),
            min_q_weight: training.min_q_weight,
            temperature: training.temperature,
            deterministic_backup: training.deterministic_backup,
        };
        CqlLearner {
            sac,
            coefficients,
            num_actions: training.num_actions as i64,
        }
    }

    fn learn(&mut self, batch: ReplayBatch, params: CqlParams) -> UpdateOutcome {
        let columns = batch.to_device(self.sac.module().device());
        let evaluations = self.sac.evaluate(&columns);
        let module: &SoftActorCritic = self.sac.module();
        let states = columns.obs.size()[0];
        let repeated = |obs: &Tensor| obs.repeat_interleave_self_int(self.num_actions, 0, None);
        let (obs, next_obs) = (repeated(&columns.obs), repeated(&columns.next_obs));
        let uniform = Tensor::rand(
            [obs.size()[0], columns.actions.size()[1]],
            (Kind::Float, obs.device()),
        ) * 2.0
            - 1.0;
        let action_dim = columns.actions.size()[1] as f64;
        let (q_1, q_2) = module.box_q(&obs, &uniform);
        let uniform = Proposal {
            q: (per_state(&q_1, states), per_state(&q_2, states)),
            log_density: Tensor::from(action_dim * 0.5f64.ln()).to_device(obs.device()),
        };
        // π's draws at s and at s', each valued at s. Only the critics
        // learn from the conservative term, so the draws need no gradient.
        let policy_at = |draw_from: &Tensor| {
            let draws = tch::no_grad(|| module.policy_expectation(draw_from));
            let (q_1, q_2) = module.expected_q(&obs, &draws);
            Proposal {
                q: (per_state(&q_1, states), per_state(&q_2, states)),
                log_density: per_state(&draws.logp, states),
            }
        };
        let evaluations = Evaluations {
            proposals: [uniform, policy_at(&obs), policy_at(&next_obs)],
            recorded_logp: params
                .behaviour_cloning
                .then(|| module.box_log_prob(&columns.obs, &columns.actions)),
            sac: evaluations,
        };
        let loss = cql_loss(evaluations, &sac::minibatch(columns), &self.coefficients);
        let outcome = self.sac.apply(&loss.sac, params.update_target);
        match outcome {
            UpdateOutcome::Trained(mut trained) => {
                let conservative = loss.conservative.double_value(&[]);
                trained.metrics.insert(metrics::CQL_LOSS.into(), conservative);
                UpdateOutcome::Trained(trained)
            }
            other => other,
        }
    }

    fn learner(&self) -> &dyn LearnerCore {
        self.sac.learner()
    }

    fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        self.sac.learner_mut()
    }

    fn restore_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        self.sac.restore_state(state)
    }
}
