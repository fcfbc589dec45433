//! The APPO Learner: the actor-critic in a [`Learner`] and a target network
//! beside it. An update computes V-trace over the batch (importance weights
//! π_target/μ from the target network's policy and the behaviour policy the
//! EnvRunners recorded; truncated episodes bootstrapped from the value of the
//! state they were cut off in), then `num_epochs` passes of minibatches
//! through [`appo_loss`]; the target network follows when the driver says so.
//!
//! Checkpoints hold the online network and Adam's state; a restored Learner
//! starts its target network as a copy of the online one.

use oxray_rl::gae::ValueInputs;
use oxray_rl::learner::{Learner, LearnerConfig, LearnerState};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, explained_variance, Histograms, Metrics};
use oxray_rl::minibatch_sgd::{minibatch_sgd, MinibatchPlan};
use oxray_rl::target_network::TargetNetwork;
use oxray_rl::rl_module::ActorCritic;
use oxray_rl::vtrace::{compute_vtrace, VTraceParams};
use oxray_rl::{to_host, Error, ObsBuffer, SampleBatch};
use serde::{Deserialize, Serialize};

use super::config::AppoConfig;
use super::loss::{appo_loss, Minibatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppoLearnerConfig {
    pub learner: LearnerConfig,
    pub training: AppoConfig,
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
            training: config.training,
        }
    }

    /// V-trace over `batch`, then `num_epochs` epochs of minibatch steps.
    fn learn(&mut self, batch: SampleBatch, params: AppoUpdateParams) -> UpdateOutcome {
        let cfg = &self.training;
        let l = &self.learner;
        let obs = l.obs_tensor(&batch.obs, batch.obs_dim);
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let behaviour_logp = l.tensor(&batch.action_logp, 1).view(-1);

        // One forward without gradients: π_target for the importance weights
        // and the KL term, V(s) for V-trace (plus the bootstrap and
        // truncation observations).
        let (target_dist, target_logp, values) = tch::no_grad(|| {
            let target_dist = self.target.distribution(&obs);
            let target_logp = target_dist.log_prob(&actions);
            (target_dist, target_logp, to_host(&l.module().value(&obs)))
        });
        let value_of = |o: &ObsBuffer| {
            tch::no_grad(|| to_host(&l.module().value(&l.obs_tensor(o, batch.obs_dim))))
        };
        let inputs = ValueInputs::of(&batch, values, value_of, cfg.gamma as f32);
        let log_rhos = to_host(&(&target_logp - &behaviour_logp));
        let vtrace = compute_vtrace(
            &log_rhos,
            &inputs.rewards,
            &inputs.values,
            &inputs.episode_ends,
            &inputs.bootstrap_values,
            batch.fragment_len,
            VTraceParams {
                gamma: cfg.gamma as f32,
                clip_rho: cfg.vtrace_clip_rho_threshold as f32,
                clip_pg_rho: cfg.vtrace_clip_pg_rho_threshold as f32,
            },
        );
        let pg_advantages = l.tensor(&vtrace.pg_advantages, 1).view(-1);
        let value_targets = l.tensor(&vtrace.value_targets, 1).view(-1);

        let plan = MinibatchPlan {
            num_epochs: cfg.num_epochs,
            minibatch_size: cfg.minibatch_size.unwrap_or(batch.len()),
            shuffle_seed: params.shuffle_seed,
        };
        let sgd = minibatch_sgd(&mut self.learner, batch.len(), plan, |learner, mb| {
            let minibatch = Minibatch {
                actions: mb.select(&actions),
                behaviour_logp: mb.select(&behaviour_logp),
                target_logp: mb.select(&target_logp),
                target_dist: target_dist.select(&mb.own(mb.index)),
                pg_advantages: mb.select(&pg_advantages),
                value_targets: mb.select(&value_targets),
            };
            let (dist, values) = learner.module().forward(&mb.select(&obs));
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
            self.target.follow(&self.learner, cfg.tau);
        }
        let [policy_loss, vf_loss, entropy, mean_kl] = sgd.terms;
        let mean_rho = log_rhos.iter().map(|&r| f64::from(r.exp())).sum::<f64>()
            / log_rhos.len().max(1) as f64;
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
                (metrics::TOTAL_LOSS.into(), sgd.total_loss),
                (metrics::POLICY_LOSS.into(), policy_loss),
                (metrics::VF_LOSS.into(), vf_loss),
                (metrics::ENTROPY.into(), entropy),
                (metrics::GRADIENTS_GLOBAL_NORM.into(), sgd.grad_norm),
                (metrics::MEAN_KL_LOSS.into(), mean_kl),
                (
                    metrics::VF_EXPLAINED_VAR.into(),
                    explained_variance(&inputs.values, &vtrace.value_targets),
                ),
                (metrics::CURR_KL_COEFF.into(), params.kl_coeff),
                (metrics::LEARNING_RATE.into(), cfg.lr),
                (metrics::MEAN_IMPORTANCE_RATIO.into(), mean_rho),
            ]),
            histograms: Histograms::from([(
                metrics::ADVANTAGES.into(),
                vtrace.pg_advantages,
            )]),
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
