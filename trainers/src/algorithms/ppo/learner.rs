//! The PPO Learner: GAE(γ, λ) over the batch (truncated episodes bootstrapped
//! from the value of the state they were cut off in), then `num_epochs`
//! passes of shuffled minibatches through [`ppo_loss`]. With several Learners
//! each takes its slice of every minibatch and the gradients are averaged
//! between them.
//!
//! A Learner on the CPU, alone, with a small MLP module takes its minibatch
//! steps on the host ([`host_ppo_loss_split`], `host_minibatch_sgd`): the
//! same minibatches, loss and Adam steps without libtorch's per-op dispatch,
//! which dominates at PPO's minibatch sizes, each minibatch's rows split
//! over the Learner's CPUs once its advantages are normalised. The libtorch
//! module stays the model of record: GAE's values, the reported KL and
//! everything after the update read it.

use oxray_rl::gae::{compute_gae, ValueInputs};
use oxray_rl::learner::{Learner, LearnerConfig};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, explained_variance, Histograms, Metrics};
use oxray_rl::minibatch_sgd::{host_minibatch_sgd, minibatch_sgd, MinibatchPlan};
use oxray_rl::rl_module::{ActorCritic, HostActorCritic};
use oxray_rl::{to_host, ObsBuffer, SampleBatch};
use serde::{Deserialize, Serialize};
use tch::Kind;

use super::config::PpoConfig;
use super::host_loss::{host_ppo_loss_split, HostBatch, HostPpoPolicy};
use super::loss::{normalize_advantages, ppo_loss, Minibatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PpoLearnerConfig {
    pub learner: LearnerConfig,
    pub training: PpoConfig,
}

/// What the driver sends with each batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateParams {
    pub lr: f64,
    pub kl_coeff: f64,
    /// Seeds this update's minibatch shuffling, so no RNG state needs saving.
    pub shuffle_seed: u64,
}

/// A [`Learner`] that knows PPO's update.
pub struct PpoLearner {
    learner: Learner<ActorCritic>,
    training: PpoConfig,
}

oxray_rl::learner_actor!(PpoLearner);

impl AlgorithmLearner for PpoLearner {
    type Config = PpoLearnerConfig;
    type Batch = SampleBatch;
    type Params = UpdateParams;
    const ALGORITHM: &'static str = "PPO";

    fn build(config: PpoLearnerConfig) -> Self {
        let learner = Learner::new(&config.learner);
        learner.keep_threads_for_host_steps();
        PpoLearner {
            learner,
            training: config.training,
        }
    }

