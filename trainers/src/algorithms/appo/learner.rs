//! The APPO Learner: the actor-critic in a [`Learner`] and a target network
//! beside it. An update computes V-trace over the batch as IMPALA's Learner
//! does ([`VTraceBatch`]), with importance weights π_target/μ from the
//! target network's policy, then `num_epochs` passes of minibatches through
//! [`appo_loss`]; the target network follows when the driver says so.
//!
//! Checkpoints hold the online network and Adam's state; a restored Learner
//! starts its target network as a copy of the online one.

use oxray_rl::learner::{Learner, LearnerConfig, LearnerState};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics;
use oxray_rl::minibatch_sgd::minibatch_sgd;
use oxray_rl::rl_module::ActorCritic;
use oxray_rl::target_network::TargetNetwork;
use oxray_rl::{Error, SampleBatch};
use serde::{Deserialize, Serialize};

use super::config::{AppoConfig, AppoKeys};
use super::loss::{appo_loss, Minibatch};
use crate::algorithms::impala::{ImpalaConfig, VTraceBatch};

/// The `training:` section travels to remote Learners in its two parts:
/// [`AppoConfig`] flattens them into one YAML section, a layout only
/// self-describing formats can read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppoLearnerConfig {
    pub learner: LearnerConfig,
    pub impala: ImpalaConfig,
    pub appo: AppoKeys,
}

/// What the driver sends with each batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppoUpdateParams {
    pub kl_coeff: f64,
    /// Seeds this update's minibatch shuffling.
    pub shuffle_seed: u64,
    /// Move the target network towards the online one after this update.
    pub update_target: bool,
}

pub struct AppoLearner {
    learner: Learner<ActorCritic>,
    target: TargetNetwork<ActorCritic>,
    training: AppoConfig,
}

oxray_rl::learner_actor!(AppoLearner);

impl AlgorithmLearner for AppoLearner {
    type Config = AppoLearnerConfig;
    type Batch = SampleBatch;
    type Params = AppoUpdateParams;
    const ALGORITHM: &'static str = "APPO";

    fn build(config: AppoLearnerConfig) -> Self {
        let learner = Learner::<ActorCritic>::new(&config.learner);
        let target = TargetNetwork::of(&learner);
        AppoLearner {
            learner,
            target,
            training: AppoConfig {
                impala: config.impala,
                appo: config.appo,
            },
        }
    }

    /// V-trace over `batch` against the target network's policy, then
    /// `num_epochs` epochs of minibatch steps.
    fn learn(&mut self, batch: SampleBatch, params: AppoUpdateParams) -> UpdateOutcome {
        let cfg = &self.training;
        let target = &self.target;
        let v = VTraceBatch::new(&self.learner, &batch, &cfg.impala, |obs| {
            target.distribution(obs)
        });
        let plan = cfg.impala.minibatch_plan(batch.len(), params.shuffle_seed);
        let sgd = minibatch_sgd(&mut self.learner, batch.len(), plan, |learner, mb| {
            let minibatch = Minibatch {
                actions: mb.select(&v.actions),
                behaviour_logp: mb.select(&v.behaviour_logp),
                target_logp: mb.select(&v.target_logp),
                target_dist: v.target_dist.select(&mb.own(mb.index)),
                pg_advantages: mb.select(&v.pg_advantages),
                value_targets: mb.select(&v.value_targets),
            };
            let (dist, values) = learner.module().forward(&mb.select(&v.obs));
            let loss = appo_loss(&dist, &values, &minibatch, cfg, params.kl_coeff);
            (
                loss.total,
                [loss.policy_loss, loss.vf_loss, loss.entropy, loss.mean_kl],
            )
        });
        let sgd = match sgd {
            Ok(means) => means,
            Err(stopped) => return stopped,
        };
        if params.update_target {
            self.target.follow(&self.learner, cfg.appo.tau);
        }
        let mut result = v.metrics(&sgd, cfg.impala.lr);
        result.insert(metrics::MEAN_KL_LOSS.into(), sgd.terms[3]);
        result.insert(metrics::CURR_KL_COEFF.into(), params.kl_coeff);
        UpdateOutcome::Trained(Trained {
            metrics: result,
            histograms: v.histograms(),
            td_errors: Vec::new(),
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
