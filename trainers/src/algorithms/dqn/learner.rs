//! The DQN Learner: the online Q-network in a [`Learner`] (Adam, clipping)
//! and a target network beside it. Each update is one gradient step on one
//! replayed minibatch through [`dqn_loss`], reporting the TD errors for the
//! replay priorities; the target network follows when the driver says so.
//!
//! With `num_atoms` above 1 the network is C51's and the loss
//! [`c51_loss`]; with `noisy` its head is NoisyNets', and each step draws
//! new noise for the online and (independently) the target network.
//!
//! A Learner on the CPU, alone, with a small MLP Q-network (plain, dueling,
//! noisy or C51's) takes its steps on the host ([`host_dqn_loss`],
//! [`host_c51_loss`], [`Learner::host_step`]): the same loss
//! and Adam step without libtorch's per-op dispatch, which at DQN's
//! minibatch sizes costs as much as the arithmetic. The libtorch module
//! stays the model of record (the host step writes into its parameters);
//! the target network's weights are read once after each time it follows.
//!
//! Checkpoints hold the online network and Adam's state; a restored Learner
//! starts its target network as a copy of the online one.

use oxray_rl::learner::{Learner, LearnerConfig, LearnerState, Step};
use oxray_rl::learner_group::{AlgorithmLearner, LearnerCore, Trained, UpdateOutcome};
use oxray_rl::metrics::{self, Metrics};
use oxray_rl::replay_buffer::ReplayBatch;
use oxray_rl::target_network::TargetNetwork;
use oxray_rl::rl_module::{HostQNetwork, QNetwork, RLModule};
use oxray_rl::{to_host, Error};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::DqnConfig;
use crate::algorithms::off_policy::{OffPolicyLearner, OffPolicySettings, TargetUpdate};
use super::host_distributional_loss::host_c51_loss;
use super::host_loss::{host_dqn_loss, HostDqnLoss, NetworkParams};
use super::distributional_loss::c51_loss;
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
    /// The Q-network's host training pass, for a small MLP.
    host: Option<HostQNetwork>,
    /// The target network's flat weights for the host pass, read when first
    /// needed after the target network last changed.
    target_weights: Option<Vec<f32>>,
    /// Draws the noisy layers' noise, seeded from the run's seed.
    noise_rng: ChaCha8Rng,
}

/// What one gradient step gave, however it was computed.
struct StepResult {
    step: Result<Step, Error>,
    td_errors: Vec<f32>,
    q_mean: f64,
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
        let host = HostQNetwork::of(learner.module());
        if host.is_some() {
            learner.keep_threads_for_host_steps();
        }
        DqnLearner {
            host,
            learner,
            target,
            training: config.training,
            target_weights: None,
            noise_rng: ChaCha8Rng::seed_from_u64(config.learner.seed),
        }
    }

    fn learn(&mut self, batch: ReplayBatch, params: TargetUpdate) -> UpdateOutcome {
        let result = match self.host_step(&batch) {
            Some(result) => result,
            None => self.libtorch_step(&batch),
        };
        let (total, grad_norm) = match result.step {
            Ok(Step::Applied { loss, grad_norm }) => (loss, grad_norm),
            Ok(Step::NonFiniteLoss(total)) => {
                return UpdateOutcome::NonFiniteLoss(format!("loss is {total}"))
            }
            Err(e) => return UpdateOutcome::Failed(format!("gradient step failed: {e}")),
        };
        if params.update_target {
            self.target.follow(&self.learner, self.training.tau);
            self.target_weights = None;
        }
        let td_errors = result.td_errors;
        let td_error_mean =
            td_errors.iter().map(|&d| f64::from(d.abs())).sum::<f64>() / td_errors.len() as f64;
        UpdateOutcome::Trained(Trained {
            metrics: Metrics::from([
                (metrics::QF_LOSS.into(), total),
                (metrics::TOTAL_LOSS.into(), total),
                (metrics::QF_MEAN.into(), result.q_mean),
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
        self.target_weights = None;
        Ok(())
    }
}

impl DqnLearner {
    /// The step on the host, if this Learner takes it there.
    fn host_step(&mut self, batch: &ReplayBatch) -> Option<StepResult> {
        let network = self.host.as_ref().filter(|_| self.learner.trains_on_host())?;
        // New noise for each network, in the order the libtorch step draws.
        let online_noise = network.draw_noise(&mut self.noise_rng);
        let target_noise = network.draw_noise(&mut self.noise_rng);
        let support = self.learner.module().support().map(|(support, _)| support.clone());
        let (target, target_weights) = (&self.target, &mut self.target_weights);
        let (double_q, loss_fn) = (self.training.double_q, self.training.td_error_loss_fn);
        let mut loss = None;
        let step = self.learner.host_step(|theta, grad, threads| {
            let target_theta = target_weights.get_or_insert_with(|| target.flat_weights());
            let online = NetworkParams {
                theta,
                noise: online_noise.as_ref(),
            };
            let target = NetworkParams {
                theta: target_theta,
                noise: target_noise.as_ref(),
            };
            // Per row: the online network forward and backward, the target
            // network forward.
            let work_per_row = 4 * grad.len();
            let shares = threads.mean_over_rows(batch.len(), work_per_row, grad, |rows, grad| {
                let batch = batch.rows(rows);
                match &support {
                    Some(support) => {
                        host_c51_loss(network, (online, target), &batch, support, double_q, grad)
                    }
                    None => host_dqn_loss(network, online, target, &batch, double_q, loss_fn, grad),
                }
            });
            let computed = HostDqnLoss::mean_of(shares);
            let total = computed.total;
            loss = Some(computed);
            total
        })?;
        let loss = loss.expect("the step computed the loss");
        Some(StepResult {
            step: Ok(step),
            td_errors: loss.td_errors,
            q_mean: loss.q_mean,
        })
    }

    /// The step through libtorch's autograd.
    fn libtorch_step(&mut self, batch: &ReplayBatch) -> StepResult {
        let l = &self.learner;
        if l.module().is_noisy() {
            l.module().resample_noise(&mut self.noise_rng);
            self.target.resample_noise(&mut self.noise_rng);
        }
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
        let double_q = self.training.double_q;
        let next_online_q = tch::no_grad(|| {
            if double_q {
                l.module().q_values(&mb.next_obs)
            } else {
                Tensor::zeros([0], (Kind::Float, l.device()))
            }
        });
        let loss = match l.module().support() {
            None => {
                let q_values = l.module().q_values(&mb.obs);
                let next_target_q = tch::no_grad(|| self.target.q_values(&mb.next_obs));
                let loss_fn = self.training.td_error_loss_fn;
                dqn_loss(&q_values, &next_online_q, &next_target_q, &mb, double_q, loss_fn)
            }
            Some((support, atoms)) => {
                let logits = l.module().atom_logits(&mb.obs);
                let next_target_logits = tch::no_grad(|| self.target.atom_logits(&mb.next_obs));
                c51_loss(
                    &logits,
                    &next_online_q,
                    &next_target_logits,
                    support,
                    atoms,
                    &mb,
                    double_q,
                )
            }
        };
        StepResult {
            td_errors: to_host(&loss.td_errors),
            q_mean: loss.q_mean.double_value(&[]),
            step: self.learner.apply_loss(&loss.total),
        }
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

    /// ε, unless the noisy layers explore instead.
    fn exploration_metrics(training: &DqnConfig, env_steps: u64) -> Metrics {
        if training.noisy {
            return Metrics::new();
        }
        Metrics::from([(
            metrics::CURR_EPSILON.to_string(),
            training.epsilon.value_at(env_steps),
        )])
    }
}
