//! The MARWIL Learner: value targets of the update's rows from the current
//! value function (a truncated episode's return bootstrapped from the value
//! of the state it was cut off in), then shuffled minibatches through
//! [`marwil_loss`], with several Learners each taking its slice of every
//! minibatch and averaging gradients, as PPO's do.

use oxray_rl::learner::{Learner, LearnerConfig};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, Histograms, Metrics};
use oxray_rl::minibatch_sgd::{minibatch_sgd, MinibatchPlan};
use oxray_rl::rl_module::ActorCritic;
use oxray_rl::{to_host, ObsBuffer};
use serde::{Deserialize, Serialize};

use super::config::MarwilConfig;
use super::loss::{marwil_loss, MarwilCoefficients, Minibatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarwilLearnerConfig {
    pub learner: LearnerConfig,
    pub training: MarwilConfig,
}

/// Recorded steps to learn from, row by row, with what their value
/// targets are made of (`offline_data::ReturnsToGo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MarwilBatch {
    pub obs_dim: usize,
    pub action_dim: usize,
    /// `[rows, obs_dim]`
    pub obs: ObsBuffer,
    /// `[rows, action_dim]`
    pub actions: Vec<f32>,
    pub returns: Vec<f32>,
    pub bootstrap_discounts: Vec<f32>,
    /// Each row's episode: its row of `final_obs`.
    pub episode: Vec<u32>,
    /// `[episodes, obs_dim]`
    pub final_obs: ObsBuffer,
}

impl MarwilBatch {
    pub fn len(&self) -> usize {
        self.returns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.returns.is_empty()
    }
}

/// What the driver sends with each update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarwilParams {
    /// Seeds this update's minibatch shuffling, so no RNG state needs saving.
    pub shuffle_seed: u64,
    /// c², the running mean of the squared advantage, which the driver keeps.
    pub sqd_adv_norm: f64,
}

pub struct MarwilLearner {
    learner: Learner<ActorCritic>,
    training: MarwilConfig,
}

oxray_rl::learner_actor!(MarwilLearner);

impl AlgorithmLearner for MarwilLearner {
    type Config = MarwilLearnerConfig;
    type Batch = MarwilBatch;
    type Params = MarwilParams;
    const ALGORITHM: &'static str = "MARWIL";

    fn build(config: MarwilLearnerConfig) -> Self {
        MarwilLearner {
            learner: Learner::new(&config.learner),
            training: config.training,
        }
    }

    /// One pass over `batch` in shuffled minibatches of `train_batch_size`.
    fn learn(&mut self, batch: MarwilBatch, params: MarwilParams) -> UpdateOutcome {
        let cfg = &self.training;
        let l = &self.learner;
        let obs = l.obs_tensor(&batch.obs, batch.obs_dim);
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let value_targets = if cfg.beta == 0.0 {
            // Behaviour cloning reads no value.
            vec![0.0; batch.len()]
        } else {
            let final_values = tch::no_grad(|| {
                to_host(
                    &l.module()
                        .value(&l.obs_tensor(&batch.final_obs, batch.obs_dim)),
                )
            });
            (0..batch.len())
                .map(|t| {
                    let bootstrap = final_values[batch.episode[t] as usize];
                    batch.returns[t] + batch.bootstrap_discounts[t] * bootstrap
                })
                .collect()
        };
        let value_targets = l.tensor(&value_targets, 1).view(-1);
        let coefficients = MarwilCoefficients {
            beta: cfg.beta,
            vf_coeff: cfg.vf_coeff,
            sqd_adv_norm: params.sqd_adv_norm,
        };
        let plan = MinibatchPlan {
            num_epochs: 1,
            minibatch_size: cfg.train_batch_size,
            shuffle_seed: params.shuffle_seed,
        };
        let sgd = minibatch_sgd(&mut self.learner, batch.len(), plan, |learner, mb| {
            let minibatch = Minibatch {
                actions: mb.select(&actions),
                value_targets: mb.select(&value_targets),
            };
            let (dist, values) = learner.module().forward(&mb.select(&obs));
            let loss = marwil_loss(&dist, &values, &minibatch, coefficients);
            (
                loss.total,
                [
                    loss.policy_loss,
                    loss.vf_loss,
                    loss.entropy,
                    loss.mean_sqd_advantage,
                ],
            )
        });
        let sgd = match sgd {
            Ok(means) => means,
            Err(stopped) => return stopped,
        };
        let [policy_loss, vf_loss, entropy, mean_sqd_advantage] = sgd.terms;
        let mut metrics = Metrics::from([
            (metrics::TOTAL_LOSS.into(), sgd.total_loss),
            (metrics::POLICY_LOSS.into(), policy_loss),
            (metrics::ENTROPY.into(), entropy),
            (metrics::GRADIENTS_GLOBAL_NORM.into(), sgd.grad_norm),
            (metrics::LEARNING_RATE.into(), cfg.lr),
        ]);
        if cfg.beta != 0.0 {
            metrics.extend([
                (metrics::VF_LOSS.into(), vf_loss),
                (metrics::MEAN_SQD_ADVANTAGE.into(), mean_sqd_advantage),
            ]);
        }
        UpdateOutcome::Trained(Trained {
            metrics,
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
