//! The IMPALA Learner: the actor-critic in a [`Learner`]. An update computes
//! V-trace over the batch ([`VTraceBatch`]: importance weights π_θ/μ from
//! the current policy and the behaviour policy the EnvRunners recorded,
//! truncated episodes bootstrapped from the value of the state they were cut
//! off in), then `num_epochs` passes of minibatches through [`impala_loss`].
//!
//! [`VTraceBatch`] is shared with APPO, whose importance weights come from
//! its target network's policy instead of the current one. V-trace is
//! computed once per update, from the weights before it; RLlib recomputes it
//! for every minibatch, which is the same for its default of one pass over
//! the whole batch.

use oxray_rl::distributions::ActionDistribution;
use oxray_rl::gae::ValueInputs;
use oxray_rl::learner::{Learner, LearnerConfig};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, explained_variance, Histograms, Metrics};
use oxray_rl::minibatch_sgd::{minibatch_sgd, MinibatchPlan, SgdMeans};
use oxray_rl::rl_module::ActorCritic;
use oxray_rl::vtrace::{compute_vtrace, VTrace, VTraceParams};
use oxray_rl::{to_host, ObsBuffer, SampleBatch};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::config::ImpalaConfig;
use super::loss::{impala_loss, Minibatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImpalaLearnerConfig {
    pub learner: LearnerConfig,
    pub training: ImpalaConfig,
}

/// What the driver sends with each batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImpalaUpdateParams {
    /// Seeds this update's minibatch shuffling.
    pub shuffle_seed: u64,
}

pub struct ImpalaLearner {
    learner: Learner<ActorCritic>,
    training: ImpalaConfig,
}

oxray_rl::learner_actor!(ImpalaLearner);

impl AlgorithmLearner for ImpalaLearner {
    type Config = ImpalaLearnerConfig;
    type Batch = SampleBatch;
    type Params = ImpalaUpdateParams;
    const ALGORITHM: &'static str = "IMPALA";

    fn build(config: ImpalaLearnerConfig) -> Self {
        ImpalaLearner {
            learner: Learner::<ActorCritic>::new(&config.learner),
            training: config.training,
        }
    }

    /// V-trace over `batch` against the current policy, then `num_epochs`
    /// epochs of minibatch steps.
    fn learn(&mut self, batch: SampleBatch, params: ImpalaUpdateParams) -> UpdateOutcome {
        let cfg = &self.training;
        let l = &self.learner;
        let v = VTraceBatch::new(l, &batch, cfg, |obs| l.module().distribution(obs));
        let plan = cfg.minibatch_plan(batch.len(), params.shuffle_seed);
        let sgd = minibatch_sgd(&mut self.learner, batch.len(), plan, |learner, mb| {
            let minibatch = Minibatch {
                actions: mb.select(&v.actions),
                pg_advantages: mb.select(&v.pg_advantages),
                value_targets: mb.select(&v.value_targets),
            };
            let (dist, values) = learner.module().forward(&mb.select(&v.obs));
            let loss = impala_loss(&dist, &values, &minibatch, cfg);
            (loss.total, [loss.policy_loss, loss.vf_loss, loss.entropy])
        });
        match sgd {
            Ok(sgd) => UpdateOutcome::Trained(Trained {
                metrics: v.metrics(&sgd, cfg.lr),
                histograms: v.histograms(),
                td_errors: Vec::new(),
            }),
            Err(stopped) => stopped,
        }
    }

    fn learner(&self) -> &dyn LearnerCore {
        &self.learner
    }

    fn learner_mut(&mut self) -> &mut dyn LearnerCore {
        &mut self.learner
    }
}

impl ImpalaConfig {
    /// `num_epochs` passes over a `len`-row batch in minibatches of
    /// `minibatch_size` rows (the whole batch when absent).
    pub fn minibatch_plan(&self, len: usize, shuffle_seed: u64) -> MinibatchPlan {
        MinibatchPlan {
            num_epochs: self.num_epochs,
            minibatch_size: self.minibatch_size.unwrap_or(len),
            shuffle_seed,
        }
    }
}