    /// GAE over `batch`, then `num_epochs` epochs of minibatch steps.
    fn learn(&mut self, batch: SampleBatch, params: UpdateParams) -> UpdateOutcome {
        let cfg = &self.training;
        self.learner.set_lr(params.lr);
        let l = &self.learner;
        let obs = l.obs_tensor(&batch.obs, batch.obs_dim);
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let old_logp = l.tensor(&batch.action_logp, 1).view(-1);

        // One forward without gradients: V(s) for GAE (plus the bootstrap and
        // truncation observations: a truncated episode continues in
        // principle, so its last reward gets the discounted value of the
        // state it was cut off in) and π_θold for the KL term.
        let (old_dist, values) = tch::no_grad(|| l.module().forward(&obs));
        let value_of = |o: &ObsBuffer| {
            tch::no_grad(|| to_host(&l.module().value(&l.obs_tensor(o, batch.obs_dim))))
        };
        let inputs = ValueInputs::of(&batch, to_host(&values), value_of, cfg.gamma as f32);
        let gae = compute_gae(
            &inputs.rewards,
            &inputs.values,
            &inputs.episode_ends,
            &inputs.bootstrap_values,
            batch.fragment_len,
            cfg.gamma as f32,
            cfg.lambda as f32,
        );
        let advantages = l.tensor(&gae.advantages, 1).view(-1);
        let value_targets = l.tensor(&gae.value_targets, 1).view(-1);

        let plan = MinibatchPlan {
            num_epochs: cfg.num_epochs,
            minibatch_size: cfg.minibatch_size,
            shuffle_seed: params.shuffle_seed,
        };
        let host = match (&batch.obs, HostActorCritic::of(l.module())) {
            (ObsBuffer::F32(obs), Some(module)) if l.trains_on_host() => {
                Some((obs.as_slice(), module))
            }
            _ => None,
        };
        let sgd = match host {
            Some((host_obs, module)) => {
                // π_θold on the host, from the parameters before any step.
                let old_dist = cfg.use_kl_loss.then(|| {
                    module
                        .forward(&l.flat_weights(), host_obs, batch.len())
                        .distribution
                });
                let columns = HostBatch {
                    obs: host_obs,
                    obs_dim: batch.obs_dim,
                    actions: &batch.actions,
                    action_dim: batch.action_dim,
                    old_logp: &batch.action_logp,
                    old_dist: old_dist.as_ref(),
                    advantages: &gae.advantages,
                    value_targets: &gae.value_targets,
                };
                host_minibatch_sgd(
                    &mut self.learner,
                    batch.len(),
                    plan,
                    |theta, rows, grad, threads| {
                        let minibatch = columns.minibatch(rows, cfg.normalize_advantages);
                        let policy = HostPpoPolicy {
                            module: &module,
                            params: theta,
                            config: cfg,
                            kl_coeff: params.kl_coeff,
                        };
                        let loss = host_ppo_loss_split(policy, &minibatch, grad, threads);
                        (loss.total, [loss.policy_loss, loss.vf_loss, loss.entropy])
                    },
                )
            }
            None => minibatch_sgd(&mut self.learner, batch.len(), plan, |learner, mb| {
                // Normalised over the whole minibatch, even when several
                // Learners split it.
                let mut mb_advantages = advantages.index_select(0, mb.index);
                if cfg.normalize_advantages {
                    mb_advantages = normalize_advantages(&mb_advantages);
                }
                let minibatch = Minibatch {
                    obs: mb.select(&obs),
                    actions: mb.select(&actions),
                    old_logp: mb.select(&old_logp),
                    old_dist: cfg
                        .use_kl_loss
                        .then(|| old_dist.select(&mb.own(mb.index))),
                    advantages: mb.own(&mb_advantages),
                    value_targets: mb.select(&value_targets),
                };
                let (dist, values) = learner.module().forward(&minibatch.obs);
                let loss = ppo_loss(&dist, &values, &minibatch, cfg, params.kl_coeff);
                (loss.total, [loss.policy_loss, loss.vf_loss, loss.entropy])
            }),
        };
        let sgd = match sgd {
            Ok(means) => means,
            Err(stopped) => return stopped,
        };
        let mean_kl = tch::no_grad(|| {
            let new_dist = self.learner.module().distribution(&obs);
            old_dist.kl(&new_dist).mean(Kind::Float).double_value(&[])
        });
        let explained_var = explained_variance(&inputs.values, &gae.value_targets);
        let [policy_loss, vf_loss, entropy] = sgd.terms;
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
                (metrics::TOTAL_LOSS.into(), sgd.total_loss),
                (metrics::POLICY_LOSS.into(), policy_loss),
                (metrics::VF_LOSS.into(), vf_loss),
                (metrics::ENTROPY.into(), entropy),
                (metrics::GRADIENTS_GLOBAL_NORM.into(), sgd.grad_norm),
                (metrics::MEAN_KL_LOSS.into(), mean_kl),
                (metrics::VF_EXPLAINED_VAR.into(), explained_var),
                (metrics::CURR_KL_COEFF.into(), params.kl_coeff),
                (metrics::LEARNING_RATE.into(), params.lr),
            ]),
            histograms: Histograms::from([(metrics::ADVANTAGES.into(), gae.advantages)]),
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