/// A batch on the Learner's device with V-trace computed over it, correcting
/// from the behaviour policy μ the EnvRunners sampled with towards a target
/// policy π (IMPALA's current policy, APPO's target network's).
pub struct VTraceBatch {
    pub obs: Tensor,
    pub actions: Tensor,
    /// log μ(a_t|s_t), as recorded while sampling.
    pub behaviour_logp: Tensor,
    /// π(·|s_t) before this update.
    pub target_dist: ActionDistribution,
    /// log π(a_t|s_t) before this update.
    pub target_logp: Tensor,
    /// V-trace's policy-gradient advantages A_t.
    pub pg_advantages: Tensor,
    /// V-trace's value targets v_t.
    pub value_targets: Tensor,
    /// V(s_t) before this update, on the host.
    values: Vec<f32>,
    /// log π/μ per step, on the host.
    log_rhos: Vec<f32>,
    vtrace: VTrace,
}

impl VTraceBatch {
    /// `batch` on `learner`'s device, V-trace over it with `target_policy`
    /// (observations to π) and the learner's value function; no gradients.
    pub fn new(
        learner: &Learner<ActorCritic>,
        batch: &SampleBatch,
        cfg: &ImpalaConfig,
        target_policy: impl FnOnce(&Tensor) -> ActionDistribution,
    ) -> Self {
        let l = learner;
        let obs = l.obs_tensor(&batch.obs, batch.obs_dim);
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let behaviour_logp = l.tensor(&batch.action_logp, 1).view(-1);
        // One pass without gradients: π for the importance weights, V(s)
        // for V-trace (plus the bootstrap and truncation observations).
        let (target_dist, target_logp, values) = tch::no_grad(|| {
            let target_dist = target_policy(&obs);
            let target_logp = target_dist.log_prob(&actions);
            (target_dist, target_logp, to_host(&l.module().value(&obs)))
        });
        let value_of = |o: &ObsBuffer| {
            tch::no_grad(|| to_host(&l.module().value(&l.obs_tensor(o, batch.obs_dim))))
        };
        let inputs = ValueInputs::of(batch, values, value_of, cfg.gamma as f32);
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
        VTraceBatch {
            pg_advantages: l.tensor(&vtrace.pg_advantages, 1).view(-1),
            value_targets: l.tensor(&vtrace.value_targets, 1).view(-1),
            obs,
            actions,
            behaviour_logp,
            target_dist,
            target_logp,
            values: inputs.values,
            log_rhos,
            vtrace,
        }
    }

    /// What every V-trace Learner reports of an update, from its minibatch
    /// means (whose first three terms are the policy loss, the value loss
    /// and the entropy) and its learning rate.
    pub fn metrics<const N: usize>(&self, sgd: &SgdMeans<N>, lr: f64) -> Metrics {
        let mean_rho = self.log_rhos.iter().map(|&r| f64::from(r.exp())).sum::<f64>()
            / self.log_rhos.len().max(1) as f64;
        Metrics::from([
            (metrics::TOTAL_LOSS.into(), sgd.total_loss),
            (metrics::POLICY_LOSS.into(), sgd.terms[0]),
            (metrics::VF_LOSS.into(), sgd.terms[1]),
            (metrics::ENTROPY.into(), sgd.terms[2]),
            (metrics::GRADIENTS_GLOBAL_NORM.into(), sgd.grad_norm),
            (
                metrics::VF_EXPLAINED_VAR.into(),
                explained_variance(&self.values, &self.vtrace.value_targets),
            ),
            (metrics::LEARNING_RATE.into(), lr),
            (metrics::MEAN_IMPORTANCE_RATIO.into(), mean_rho),
        ])
    }

    /// The advantages' histogram.
    pub fn histograms(self) -> Histograms {
        Histograms::from([(metrics::ADVANTAGES.into(), self.vtrace.pg_advantages)])
    }
}
